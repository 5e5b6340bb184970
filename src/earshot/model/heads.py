"""The audio head of a model on a frozen backbone: a linear map, optionally plus a residual MLP.

A general model's heads start at the teacher space (`model/teacher.py`), which is a linear map
of the backbone's outputs, and its backbone is frozen, so a linear head can only re-weigh what
mn04's pooled embedding and tags already separate. `ResidualMLPHead` adds one hidden layer
beside the linear map: y = W·x + b + W₂·GELU(W₁·LayerNorm(x) + b₁) + b₂, with W₂ and b₂
initialised to zero, so at initialisation it is the linear head exactly (the teacher start
stays the start) and training decides how far to bend. Measured on validation in
MODEL_CARD-general.md ("The audio head's hidden layer"). It subclasses `nn.Linear`, so its
linear part keeps the names (`weight`, `bias`) and the uses (`init_teacher_heads`, a head's
device) of a plain linear head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ResidualMLPHead(nn.Linear):
    """Linear(in → out) + a zero-initialised residual branch LayerNorm → Linear(in → hidden)
    → GELU → Linear(hidden → out)."""

    def __init__(self, in_features: int, out_features: int, hidden: int):
        super().__init__(in_features, out_features)
        if hidden <= 0:
            raise ValueError(f"a residual MLP head needs hidden > 0, got {hidden}")
        self.hidden = int(hidden)
        self.norm = nn.LayerNorm(in_features)
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, out_features)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias) + self.fc2(F.gelu(self.fc1(self.norm(x))))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, hidden={self.hidden}"


def audio_head(in_features: int, out_features: int, hidden: int = 0) -> nn.Linear:
    """The trained audio head: plain linear (hidden 0, every model before the MLP) or
    `ResidualMLPHead`."""
    if hidden:
        return ResidualMLPHead(in_features, out_features, hidden)
    return nn.Linear(in_features, out_features)


def linear_part(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A head's state dict without its residual branch: what a plain linear head loads (the
    start a residual head began from is its linear part, the branch being zero there).
    Raises ValueError for a branch that is not zero: dropping it would change the head."""
    for name in ("fc2.weight", "fc2.bias"):
        if name in state and bool(state[name].any()):
            raise ValueError("the head's residual branch is not zero: it is not a start")
    return {k: v for k, v in state.items() if k in ("weight", "bias")}
