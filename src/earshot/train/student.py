"""A student: a model of our own encoder, taught to place windows where a teacher model does.

`earshot train` with `teacher` set (configs/offline.toml). The student's audio encoder is the
`init` model folder's (a PANNs CNN we trained from nothing, so nothing third-party is in it),
frozen, read through its pooled statistics (`EncoderConfig.pool_stats`); its audio head learns
to put each window where the teacher's audio side puts the same window (1 − cosine), plus the
caption InfoNCE of `train/heads.py` so our labels stay apart; its text head *is* the teacher's,
so a query lands where the teacher's does and the student answers in the teacher's space. It
loads with no network: the offline fallback, when the teacher's backbone cannot be resolved.

Windows are the teacher's (window_s, hop_s), so each student window has the teacher's vector of
the same samples as its target; both sides' outputs are computed once per clip and cached
(`train/features.py`). The head's linear part starts at the ridge least-squares map from the
student's features to the teacher's vectors; the step with the best validation mAP@10 is kept.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from earshot.errors import EarshotError
from earshot.model.dual import JointModel
from earshot.train.features import BackboneFeatures, backbone_features
from earshot.train.heads import (
    LOG_FILE,
    HeadSettings,
    Validation,
    _Split,
    caption_nce,
    clip_weights,
    draw_batch,
)

RIDGE = 1.0  # the ridge of the linear part's least-squares start (features are not scaled)


def student_config(init: JointModel, teacher: JointModel, pool_stats: int, hidden: int):
    """The student's ModelConfig: `init`'s front end and encoder (read through the last
    `pool_stats` blocks' statistics), the teacher's windows, text model and joint space."""
    t, s = teacher.config, init.config
    if t.fusion or t.window_gate is not None:
        raise EarshotError(
            "the teacher has fused or gated heads: a student learns one audio head's vectors"
        )
    return dataclasses.replace(
        s,
        audio=dataclasses.replace(s.audio, window_s=t.audio.window_s, hop_s=t.audio.hop_s),
        encoder=dataclasses.replace(s.encoder, pool_stats=pool_stats),
        text=t.text,
        joint_dim=t.joint_dim,
        audio_hidden=hidden,
    )


def build_student(init: JointModel, teacher: JointModel, pool_stats: int, hidden: int):
    """A student model: `init`'s encoder weights, the teacher's text head and text encoder,
    a fresh audio head (fitted by `fit_student`)."""
    from earshot.model.pretrained import has_backbone

    if has_backbone(init.config):
        raise EarshotError(
            "a student's encoder is one we trained (init: a model folder whose encoder it "
            "stores, e.g. the compact model), not a named third-party backbone"
        )
    model = JointModel(student_config(init, teacher, pool_stats, hidden))
    encoder = {k: v for k, v in init.state_dict().items() if k.startswith("audio_encoder.")}
    missing, unexpected = model.load_state_dict(encoder, strict=False)
    if unexpected or any(k.startswith("audio_encoder.") for k in missing):
        raise EarshotError(f"init's encoder does not fit the student: {unexpected or missing}")
    model.text_head.load_state_dict(teacher.text_head.state_dict())
    model.attach_text_encoder(teacher.text_encoder)
    return model.eval()


@torch.no_grad()
def teacher_vectors(teacher: JointModel, bf: BackboneFeatures) -> torch.Tensor:
    """(windows, joint_dim) unit vectors: where the teacher's audio side puts each window."""
    teacher.eval()
    return F.normalize(teacher.audio_head(torch.from_numpy(bf.features)), dim=-1)


@torch.no_grad()
def ridge_start(head: torch.nn.Linear, features: torch.Tensor, targets: torch.Tensor) -> None:
    """Set a head's linear part (weight, bias) to the ridge least-squares map features → targets."""
    x = torch.cat([features, torch.ones(len(features), 1)], dim=1).double()
    gram = x.T @ x + RIDGE * torch.eye(x.shape[1], dtype=torch.float64)
    w = torch.linalg.solve(gram, x.T @ targets.double())
    head.weight.copy_(w[:-1].T.float())
    head.bias.copy_(w[-1].float())


def fit_student(
    model: JointModel,
    train: _Split,
    val: _Split,
    targets: torch.Tensor,
    settings: HeadSettings,
    progress: bool = True,
) -> dict[str, Any]:
    """Fit the student's audio head in place: `settings.distill` x (1 − cos(window, its teacher
    vector)) over the batch's windows and as many random others, + `settings.caption_loss` x the
    multi-positive caption InfoNCE over the batch; the text head stays the teacher's. Leaves
    the best validation step."""
    gen = torch.Generator().manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    ridge_start(model.audio_head, train.features, targets)
    model.text_head.requires_grad_(False)
    opt = torch.optim.AdamW(
        model.audio_head.parameters(), lr=settings.lr, weight_decay=settings.weight_decay
    )
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=settings.steps)
    weights = clip_weights(train)
    validation = Validation(model, val, progress)
    bs = min(settings.batch_size, int(train.usable.sum()))
    for step in range(1, settings.steps + 1):
        model.train()
        clips, wins, caps = draw_batch(train, weights, rng, bs)
        extra = torch.randint(len(train.features), (bs,), generator=gen).numpy()
        rows = np.concatenate([wins, extra])
        a = F.normalize(model.audio_head(train.features[rows]), dim=-1)
        loss = settings.distill * (1.0 - (a * targets[rows]).sum(-1)).mean()
        if settings.caption_loss:
            nce = caption_nce(model, train, a[:bs], clips, caps, settings.temperature)
            loss = loss + settings.caption_loss * nce
        validation.descend(loss, opt, sched, step, settings)
    return validation.keep_best()


