"""Contrastive losses against slow, obvious Python-loop references on small seeded batches."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from earshot.train.losses import (
    LOSSES,
    InfoNCELoss,
    LearnableTemperature,
    TripletLoss,
    class_caption_loss,
    info_nce,
    triplet_loss,
)

DIM = 8


def unit_pairs(batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch, DIM) float64 audio and text unit vectors; float64 so the loops match to 1e-12."""
    g = torch.Generator().manual_seed(seed)
    audio = F.normalize(torch.randn(batch, DIM, generator=g, dtype=torch.float64), dim=1)
    text = F.normalize(torch.randn(batch, DIM, generator=g, dtype=torch.float64), dim=1)
    return audio, text


def same_mask(kind: str, batch: int, seed: int) -> torch.Tensor | None:
    """None, a symmetric mask from shared labels, or an asymmetric random one."""
    g = torch.Generator().manual_seed(seed + 1000)
    if kind == "none":
        return None
    if kind == "labels":  # e.g. several captions of one clip in the batch
        labels = torch.randint(0, 2, (batch,), generator=g)
        return labels[:, None] == labels[None, :]
    return torch.rand(batch, batch, generator=g) < 0.3


def is_positive(same: torch.Tensor | None, i: int, j: int) -> bool:
    """Whether audio i matches text j."""
    return i == j or (same is not None and bool(same[i, j]))


def cosine(audio: torch.Tensor, text: torch.Tensor) -> list[list[float]]:
    a, t = audio.tolist(), text.tolist()
    return [[sum(x * y for x, y in zip(ai, tj, strict=True)) for tj in t] for ai in a]


def reference_triplet(audio, text, margin, variant, same) -> list[float]:
    """Per-pair loss: audio anchor's plus text anchor's hinges, summed or maxed over negatives."""
    s = cosine(audio, text)
    batch = len(s)
    total = sum if variant == "sum" else (lambda costs: max(costs, default=0.0))
    losses = []
    for i in range(batch):
        text_negatives = [
            max(0.0, margin - s[i][i] + s[i][j])
            for j in range(batch)
            if not is_positive(same, i, j)
        ]
        audio_negatives = [
            max(0.0, margin - s[i][i] + s[j][i])
            for j in range(batch)
            if not is_positive(same, j, i)
        ]
        losses.append(total(text_negatives) + total(audio_negatives))
    return losses


def reference_info_nce(audio, text, logit_scale: float, same) -> float:
    """Mean over both directions of -mean over positives of log softmax, one anchor at a time."""
    s = cosine(audio, text)
    batch = len(s)
    scale = min(math.exp(logit_scale), 100.0)
    logits = [[scale * v for v in row] for row in s]

    def anchor_loss(row: list[float], positives: list[int]) -> float:
        log_norm = math.log(sum(math.exp(v) for v in row))
        return -sum(row[j] - log_norm for j in positives) / len(positives)

    audio_to_text = [
        anchor_loss(logits[i], [j for j in range(batch) if is_positive(same, i, j)])
        for i in range(batch)
    ]
    text_to_audio = [
        anchor_loss(
            [logits[i][j] for i in range(batch)],
            [i for i in range(batch) if is_positive(same, i, j)],
        )
        for j in range(batch)
    ]
    return (sum(audio_to_text) / batch + sum(text_to_audio) / batch) / 2


@pytest.mark.parametrize("batch", [1, 2, 5])
@pytest.mark.parametrize("mask", ["none", "labels", "random"])
@pytest.mark.parametrize("variant", ["sum", "hardest"])
@pytest.mark.parametrize("margin", [0.2, 1.0])
def test_triplet_matches_reference(batch, mask, variant, margin):
    seed = batch * 10 + len(mask)
    audio, text = unit_pairs(batch, seed)
    same = same_mask(mask, batch, seed)
    expected = reference_triplet(audio, text, margin, variant, same)
    got = triplet_loss(audio, text, margin, variant, reduction="none", same=same)
    assert got.shape == (batch,)
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64))
    mean = triplet_loss(audio, text, margin, variant, same=same)
    total = triplet_loss(audio, text, margin, variant, reduction="sum", same=same)
    assert mean.item() == pytest.approx(sum(expected) / batch, abs=1e-12)
    assert total.item() == pytest.approx(sum(expected), abs=1e-12)


def test_reference_hinges_are_active():
    # The comparison above only means something if some hinges are on and some off.
    audio, text = unit_pairs(5, 51)
    s = torch.tensor(cosine(audio, text))
    hinges = 0.2 - s.diagonal()[:, None] + s
    assert (hinges > 0).any() and (hinges < 0).any()


