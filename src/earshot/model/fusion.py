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

`GatedHead` mixes per window instead, and in one vector of the heads' own width: where the
text head is not trained (it stays at its start, `text_head_lr = 0`), a query is the same
vector for both heads, so mixing the two audio outputs, w · unit(trained(x)) + (1 − w) ·
unit(start(x)), made unit length, scores a query against both at once. The weight w is set per
window by how well the trained head knows it: k, the mean of the window's `top` largest
cosines, through the trained head, to a `bank` of vectors shipped in the model's state dict
(the training windows through the trained head, or the training captions through the text
head), and w = low + (1 − low) · sigmoid((k − tau) / width). A window
like the sounds the heads were trained on keeps the trained vector; one unlike all of them
leans on the start, which keeps AudioSet's breadth.
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


class GatedHead(nn.Module):
    """The trained audio head mixed per window with the linear head it `start`ed from (see the
    module's docstring): input → w · unit(trained(x)) + (1 − w) · unit(start(x)). The caller
    makes it unit length, as for every audio head. `gate`: a `WindowGate` (tau, low, width,
    top, and bank = the number of vectors in the `bank` buffer)."""

    def __init__(self, in_features: int, dim: int, gate, hidden: int = 0):
        super().__init__()
        self.trained = audio_head(in_features, dim, hidden)
        self.start = nn.Linear(in_features, dim)
        self.register_buffer("bank", torch.zeros(gate.bank, dim))
        self.gate = gate

    @property
    def weight(self) -> torch.Tensor:
        return self.trained.weight

    def share(self, trained_unit: torch.Tensor) -> torch.Tensor:
        """The trained head's share w of each window, (..., 1), from its unit vectors."""
        g = self.gate
        sims = trained_unit @ self.bank.T
        if g.top == 1:
            known = sims.amax(dim=-1, keepdim=True)
        else:
            known = sims.topk(g.top, dim=-1).values.mean(dim=-1, keepdim=True)
        return g.low + (1.0 - g.low) * torch.sigmoid((known - g.tau) / g.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        trained = F.normalize(self.trained(x), dim=-1)
        w = self.share(trained)
        return w * trained + (1.0 - w) * F.normalize(self.start(x), dim=-1)


def gate_with_start(
    model,
    start: dict,
    bank: torch.Tensor,
    tau: float,
    low: float,
    width: float,
    top: int = 1,
    side: str = "text",
):
    """A new model whose audio head is `model`'s trained one gated per window with the `start`
    state dict it was trained from (`GatedHead`). `bank`: the training captions' sentence
    vectors (`side` "text": the text encoder's, projected here by the text head) or the
    training windows' backbone features (`side` "audio": projected by the trained audio
    head). The text head must still be at its start (one query vector scores both heads)."""
    from earshot.config import WindowGate

    config = model.config
    if config.fusion or config.window_gate is not None:
        raise ValueError("the model's heads are fused already")
    if side not in ("text", "audio"):
        raise ValueError(f"the gate's bank is of 'text' or 'audio' vectors, not '{side}'")
    head = model.text_head if side == "text" else model.audio_head
    with torch.no_grad():
        vectors = F.normalize(head(bank.to(head.weight)), dim=-1)
    gate = WindowGate(tau=tau, low=low, width=width, bank=len(vectors), top=top)
    gated = model.with_heads(dataclasses.replace(config, window_gate=gate))
    with torch.no_grad():
        gated.text_head.load_state_dict(model.text_head.state_dict())
        gated.audio_head.trained.load_state_dict(model.audio_head.state_dict())
        gated.audio_head.start.load_state_dict(linear_part(start))
        gated.audio_head.bank.copy_(vectors)
    return gated


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