def train_student(cfg, progress: bool = True) -> dict[str, Any]:
    """`earshot train` for a config with `teacher` set; the model folder lands in `cfg.out`."""
    from earshot.data.cache import TextCache
    from earshot.data.datasets import load_dataset
    from earshot.model.io import load_model, model_id, resolve_model_dir, save_model

    if not cfg.init:
        raise EarshotError(
            "a student needs init: the model folder whose audio encoder it keeps (e.g. "
            "src/earshot/models/default, the compact model)"
        )
    torch.manual_seed(cfg.seed)
    teacher = load_model(resolve_model_dir(cfg.teacher))
    init = load_model(resolve_model_dir(cfg.init), with_text=False)
    model = build_student(init, teacher, cfg.pool_stats, cfg.audio_hidden)
    train_ds = load_dataset(cfg.dataset, cfg.train_split, cfg.audio_dir)
    val_ds = load_dataset(cfg.dataset, cfg.val_split, cfg.audio_dir)
    cache = TextCache(Path(cfg.cache_dir) / "text.sqlite")
    try:
        captions = list(dict.fromkeys(c for ds in (train_ds, val_ds) for c, _ in ds.captions()))
        vectors = cache.embed(model.text_encoder, captions)
    finally:
        cache.close()
    text = dict(zip(captions, vectors, strict=True))
    t_weights = teacher.config.encoder.weights
    t_backbone = (t_weights.sha256 or t_weights.id) if t_weights else model_id(teacher)
    # The student's encoder is init's: its id keys the cache, with the statistics read.
    s_backbone = f"{model_id(init)}:pool_stats={cfg.pool_stats}"
    splits, targets = [], None
    for ds in (train_ds, val_ds):
        bf_t = backbone_features(teacher, ds, cfg.cache_dir, t_backbone, progress=progress)
        bf_s = backbone_features(model, ds, cfg.cache_dir, s_backbone, progress=progress)
        if not np.array_equal(bf_t.window_clip, bf_s.window_clip):
            raise EarshotError(
                f"split '{ds.split}': the student's windows are not the teacher's (a clip "
                "decoded for one and not the other?)"
            )
        splits.append(_Split(ds, bf_s, text))
        if targets is None:
            targets = teacher_vectors(teacher, bf_t)
    settings = HeadSettings(
        steps=cfg.epochs * (cfg.steps_per_epoch or 100),
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        temperature=cfg.temperature,
        distill=cfg.distill,
        text_lr=0.0,
        caption_loss=cfg.caption_loss,
        eval_every=cfg.steps_per_epoch or 100,
        seed=cfg.seed,
    )
    log = fit_student(model, splits[0], splits[1], targets, settings, progress=progress)
    out = save_model(model, cfg.out)
    log.update(
        model_id=model_id(model),
        teacher=model_id(teacher),
        init=model_id(init),
        train_clips=len(train_ds),
        train_windows=len(splits[0].window_clip),
        val_clips=len(val_ds),
        settings=settings.__dict__,
        config=cfg.to_dict(),
    )
    (out / LOG_FILE).write_text(json.dumps(log, indent=2) + "\n")
    return {"out": out, **log}
