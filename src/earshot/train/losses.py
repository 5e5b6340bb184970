"""Contrastive losses on a batch of matched (audio_i, text_i) embedding pairs.

Both losses are pure functions of the embeddings; the modules at the bottom only hold their
settings (and InfoNCE's learnable temperature) so that a training loop can build any of them by
name from `LOSSES` and call it as `loss(audio, text, same)`.

Conventions shared by every function here:
- `audio`, `text`: (batch, dim), already L2-normalised, so `audio @ text.T` is the cosine
  similarity. They are not renormalised: the model's head normalises, and doing it twice would
  hide a head that forgot to.
- Row i of `audio` matches row i of `text`; every other item in the batch is a negative unless
  `same` says otherwise.
- `same`: optional (batch, batch) bool, `same[i, j]` True where audio i also matches text j
  (two captions of one clip in a batch, or one label). The diagonal is a positive whatever
  `same` holds there. The mask need not be symmetric: it is read as "audio i ~ text j".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

TRIPLET_VARIANTS = ("sum", "hardest")
REDUCTIONS = ("mean", "sum", "none")
MAX_LOGIT_SCALE = 100.0  # CLIP's cap on exp(logit_scale): temperature never below 0.01


def _similarity(audio: Tensor, text: Tensor, same: Tensor | None) -> tuple[Tensor, Tensor]:
    """Cosine similarities and the positives mask, after checking the shapes.

    audio, text: (batch, dim); same: (batch, batch) bool or None.
    Returns S: (batch, batch), S[i, j] = audio_i . text_j, and positives: (batch, batch) bool,
    the diagonal or-ed with `same`.
    """
    if audio.ndim != 2 or text.ndim != 2:
        raise ValueError(
            f"audio and text embeddings must be 2-D (batch, dim), got shapes "
            f"{tuple(audio.shape)} and {tuple(text.shape)}"
        )
    if audio.shape != text.shape:
        raise ValueError(
            f"audio and text embeddings must have the same shape (batch, dim): row i of one "
            f"matches row i of the other; got {tuple(audio.shape)} and {tuple(text.shape)}"
        )
    batch = audio.shape[0]
    if batch == 0:
        raise ValueError("empty batch: need at least one (audio, text) pair")
    positives = torch.eye(batch, dtype=torch.bool, device=audio.device)
    if same is not None:
        if same.dtype != torch.bool or same.shape != (batch, batch):
            raise ValueError(
                f"`same` must be a ({batch}, {batch}) bool mask marking extra positive pairs, "
                f"got dtype {same.dtype} and shape {tuple(same.shape)}"
            )
        positives = positives | same.to(audio.device)
    return audio @ text.T, positives


def _reduce(per_pair: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return per_pair.mean()
    if reduction == "sum":
        return per_pair.sum()
    return per_pair


def triplet_loss(
    audio: Tensor,
    text: Tensor,
    margin: float = 0.2,
    variant: str = "sum",
    reduction: str = "mean",
    same: Tensor | None = None,
) -> Tensor:
    """Bidirectional hinge ranking loss with in-batch negatives (VSE; VSE++ with "hardest").

    audio, text: (batch, dim) unit vectors; same: optional (batch, batch) bool of extra
    positives, which are never used as negatives.

    For pair i, with S = audio @ text.T:
      audio anchor: max(0, margin - S[i, i] + S[i, j]) over text negatives j,
      text anchor:  max(0, margin - S[i, i] + S[j, i]) over audio negatives j.
    variant "sum" adds up every negative's hinge (Kiros et al. VSE), "hardest" keeps only the
    largest per anchor (Faghri et al. VSE++). The pair's loss is the audio anchor's plus the text
    anchor's, as in VSE++'s `cost_s + cost_im`.

    reduction: "sum" is VSE++'s loss exactly (sum over pairs); "mean" divides by the batch size,
    i.e. averages over the B pairs (each counting both directions), so the learning rate does
    not have to follow the batch size for "hardest". "sum" over negatives still grows with B:
    that is VSE's definition. "none" returns the (batch,) per-pair losses.

    A pair with no negatives (batch of 1, or everything marked `same`) contributes 0.
    """
    if variant not in TRIPLET_VARIANTS:
        raise ValueError(f"unknown triplet variant {variant!r}: use one of {TRIPLET_VARIANTS}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}: use one of {REDUCTIONS}")
    sim, positives = _similarity(audio, text, same)  # (batch, batch) each
    positive_sim = sim.diagonal().unsqueeze(1)  # (batch, 1): S[i, i] per row
    # Row i holds anchor i's hinges in both matrices: text negatives j in the first, audio
    # negatives j (hence S.T) in the second. Positives are zeroed after the clamp, which makes
    # them neutral for both the sum and the max, since every hinge is >= 0.
    cost_audio_anchor = (margin - positive_sim + sim).clamp(min=0)
    cost_text_anchor = (margin - positive_sim + sim.T).clamp(min=0)
    cost_audio_anchor = cost_audio_anchor.masked_fill(positives, 0.0)
    cost_text_anchor = cost_text_anchor.masked_fill(positives.T, 0.0)
    if variant == "sum":
        per_pair = cost_audio_anchor.sum(dim=1) + cost_text_anchor.sum(dim=1)
    else:
        per_pair = cost_audio_anchor.amax(dim=1) + cost_text_anchor.amax(dim=1)
    return _reduce(per_pair, reduction)  # (batch,) for "none", else a scalar


def info_nce(
    audio: Tensor,
    text: Tensor,
    logit_scale: Tensor | float,
    same: Tensor | None = None,
) -> Tensor:
    """Symmetric InfoNCE (CLIP; the DCASE 2023 language-based retrieval baseline).

    audio, text: (batch, dim) unit vectors; logit_scale: scalar, log(1 / temperature), as CLIP
    stores it; same: optional (batch, batch) bool of extra positives.

    logits = min(exp(logit_scale), 100) * audio @ text.T; the loss is the mean of the
    cross-entropy over rows (audio -> text) and over columns (text -> audio), each averaged over
    the batch. Past the cap the gradient on logit_scale is zero, which stops it growing just as
    CLIP's in-place clamp of the parameter does, without the loss mutating its input.

    With `same`, each anchor's target is spread uniformly over its positives (diagonal and
    `same`) rather than other positives being dropped from the denominator: duplicates really
    do match, so they are pulled together rather than ignored. The cost is a floor on the loss:
    an anchor with k positives cannot score below log(k). Without `same` this is CLIP's loss.
    """
    logit_scale = torch.as_tensor(logit_scale, dtype=audio.dtype, device=audio.device)
    if logit_scale.numel() != 1:
        raise ValueError(
            f"logit_scale must be a scalar (log of 1/temperature), got shape "
            f"{tuple(logit_scale.shape)}"
        )
    sim, positives = _similarity(audio, text, same)  # (batch, batch) each
    logits = logit_scale.reshape(()).exp().clamp(max=MAX_LOGIT_SCALE) * sim
    targets = positives.to(logits.dtype)
    audio_to_text = _soft_cross_entropy(logits, targets / targets.sum(dim=1, keepdim=True))
    text_to_audio = _soft_cross_entropy(logits.T, targets.T / targets.T.sum(dim=1, keepdim=True))
    return (audio_to_text + text_to_audio) / 2


def class_caption_loss(
    audio: Tensor, class_text: Tensor, targets: Tensor, temperature: float = 0.1
) -> Tensor:
    """Cross-entropy of each clip against one caption of every label, as a classifier.

    `class_text` (n_classes, dim) holds one caption per label, drawn afresh each step; `targets`
    (batch, n_classes) bool marks the labels clip i holds (two for a mixture, which then splits
    its probability between them). Unlike in-batch InfoNCE there are no false negatives: each
    label appears once. Rows without any target (a clip of no listed label) are left out.
    """
    targets = targets.to(audio.dtype)
    held = targets.sum(dim=1)
    keep = held > 0
    if not bool(keep.any()):
        return audio.sum() * 0.0
    logits = audio[keep] @ class_text.T / temperature
    return _soft_cross_entropy(logits, targets[keep] / held[keep, None])


def _soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean over rows of -sum_j targets[i, j] log softmax(logits[i])[j]; both (batch, batch)."""
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


