"""What a training run steps with: AdamW over the trained parts, warm-up then cosine decay."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from earshot.train.config import TrainConfig


def build_optimizer(
    cfg: TrainConfig, model: nn.Module, temperature: nn.Module, steps_per_epoch: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW with the heads at `lr`, the encoders being trained at `encoder_lr` (default `lr`)
    and InfoNCE's temperature without weight decay; per-step linear warm-up over
    `warmup_epochs`, then cosine decay to 0 at the last step."""
    optimizer = torch.optim.AdamW(
        _param_groups(cfg, model, temperature), weight_decay=cfg.weight_decay
    )
    total = steps_per_epoch * cfg.epochs
    warmup = max(1, round(cfg.warmup_epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, warmup, total)
    )
    return optimizer, scheduler


def _param_groups(
    cfg: TrainConfig, model: nn.Module, temperature: nn.Module
) -> list[dict[str, Any]]:
    enc_lr = cfg.encoder_lr or cfg.lr
    heads = [*model.audio_head.parameters(), *model.text_head.parameters()]
    groups = [{"params": heads, "lr": cfg.lr}]
    if not cfg.freeze_audio:
        groups.append({"params": list(model.audio_encoder.parameters()), "lr": enc_lr})
    if not cfg.freeze_text:
        groups.append({"params": list(model.text_encoder.model.parameters()), "lr": enc_lr})
    if cfg.loss == "infonce":
        groups.append({"params": list(temperature.parameters()), "lr": cfg.lr, "weight_decay": 0.0})
    return groups


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