@pytest.mark.parametrize("batch", [1, 2, 5])
@pytest.mark.parametrize("mask", ["none", "labels", "random"])
@pytest.mark.parametrize("logit_scale", [0.0, math.log(1 / 0.07), math.log(1000.0)])
def test_info_nce_matches_reference(batch, mask, logit_scale):
    seed = batch * 10 + len(mask)
    audio, text = unit_pairs(batch, seed)
    same = same_mask(mask, batch, seed)
    expected = reference_info_nce(audio, text, logit_scale, same)
    got = info_nce(audio, text, torch.tensor(logit_scale, dtype=torch.float64), same)
    assert got.shape == ()
    assert got.item() == pytest.approx(expected, abs=1e-10)


def test_info_nce_without_mask_is_clips_loss():
    audio, text = unit_pairs(5, 3)
    logits = math.exp(2.0) * audio @ text.T
    labels = torch.arange(5)
    clip = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    torch.testing.assert_close(info_nce(audio, text, torch.tensor(2.0)), clip)


def test_info_nce_caps_the_scale_at_100():
    audio, text = unit_pairs(5, 4)
    big = torch.tensor(math.log(1000.0), requires_grad=True)
    capped = info_nce(audio, text, big)
    torch.testing.assert_close(capped, info_nce(audio, text, math.log(100.0)))
    capped.backward()
    assert big.grad.item() == 0.0  # past the cap the parameter stops growing


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradients_flow(name):
    audio, text = unit_pairs(5, 7)
    audio = audio.float().requires_grad_()
    text = text.float().requires_grad_()
    loss_fn = LOSSES[name](margin=1.0) if name.startswith("triplet") else LOSSES[name]()
    loss = loss_fn(audio, text)
    loss.backward()
    assert loss.shape == () and torch.isfinite(loss) and loss.item() > 0
    for grad in (audio.grad, text.grad, *(p.grad for p in loss_fn.parameters())):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_registry_modules_compute_the_functions():
    audio, text = unit_pairs(5, 8)
    same = same_mask("labels", 5, 8)
    assert LOSSES["triplet"]()(audio, text, same) == triplet_loss(audio, text, same=same)
    hardest = triplet_loss(audio, text, variant="hardest", same=same)
    assert LOSSES["triplet_hardest"]()(audio, text, same) == hardest
    module = LOSSES["info_nce"]().double()
    assert [n for n, _ in module.named_parameters()] == ["temperature.logit_scale"]
    expected = info_nce(audio, text, module.temperature.logit_scale.detach(), same)
    torch.testing.assert_close(module(audio, text, same), expected)


def test_learnable_temperature_starts_at_clips_value():
    t = LearnableTemperature()
    assert t().item() == pytest.approx(math.log(1 / 0.07))
    assert t.temperature == pytest.approx(0.07)
    assert LearnableTemperature(0.001).temperature == pytest.approx(0.01)  # the cap


@pytest.mark.parametrize("variant", ["sum", "hardest"])
def test_perfect_alignment_with_zero_margin_costs_nothing(variant):
    audio, _ = unit_pairs(5, 9)
    assert triplet_loss(audio, audio.clone(), margin=0.0, variant=variant).item() == 0.0


@pytest.mark.parametrize("variant", ["sum", "hardest"])
def test_single_pair_has_no_negatives(variant):
    audio, text = unit_pairs(1, 10)
    assert triplet_loss(audio, text, margin=0.5, variant=variant).item() == 0.0
    loss = info_nce(audio, text, math.log(1 / 0.07))
    assert torch.isfinite(loss) and loss.item() == pytest.approx(0.0)


def test_all_positive_batch_has_no_negatives():
    audio, text = unit_pairs(3, 11)
    everything = torch.ones(3, 3, dtype=torch.bool)
    assert triplet_loss(audio, text, margin=1.0, same=everything).item() == 0.0
    # Every target is uniform, so the loss is the softmax's cross-entropy floor: >= log(3).
    assert info_nce(audio, text, 0.0, everything).item() >= math.log(3) - 1e-12


def test_triplet_ignores_same_on_the_diagonal():
    audio, text = unit_pairs(4, 12)
    off = torch.zeros(4, 4, dtype=torch.bool)
    torch.testing.assert_close(triplet_loss(audio, text, same=off), triplet_loss(audio, text))
    on = torch.eye(4, dtype=torch.bool)
    torch.testing.assert_close(triplet_loss(audio, text, same=on), triplet_loss(audio, text))


