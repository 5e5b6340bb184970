"""Head refit: the two linear heads fitted again on clean features of the finished encoder.

During training the heads only ever see what the audio encoder gives in training mode: features
of augmented windows (gain, shift, noise, mixtures, mixup), normalised by each batch's own
BatchNorm statistics. Search and evaluation see something else: clean windows through the
encoder in evaluation mode. On the default recipe that gap cost a lot. The previous default
model's encoder features told the spoken digits apart (a one-off linear probe got 0.83 of val
clips right), but through its heads "eight" was never chosen, not even on its own training
clips; refitted, held-out mAP@10 went from 0.443 to 0.658 (MODEL_CARD.md).

So after the last epoch the best model's encoder is frozen, every training window is embedded
once, cleanly, as evaluation does it, and the heads are fitted again on those features. It uses
the same losses (the main one on in-batch captions, plus the class-caption loss) and the same
recipe weights and caption draws. The encoder is not touched. The refit is kept only if
validation says it is better (`refit_best`).

Mixtures and augmented views are not seen here: they would need the encoder to run on each step,
and the point is a fit to the features search uses. A refit of a few thousand steps takes about
a minute on 2 CPU cores, because each step is two small matrix products.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from earshot.data.cache import FeatureStore
from earshot.train.batches import BatchMaker, holds
from earshot.train.losses import class_caption_loss

if TYPE_CHECKING:
    from earshot.train.loop import Trainer


def refit_best(trainer: Trainer) -> dict[str, Any]:
    """Fit the heads of the trainer's best epoch again on clean encoder features; the model
    folder takes the result only if validation improves. Returns the entry it logs.

    Always starts from the best epoch's weights as training left them, so refitting a finished
    run again (`--resume` with other refit settings) does not stack refits.
    """
    state, data = trainer.state, trainer.data
    cfg, model = state.cfg, state.model
    model.load_state_dict(trainer.best_weights())
    # Scored again rather than taken from training: the val split may have changed since.
    before = trainer.validate()
    start = time.perf_counter()
    features = clean_features(
        model.audio_encoder,
        data.train_store,
        state.device,
        cfg.eval_batch_size,
        bf16=cfg.precision == "bf16",
    )
    losses = refit_heads(
        model.audio_head,
        trainer.project_rows,
        list(model.text_head.parameters()),
        features,
        data.batches,
        data.train_clips,
        data.draw_p,
        trainer.pair_loss,
        steps=cfg.refit_steps,
        batch_size=cfg.batch_size,
        lr=cfg.refit_lr or cfg.lr,
        weight_decay=cfg.weight_decay,
        class_loss=cfg.class_loss,
        class_temperature=cfg.class_temperature,
        generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + 999_983),
    )
    report = trainer.validate()
    score = report["text_to_audio"]["mAP@10"]["value"]
    entry = {
        "refit_steps": cfg.refit_steps,
        "of_epoch": state.best_epoch,
        "loss": float(np.mean(losses[-100:])),
        "refit_s": round(time.perf_counter() - start, 2),
        "val_mAP@10": score,
        "val_R@1": report["text_to_audio"]["R@1"]["value"],
        "val_R@10": report["text_to_audio"]["R@10"]["value"],
        "before": before["text_to_audio"]["mAP@10"]["value"],
    }
    entry["kept"] = score > entry["before"]
    if entry["kept"]:
        trainer.save_model({**report, "refit": entry}, state.best_epoch)
    else:  # the folder holds the best epoch as trained (not an earlier run's refit)
        model.load_state_dict(trainer.best_weights())
        trainer.save_model(before, state.best_epoch)
    trainer.log(entry)
    print(
        f"head refit ({cfg.refit_steps} steps) of epoch {state.best_epoch}: val mAP@10 "
        f"{entry['before']:.4f} -> {score:.4f}, {'kept' if entry['kept'] else 'not kept'}",
        file=sys.stderr,
    )
    return entry


@torch.no_grad()
def clean_features(
    encoder: nn.Module,
    store: FeatureStore,
    device: torch.device,
    batch_size: int = 64,
    bf16: bool = False,
) -> torch.Tensor:
    """(n_windows, embed_dim) encoder outputs of every cached window, in evaluation mode."""
    was_training = encoder.training
    encoder.eval()
    out = []
    try:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            for i in range(0, len(store), batch_size):
                rows = np.arange(i, min(i + batch_size, len(store)))
                out.append(encoder(store.logmel(rows).to(device)).float())
    finally:
        encoder.train(was_training)
    return torch.cat(out)


def refit_heads(
    audio_head: nn.Linear,
    project_text: Callable[[np.ndarray], torch.Tensor],
    text_params: list[nn.Parameter],
    features: torch.Tensor,
    batches: BatchMaker,
    clips: np.ndarray,
    draw_p: torch.Tensor | None,
    main_loss: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    steps: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    class_loss: float,
    class_temperature: float,
    generator: torch.Generator,
) -> list[float]:
    """Fit `audio_head` and the text head (`text_params`, used by `project_text` on caption
    bank rows) on fixed window `features`; returns the loss of every step.

    Clips are drawn as training draws them (by recipe weight when `draw_p` is given), one random
    window and one random caption each, from `generator` only.
    """
    params = [*audio_head.parameters(), *text_params]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, steps))))
    )
    windows = batches.store.clip_windows

    def randint(n: int) -> int:
        return int(torch.randint(n, (1,), generator=generator))

    losses = []
    for _ in range(steps):
        if draw_p is None:
            pick = clips[torch.randint(len(clips), (batch_size,), generator=generator).numpy()]
        else:
            pick = clips[torch.multinomial(draw_p, batch_size, True, generator=generator).numpy()]
        rows = np.array([windows[c][randint(len(windows[c]))] for c in pick])
        captions = np.array(
            [batches.clip_captions[c][randint(len(batches.clip_captions[c]))] for c in pick]
        )
        tags = batches.clip_mask[pick]
        same = torch.from_numpy(holds(tags, batches.caption_mask[captions]))
        audio = F.normalize(audio_head(features[rows]), dim=-1)
        loss = main_loss(audio, project_text(captions), same.to(audio.device))
        if class_loss > 0 and batches.class_rows:
            class_rows = np.array([r[randint(len(r))] for r in batches.class_rows])
            held = torch.from_numpy(holds(tags, batches.caption_mask[class_rows]))
            loss = loss + class_loss * class_caption_loss(
                audio, project_text(class_rows), held.to(audio.device), class_temperature
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
    return losses
