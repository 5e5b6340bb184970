"""The training loop: caption datasets → a trained model folder, resumable, reproducible.

Each step draws `batch_size` distinct clips, one random cached window and one random caption
of each, and pulls matching audio and text together with the triplet loss (the thesis) or
InfoNCE (the DCASE 2023 baseline). Clips sharing a label count as positives of each other.
After every epoch the validation split is scored exactly as `earshot evaluate` scores it; the
best epoch by text→audio mAP@10 is the model that lands in `out/`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from earshot.config import TextConfig
from earshot.data.cache import TextCache, build_feature_cache
from earshot.data.datasets import load_dataset
from earshot.data.recipe import mixture_captions_for
from earshot.errors import EarshotError
from earshot.eval.evaluate import evaluate_split
from earshot.fsutil import atomic_write_text
from earshot.model.io import load_model, model_id, save_model
from earshot.train import augment as aug
from earshot.train.batches import BatchMaker
from earshot.train.checkpoint import CHECKPOINT, resume, save_checkpoint, write_checkpoint
from earshot.train.config import TrainConfig
from earshot.train.ema import WeightAverage
from earshot.train.losses import (
    LearnableTemperature,
    class_caption_loss,
    info_nce,
    triplet_loss,
)
from earshot.train.optim import build_optimizer
from earshot.train.precise_bn import recompute_batchnorm
from earshot.train.refit import refit_best
from earshot.train.start import initial_model, pick_device
from earshot.train.state import TrainData, TrainState

__all__ = ["CHECKPOINT", "TrainData", "TrainResult", "TrainState", "Trainer", "train"]

METRICS_LOG = "metrics.jsonl"
TEXT_SUBDIR = "text"


@dataclasses.dataclass
class TrainResult:
    out: Path
    best_epoch: int
    best_map10: float
    history: list[dict[str, Any]]
    refit: dict[str, Any] | None = None  # the head refit's log entry, when one ran


class Trainer:
    def __init__(self, cfg: TrainConfig):
        if not cfg.dataset:
            raise EarshotError("no dataset: set `dataset` in the config or pass --dataset")
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.device = pick_device(cfg.device)
        torch.manual_seed(cfg.seed)  # dropout draws from the global generator
        gen = torch.Generator().manual_seed(cfg.seed)
        train_set = load_dataset(cfg.dataset, cfg.train_split, cfg.audio_dir)
        val_set = load_dataset(cfg.dataset, cfg.val_split, cfg.audio_dir)
        # Before the slow caches: a mixture setting without a recipe fails at once.
        mixtures = mixture_captions_for(cfg.dataset) if cfg.mix_prob > 0 else ()
        model = initial_model(cfg, self.device)
        audio = model.config.audio
        cache = Path(cfg.cache_dir)
        train_store = build_feature_cache(train_set, audio, cache, cfg.progress)
        val_store = build_feature_cache(val_set, audio, cache, cfg.progress)
        train_clips = np.array([i for i, w in enumerate(train_store.clip_windows) if len(w)])
        if len(train_clips) < 2:
            raise EarshotError(f"{train_set.summary()}: fewer than 2 decodable clips")
        batches = BatchMaker(
            train_set,
            train_store,
            audio,
            gen,
            mixtures=mixtures,
            mix_prob=cfg.mix_prob,
            gain_db=cfg.gain_db,
            time_shift=cfg.time_shift,
            noise_prob=cfg.noise_prob,
            freq_shift=cfg.freq_shift,
            filter_db=cfg.filter_db,
        )
        if cfg.class_loss > 0 and len(batches.class_rows) < 2:
            raise EarshotError(
                f"class_loss needs labelled clips of at least 2 labels with captions of their "
                f"own; {train_set.summary()} has {len(batches.class_rows)}"
            )
        weights = np.array([train_set.clips[c].weight for c in train_clips])
        draw_p = None if np.all(weights == 1.0) else torch.from_numpy(weights / weights.sum())
        train_text, val_text = self._text_features(model, batches.captions, val_set)
        self.data = TrainData(
            train_set,
            val_set,
            train_store,
            val_store,
            train_clips,
            batches,
            draw_p,
            train_text,
            val_text,
        )
        temperature = LearnableTemperature(cfg.temperature).to(self.device)
        self._set_trainable(model)
        ema = WeightAverage(model, cfg.ema, with_text=not cfg.freeze_text) if cfg.ema > 0 else None
        self.steps_per_epoch = cfg.steps_per_epoch or math.ceil(len(train_clips) / cfg.batch_size)
        optimizer, scheduler = build_optimizer(cfg, model, temperature, self.steps_per_epoch)
        self.state = TrainState(
            cfg, self.out, self.device, model, temperature, optimizer, scheduler, gen, ema
        )

    # -- setup -----------------------------------------------------------------------------
    def _text_features(
        self, model, captions: list[str], val_set
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Sentence embeddings of the caption bank, and of the val captions (frozen text)."""
        if not self.cfg.freeze_text:
            return None, None
        cache = TextCache(Path(self.cfg.cache_dir) / "text-embeddings.sqlite")
        try:
            encoder = model.text_encoder
            bank = cache.embed(encoder, captions)
            val = cache.embed(encoder, [c for c, _ in val_set.captions()])
        finally:
            cache.close()
        return bank, val

    def _set_trainable(self, model) -> None:
        model.audio_encoder.requires_grad_(not self.cfg.freeze_audio)
        if not self.cfg.freeze_text:
            model.text_encoder.model.to(self.device).requires_grad_(True)

    # -- one step --------------------------------------------------------------------------
    def project_rows(self, rows: np.ndarray) -> torch.Tensor:
        """Caption-bank rows → joint-space text vectors (through the trainable head)."""
        if self.data.train_text is not None:
            feats = torch.from_numpy(self.data.train_text[rows]).to(self.device)
            return self.state.model.project_text(feats)
        sentences = [self.data.batches.captions[r] for r in rows]
        return self.state.model.project_text(self._encode_text_with_grad(sentences))

    def _encode_text_with_grad(self, sentences: list[str]) -> torch.Tensor:
        st = self.state.model.text_encoder.model
        features = st.preprocess(sentences)
        features = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in features.items()}
        return st(features)["sentence_embedding"]

    def _randint(self, n: int) -> int:
        return int(torch.randint(n, (1,), generator=self.state.gen))

    def pair_loss(
        self, audio: torch.Tensor, text: torch.Tensor, same: torch.Tensor
    ) -> torch.Tensor:
        """The pair loss of a batch (triplet or InfoNCE, as configured); the refit uses it."""
        if self.cfg.loss == "triplet":
            return triplet_loss(audio, text, self.cfg.margin, self.cfg.triplet_variant, same=same)
        return info_nce(audio, text, self.state.temperature(), same=same)

    def step(self, clips: np.ndarray) -> float:
        draw = self.data.batches.draw(clips)
        logmel, same = draw.logmel.to(self.device), draw.same.to(self.device)
        text = self.project_rows(draw.captions)
        mix: dict[str, Any] = {}

        def augment(x: torch.Tensor) -> torch.Tensor:  # after bn0, as PANNs does
            if self.cfg.spec_augment:
                x = aug.spec_augment(x, self.state.gen)
            if self.cfg.mixup_alpha > 0:
                x, mix["perm"], mix["lam"] = aug.mixup(x, self.state.gen, self.cfg.mixup_alpha)
            return x

        with torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.cfg.precision == "bf16"
        ):
            features = self.state.model.audio_encoder(logmel, augment=augment)
        audio = torch.nn.functional.normalize(self.state.model.audio_head(features.float()), dim=-1)
        loss = self.pair_loss(audio, text, same)
        if mix and mix["lam"] < 1.0:
            perm = mix["perm"].to(self.device)
            # A mixed clip matches both captions, weighted by its share of the mix.
            loss = mix["lam"] * loss + (1 - mix["lam"]) * self.pair_loss(
                audio, text[perm], same[:, perm]
            )
        if self.cfg.class_loss > 0:
            rows = self.data.batches.draw_class_captions()
            held = self.data.batches.class_targets(draw.audio_tags, rows)
            targets = torch.from_numpy(held).to(self.device)
            if mix and mix["lam"] < 1.0:  # a mixed-up clip holds its partner's labels as well
                targets = targets | targets[mix["perm"].to(self.device)]
            loss = loss + self.cfg.class_loss * class_caption_loss(
                audio, self.project_rows(rows), targets, self.cfg.class_temperature
            )
        self.state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip > 0:
            params = [p for g in self.state.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        self.state.optimizer.step()
        self.state.scheduler.step()
        if self.state.ema is not None:
            self.state.ema.update()
        return float(loss.detach())

    # -- epochs ----------------------------------------------------------------------------
    def _train_mode(self) -> None:
        self.state.model.train()
        if self.cfg.freeze_audio:
            self.state.model.audio_encoder.eval()  # frozen BatchNorm statistics stay as loaded
        if self.cfg.freeze_text:
            self.state.model.text_encoder.model.eval()

    def recompute_batchnorm(self, n_batches: int) -> None:
        """BatchNorm statistics from clean training windows (train/precise_bn.py), drawn from
        a generator of their own (seed, epoch): training draws stay as they were and a resumed
        run replays."""
        if self.cfg.freeze_audio:
            return  # frozen statistics stay as loaded
        recompute_batchnorm(
            self.state.model.audio_encoder,
            self.data.train_store,
            self.data.train_clips,
            n_batches,
            self.cfg.batch_size,
            torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self.state.epoch),
            self.device,
            bf16=self.cfg.precision == "bf16",
        )

    def scored_weights(self):
        """A context in which the model carries the weights that are scored and saved: the
        weight average when there is one (train/ema.py), else the raw weights."""
        return self.state.ema.swapped() if self.state.ema is not None else contextlib.nullcontext()

    def _score(self) -> dict[str, Any]:
        """Validation of the weights the model carries now, after precise BatchNorm (if on)."""
        if self.cfg.precise_bn > 0:
            self.recompute_batchnorm(self.cfg.precise_bn)
        return self.validate()

    def validate(self, n_boot: int = 200) -> dict[str, Any]:
        return evaluate_split(
            self.state.model,
            self.data.val_set,
            self.data.val_store,
            self.data.val_text,
            batch_size=self.cfg.eval_batch_size,
            seed=self.cfg.seed,
            n_boot=n_boot,
        )

    def fit(self) -> TrainResult:
        from tqdm import tqdm

        self.out.mkdir(parents=True, exist_ok=True)
        if self.state.epoch == 0:  # a fresh run into an old folder: its log starts over
            (self.out / METRICS_LOG).unlink(missing_ok=True)
        _atomic_json(self.out / "train_config.json", self.cfg.to_dict())
        while self.state.epoch < self.cfg.epochs and self.state.bad_epochs < self.cfg.patience:
            self._train_mode()
            if self.data.draw_p is None:
                perm = torch.randperm(len(self.data.train_clips), generator=self.state.gen)
            else:  # weighted: each clip drawn in proportion to its recipe weight
                perm = torch.multinomial(
                    self.data.draw_p,
                    len(self.data.train_clips),
                    replacement=True,
                    generator=self.state.gen,
                )
            order = self.data.train_clips[perm.numpy()]
            losses, start = [], time.perf_counter()
            bar = tqdm(
                range(self.steps_per_epoch),
                desc=f"epoch {self.state.epoch + 1}/{self.cfg.epochs}",
                disable=not self.cfg.progress,
                dynamic_ncols=True,
            )
            for s in bar:
                lo = (s * self.cfg.batch_size) % len(order)
                clips = np.take(order, range(lo, lo + self.cfg.batch_size), mode="wrap")
                clips = np.unique(clips) if len(order) < self.cfg.batch_size else clips
                losses.append(self.step(clips))
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
            bar.close()
            train_s = time.perf_counter() - start
            # With an average, the raw weights are scored too: the pair shows what it gives.
            raw = self._score()["text_to_audio"]["mAP@10"]["value"] if self.state.ema else None
            with self.scored_weights():
                report = self._score()
                self.state.epoch += 1
                score = report["text_to_audio"]["mAP@10"]["value"]
                improved = score > self.state.best
                if improved:
                    self.state.best, self.state.best_epoch, self.state.bad_epochs = (
                        score,
                        self.state.epoch,
                        0,
                    )
                    self.state.best_state = {
                        k: v.detach().cpu().clone()
                        for k, v in self.state.model.state_dict().items()
                    }
                    self.save_model(report)
                else:
                    self.state.bad_epochs += 1
            entry = {
                "epoch": self.state.epoch,
                "loss": float(np.mean(losses)),
                "lr": self.state.scheduler.get_last_lr()[0],
                "train_s": round(train_s, 2),
                "clips_per_s": round(len(losses) * self.cfg.batch_size / train_s, 2),
                "val_mAP@10": score,
                "val_R@1": report["text_to_audio"]["R@1"]["value"],
                "val_R@10": report["text_to_audio"]["R@10"]["value"],
                "best": improved,
            }
            if raw is not None:
                entry["raw_val_mAP@10"] = raw
            self.state.history.append(entry)
            self.log(entry)
            tqdm.write(  # stderr: stdout stays clean for --json
                f"epoch {self.state.epoch}: loss {entry['loss']:.4f}, val mAP@10 {score:.4f}, "
                f"R@1 {entry['val_R@1']:.4f}{'  (best)' if improved else ''}",
                file=sys.stderr,
            )
            self.save_checkpoint()
        refit = None
        if self.cfg.refit_steps > 0 and self.state.best_epoch > 0:
            refit = self.refit()
        return TrainResult(
            self.out, self.state.best_epoch, self.state.best, self.state.history, refit
        )

    def log(self, entry: dict[str, Any]) -> None:
        with open(self.out / METRICS_LOG, "a") as f:
            f.write(json.dumps(entry) + "\n")

    def best_weights(self) -> dict[str, torch.Tensor]:
        """The best epoch's weights as training left them (a refit starts from these)."""
        if self.state.best_state is None:  # a checkpoint from before refits: the folder has them...
            model = load_model(self.out, self.device, with_text=False)
            self.state.best_state = {k: v.cpu() for k, v in model.state_dict().items()}
            path = self.out / CHECKPOINT
            if path.is_file():  # ...until a refit replaces them: the checkpoint keeps them
                state = torch.load(path, map_location="cpu", weights_only=True)
                self._write_checkpoint({**state, "best_state": self.state.best_state})
        return self.state.best_state

    def refit(self) -> dict[str, Any]:
        """The head refit of the best epoch (train/refit.py, `refit_best`)."""
        return refit_best(self)

    # -- persistence -----------------------------------------------------------------------
    def save_model(self, report: dict[str, Any], epoch: int | None = None) -> None:
        from earshot.eval.report import write_report

        model = self.state.model
        if not self.cfg.freeze_text:
            # A fine-tuned text encoder travels inside the model folder.
            model.text_encoder.model.save(str(self.out / TEXT_SUBDIR))
            model.config = dataclasses.replace(
                model.config, text=TextConfig(TEXT_SUBDIR, model.config.text.dim)
            )
        save_model(model, self.out)
        write_report(
            {"model_id": model_id(model), "epoch": epoch or self.state.epoch, **report},
            self.out,
            stem="validation",
        )

    def save_checkpoint(self) -> None:
        save_checkpoint(self.state)

    def _write_checkpoint(self, state: dict[str, Any]) -> None:
        write_checkpoint(self.out, state)

    def resume(self) -> None:
        resume(self.state)