class LearnableTemperature(nn.Module):
    """CLIP's temperature: one parameter, `logit_scale` = log(1 / temperature).

    Learning the log keeps the temperature positive and makes steps multiplicative.
    """

    def __init__(self, init_temperature: float = 0.07) -> None:
        super().__init__()
        if not init_temperature > 0:
            raise ValueError(f"temperature must be positive, got {init_temperature}")
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / init_temperature)))

    def forward(self) -> Tensor:
        return self.logit_scale

    @property
    def temperature(self) -> float:
        """The temperature in use, after the cap that `info_nce` applies."""
        return 1 / min(math.exp(self.logit_scale.item()), MAX_LOGIT_SCALE)


class TripletLoss(nn.Module):
    """`triplet_loss` with its settings fixed, callable as loss(audio, text, same=None)."""

    def __init__(self, margin: float = 0.2, variant: str = "sum") -> None:
        super().__init__()
        if variant not in TRIPLET_VARIANTS:
            raise ValueError(f"unknown triplet variant {variant!r}: use one of {TRIPLET_VARIANTS}")
        self.margin = margin
        self.variant = variant

    def forward(self, audio: Tensor, text: Tensor, same: Tensor | None = None) -> Tensor:
        return triplet_loss(audio, text, self.margin, self.variant, same=same)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, variant={self.variant!r}"


class InfoNCELoss(nn.Module):
    """`info_nce` with a learnable temperature: give its parameters to the optimiser."""

    def __init__(self, init_temperature: float = 0.07) -> None:
        super().__init__()
        self.temperature = LearnableTemperature(init_temperature)

    def forward(self, audio: Tensor, text: Tensor, same: Tensor | None = None) -> Tensor:
        return info_nce(audio, text, self.temperature.logit_scale, same)


# name -> builder of a module called as loss(audio, text, same=None) -> scalar.
LOSSES: dict[str, Callable[..., nn.Module]] = {
    "triplet": TripletLoss,  # VSE: sum over negatives
    "triplet_hardest": partial(TripletLoss, variant="hardest"),  # VSE++
    "info_nce": InfoNCELoss,  # CLIP / DCASE 2023 baseline
}
