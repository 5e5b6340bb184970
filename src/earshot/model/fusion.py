"""Score fusion of trained heads with the heads they started from, as one vector.

A general model's heads start at the teacher space (`model/teacher.py`: a window is its
AudioSet tags read as sentences) and are trained on our labels and captions. Training lifts
what our labels teach but drifts from how people write whole sentences: on validation, real
human captions scored below the untrained start. Ensembling a fine-tuned model with the
zero-shot one it came from is the usual remedy (Wortsman et al., "Robust fine-tuning of
zero-shot models", 2022, the output-space ensemble). Here it is exact and costs no second
search: each side keeps both heads, each output is made unit length, and the halves are
scaled by √(1 − f) and √f before they are put side by side, so the dot product of an audio
and a text vector is (1 − f) · cos(trained) + f · cos(start), and the vector is unit length.
The price is a vector twice as wide (joint_dim = 2 × each head's width).
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from earshot.model.heads import audio_head, linear_part


class FusedHead(nn.Module):
    """`trained` and `start` (two heads of the same shape; the start linear, the trained one
    linear or, with `hidden`, a residual MLP: model/heads.py) side by side:
    input → [√(1 − fusion) · unit(trained(x)) ; √fusion · unit(start(x))]."""

    def __init__(self, in_features: int, head_dim: int, fusion: float, hidden: int = 0):
        super().__init__()
        if not 0.0 < fusion < 1.0:
            raise ValueError(f"fusion must be in (0, 1), got {fusion}")
        self.trained = audio_head(in_features, head_dim, hidden)
        self.start = nn.Linear(in_features, head_dim)
        self.fusion = float(fusion)

    @property
    def weight(self) -> torch.Tensor:
        # Where code asks a head for its device or dtype: the trained head's.
        return self.trained.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.normalize(self.trained(x), dim=-1) * math.sqrt(1.0 - self.fusion)
        b = F.normalize(self.start(x), dim=-1) * math.sqrt(self.fusion)
        return torch.cat([a, b], dim=-1)


def fuse_with_start(model, start: tuple[dict, dict], fusion: float):
    """A new model whose heads are `model`'s trained heads fused with the `start` state dicts
    (audio head, text head) it was trained from; the backbone and text encoder are shared.
    A start state dict may hold a residual MLP head's branch: only its linear part is kept."""
    config = model.config
    if config.fusion:
        raise ValueError("the model's heads are fused already")
    fused_config = dataclasses.replace(config, joint_dim=2 * config.joint_dim, fusion=fusion)
    fused = model.with_heads(fused_config)
    with torch.no_grad():
        for head, trained, begun in (
            (fused.audio_head, model.audio_head, start[0]),
            (fused.text_head, model.text_head, start[1]),
        ):
            head.trained.load_state_dict(trained.state_dict())
            # a residual MLP head began as its linear part (its branch starts at zero)
            head.start.load_state_dict(linear_part(begun))
    return fused