def _atomic_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def train(cfg: TrainConfig, resume: bool = False) -> TrainResult:
    from earshot.model.pretrained import BACKBONES

    if cfg.teacher:
        # A student of a model we ship: our own encoder, frozen; its head learns the teacher's
        # window vectors (train/student.py).
        from earshot.train.student import train_student

        r = train_student(cfg, progress=cfg.progress)
        steps = cfg.steps_per_epoch or 100
        return TrainResult(r["out"], r["best_step"] // steps, r["best_val_mAP@10"], r["history"])
    if cfg.encoder in BACKBONES:
        # A frozen pretrained backbone: the heads fit on its cached features (train/heads.py).
        from earshot.train.heads import train_general

        r = train_general(cfg, progress=cfg.progress)
        steps = cfg.steps_per_epoch or 100
        return TrainResult(r["out"], r["best_step"] // steps, r["best_val_mAP@10"], r["history"])
    if cfg.fusion or cfg.audio_hidden or cfg.text_head_lr != 1.0 or cfg.window_gate:
        what = (
            "fusion" if cfg.fusion else "audio_hidden" if cfg.audio_hidden
            else "window_gate" if cfg.window_gate else "text_head_lr"
        )  # fmt: skip
        raise EarshotError(
            f"{what} is for heads trained on a named backbone ({', '.join(BACKBONES)}), "
            f"not for encoder '{cfg.encoder}'"
        )
    trainer = Trainer(cfg)
    if resume:
        trainer.resume()
    return trainer.fit()
