"""An exponential moving average (EMA) of the trained weights, scored and saved in their place.

After every optimiser step, average ← decay · average + (1 − decay) · weights, over the audio
encoder, both heads and (when it is trained) the text encoder, BatchNorm statistics included.
The average is what validation scores, what the best epoch keeps and what the model folder
gets; training itself runs on the raw weights, so switching the average on changes none of
training's draws and the raw run replays exactly. On small, noisy data this smooths out the
epoch-to-epoch swings of the last steps (timm's ModelEmaV3 and torch's `swa_utils` do the same;
this uses the latter).

With decay d the average spans roughly 1 / (1 − d) steps: 0.998 is about 500 steps, five epochs
of the default recipe's 100 steps.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


class WeightAverage:
    """The EMA of `model`'s trained parts; `swapped()` puts it into the model for a while."""

    def __init__(self, model: nn.Module, decay: float, with_text: bool = False):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must lie in (0, 1); got {decay!r}")
        parts = {
            "audio_encoder": model.audio_encoder,
            "audio_head": model.audio_head,
            "text_head": model.text_head,
        }
        if with_text:  # a fine-tuned sentence encoder is averaged with the rest
            parts["text_encoder"] = model.text_encoder.model
        self.parts = nn.ModuleDict(parts)
        self.average = AveragedModel(
            self.parts, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True
        )
        self.decay = decay

    @torch.no_grad()
    def update(self) -> None:
        """Fold the model's current weights into the average (the first call copies them)."""
        self.average.update_parameters(self.parts)

    @contextmanager
    def swapped(self) -> Iterator[None]:
        """The model carries the averaged weights inside the block and its own after it, even
        when the block raises."""
        raw = {k: v.detach().clone() for k, v in self.parts.state_dict().items()}
        self.parts.load_state_dict(self.average.module.state_dict())
        try:
            yield
        finally:
            self.parts.load_state_dict(raw)

    def state_dict(self) -> dict[str, Any]:
        return self.average.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.average.load_state_dict(state)