@pytest.mark.parametrize(
    ("audio_shape", "text_shape", "message"),
    [
        ((4,), (4,), "must be 2-D"),
        ((2, 3, 4), (2, 3, 4), "must be 2-D"),
        ((4, 8), (4, 6), "same shape"),
        ((4, 8), (3, 8), "same shape"),
        ((0, 8), (0, 8), "empty batch"),
    ],
)
def test_bad_shapes_are_refused(audio_shape, text_shape, message):
    audio, text = torch.zeros(audio_shape), torch.zeros(text_shape)
    with pytest.raises(ValueError, match=message):
        triplet_loss(audio, text)
    with pytest.raises(ValueError, match=message):
        info_nce(audio, text, 0.0)


def test_bad_settings_are_refused():
    audio, text = unit_pairs(3, 13)
    with pytest.raises(ValueError, match="unknown triplet variant 'max'"):
        triplet_loss(audio, text, variant="max")
    with pytest.raises(ValueError, match="unknown triplet variant"):
        TripletLoss(variant="semi-hard")
    with pytest.raises(ValueError, match="unknown reduction 'avg'"):
        triplet_loss(audio, text, reduction="avg")
    with pytest.raises(ValueError, match=r"\(3, 3\) bool mask"):
        triplet_loss(audio, text, same=torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\(3, 3\) bool mask"):
        info_nce(audio, text, 0.0, same=torch.ones(3, 3))
    with pytest.raises(ValueError, match="logit_scale must be a scalar"):
        info_nce(audio, text, torch.zeros(2))
    with pytest.raises(ValueError, match="temperature must be positive"):
        InfoNCELoss(init_temperature=0.0)


# --- the class-caption loss ------------------------------------------------------------------


def reference_class_caption(audio, class_text, targets, temperature):
    rows = []
    for i in range(len(audio)):
        held = [c for c in range(len(class_text)) if targets[i][c]]
        if not held:
            continue
        logits = [float(audio[i] @ class_text[c]) / temperature for c in range(len(class_text))]
        log_z = math.log(sum(math.exp(v) for v in logits))
        rows.append(-sum((logits[c] - log_z) / len(held) for c in held))
    return sum(rows) / len(rows)


@pytest.mark.parametrize("temperature", [0.05, 0.1, 1.0])
def test_class_caption_loss_matches_reference(temperature):
    audio, _ = unit_pairs(6, 21)
    class_text, _ = unit_pairs(4, 22)
    targets = torch.zeros(6, 4, dtype=torch.bool)
    targets[0, 1] = targets[1, 3] = targets[2, 0] = True
    targets[3, [0, 2]] = True  # a mixture holds two labels: half the probability each
    targets[4, 2] = True  # row 5 holds no listed label and is left out
    expected = reference_class_caption(audio, class_text, targets, temperature)
    got = class_caption_loss(audio, class_text, targets, temperature)
    assert got.item() == pytest.approx(expected, abs=1e-10)


def test_class_caption_loss_falls_as_clips_move_to_their_label():
    class_text = torch.eye(3, dtype=torch.float64)
    targets = torch.eye(3, dtype=torch.bool)
    aligned = class_caption_loss(class_text.clone(), class_text, targets)
    crossed = class_caption_loss(class_text[[1, 2, 0]], class_text, targets)
    assert aligned.item() < 1e-3 < crossed.item()
    # No clip of a listed label: zero, and still a graph to backpropagate through.
    audio = class_text.clone().requires_grad_()
    none = class_caption_loss(audio, class_text, torch.zeros(3, 3, dtype=torch.bool))
    none.backward()
    assert none.item() == 0.0 and torch.equal(audio.grad, torch.zeros_like(audio))


def test_relational_kl_is_zero_at_the_teacher_and_descends_towards_it():
    from earshot.train.heads import relational_kl

    g = torch.Generator().manual_seed(0)
    teacher = F.normalize(torch.randn(32, 8, generator=g), dim=-1)
    sentences = F.normalize(torch.randn(16, 8, generator=g), dim=-1)
    assert relational_kl(teacher, teacher, sentences, 0.05).abs() < 1e-6
    # a map of the teacher's windows, trained on the term alone, comes to rank as it does
    w = torch.nn.Parameter(torch.eye(8) + 0.5 * torch.randn(8, 8, generator=g))
    opt = torch.optim.Adam([w], lr=0.05)
    first = None
    for _ in range(200):
        loss = relational_kl(F.normalize(teacher @ w, dim=-1), teacher, sentences, 0.05)
        first = float(loss) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > 0.1 and float(loss) < 0.1 * first


def test_the_relational_term_needs_a_bank_and_the_teacher_term():
    from earshot.train.heads import HeadSettings, fit_heads

    with pytest.raises(ValueError, match="caption bank"):
        fit_heads(None, None, None, None, HeadSettings(relational=1.0), bank=None)
    with pytest.raises(ValueError, match="distill > 0"):
        fit_heads(
            None, None, None, None, HeadSettings(relational=1.0, distill=0), bank=torch.ones(2, 3)
        )
