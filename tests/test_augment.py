"""Augmentation: shapes, replay from a seed, the documented ranges, and PANNs' stripe statistics."""

from __future__ import annotations

import math
import time

import pytest
import torch
import torch.nn.functional as F

from earshot.train.augment import (
    filter_augment,
    frequency_shift,
    mix_background,
    mixup,
    random_gain,
    random_time_shift,
    spec_augment,
)
from earshot.train.losses import info_nce


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def positive_logmel(batch: int = 4, frames: int = 101, bins: int = 64) -> torch.Tensor:
    """(batch, 1, frames, bins) with no zeros, so every zero is a dropped cell."""
    return torch.rand(batch, 1, frames, bins, generator=gen(99)) + 1.0


def zero_rows_and_cols(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per example, which frames and which bins are entirely zero: (batch, T), (batch, F)."""
    zero = out[:, 0] == 0  # (batch, T, F)
    return zero.all(dim=2), zero.all(dim=1)


def test_spec_augment_keeps_shape_and_input():
    x = positive_logmel()
    before = x.clone()
    out = spec_augment(x, gen())
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(x, before)  # not in place, unlike DropStripes


def test_spec_augment_replays_from_the_seed():
    x = positive_logmel()
    assert torch.equal(spec_augment(x, gen(1)), spec_augment(x, gen(1)))
    assert not torch.equal(spec_augment(x, gen(1)), spec_augment(x, gen(2)))


@pytest.mark.parametrize(("width", "stripes"), [(64, 2), (8, 2), (5, 3), (1, 4)])
def test_spec_augment_zeroes_only_whole_stripes_within_limits(width, stripes):
    x = positive_logmel(batch=16)
    out = spec_augment(x, gen(width), width, stripes, width // 2, stripes)
    frames, bins = zero_rows_and_cols(out)
    # Every zero lies in a dropped frame or a dropped bin; everything else is untouched.
    dropped = frames[:, None, :, None] | bins[:, None, None, :]
    assert torch.equal(out == 0, dropped.expand_as(out))
    assert torch.equal(out[~dropped.expand_as(out)], x[~dropped.expand_as(out)])
    assert (frames.sum(dim=1) <= stripes * (width - 1)).all()
    assert (bins.sum(dim=1) <= stripes * max(width // 2 - 1, 0)).all()
    assert not frames[:, -1].any() and not bins[:, -1].any()  # DropStripes never reaches the end


def test_spec_augment_drops_something_with_the_defaults():
    out = spec_augment(positive_logmel(batch=8), gen(3))
    frames, bins = zero_rows_and_cols(out)
    assert frames.any() and bins.any()


@pytest.mark.parametrize(
    "settings",
    [
        {"time_drop_width": 0, "freq_drop_width": 0},
        {"time_stripes_num": 0, "freq_stripes_num": 0},
        {"time_drop_width": 1, "freq_drop_width": 1},  # widths drawn from [0, 1): always 0
    ],
)
def test_spec_augment_identity(settings):
    x = positive_logmel()
    assert torch.equal(spec_augment(x, gen(), **settings), x)


def test_spec_augment_caps_a_width_longer_than_the_axis():
    x = positive_logmel(frames=10, bins=4)
    out = spec_augment(x, gen(), time_drop_width=64, freq_drop_width=8)
    frames, bins = zero_rows_and_cols(out)
    assert not frames[:, -1].any() and not bins[:, -1].any()


def test_spec_augment_matches_torchlibrosa_statistics():
    """How often each frame is dropped, ours against DropStripes, over many examples."""
    augmentation = pytest.importorskip("torchlibrosa.augmentation")
    batch, frames, width, stripes = 2000, 24, 7, 2
    x = torch.ones(batch, 1, frames, 1)
    ours = spec_augment(x, gen(5), width, stripes, 0, 0)[:, 0, :, 0] == 0
    with torch.random.fork_rng():  # DropStripes uses the global RNG
        torch.manual_seed(5)
        theirs = augmentation.DropStripes(dim=2, drop_width=width, stripes_num=stripes)(x.clone())
    theirs = theirs[:, 0, :, 0] == 0
    # Per-frame drop rate ~0.2; its standard error over 2000 examples is ~0.009.
    torch.testing.assert_close(ours.double().mean(0), theirs.double().mean(0), atol=0.04, rtol=0)
    assert ours.sum(1).double().mean().item() == pytest.approx(
        theirs.sum(1).double().mean().item(), rel=0.05
    )


def test_spec_augment_is_fast_on_a_cnn14_batch():
    x = torch.randn(32, 1, 1001, 64)
    spec_augment(x, gen())  # warm-up
    start = time.perf_counter()
    spec_augment(x, gen())
    assert time.perf_counter() - start < 0.5


def test_spec_augment_refuses_bad_input():
    with pytest.raises(ValueError, match=r"\(batch, channels, frames, mel_bins\)"):
        spec_augment(torch.zeros(2, 10, 8), gen())
    with pytest.raises(ValueError, match="time_drop_width must be >= 0"):
        spec_augment(positive_logmel(), gen(), time_drop_width=-1)


@pytest.mark.parametrize("alpha", [0.2, 1.0, 4.0])
def test_mixup_is_a_convex_combination(alpha):
    x = torch.randn(6, 3, 5, generator=gen(7))
    mixed, perm, lam = mixup(x, gen(8), alpha)
    assert mixed.shape == x.shape
    assert sorted(perm.tolist()) == list(range(6))
    assert 0.0 <= lam <= 1.0
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * x[perm])


def test_mixup_replays_from_the_seed():
    x = torch.randn(8, 4, generator=gen(7))
    a, b = mixup(x, gen(9)), mixup(x, gen(9))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2] == b[2]
    assert mixup(x, gen(10))[2] != a[2]


def test_mixup_lambda_follows_beta():
    # Beta(a, a) has mean 1/2 and variance 1 / (4 (2a + 1)); 400 draws pin both loosely.
    g = gen(11)
    x = torch.zeros(2, 1)
    lams = torch.tensor([mixup(x, g, alpha=0.5)[2] for _ in range(400)], dtype=torch.float64)
    assert lams.mean().item() == pytest.approx(0.5, abs=0.05)
    assert lams.var().item() == pytest.approx(1 / (4 * 2), rel=0.2)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mixup_weighted_info_nce_is_soft_target_cross_entropy(seed):
    """The recipe in mixup's docstring, against the soft targets it claims to implement."""
    batch = 6
    _, perm, lam = mixup(torch.zeros(batch, 1), gen(seed), alpha=1.0)
    g = gen(seed + 100)
    audio = F.normalize(torch.randn(batch, 8, generator=g, dtype=torch.float64), dim=1)
    text = F.normalize(torch.randn(batch, 8, generator=g, dtype=torch.float64), dim=1)
    recipe = lam * info_nce(audio, text, 2.0) + (1 - lam) * info_nce(audio, text[perm], 2.0)

    rows = torch.arange(batch)
    audio_targets = torch.zeros(batch, batch, dtype=torch.float64)  # mixed clip -> captions
    audio_targets[rows, rows] += lam
    audio_targets[rows, perm] += 1 - lam
    text_targets = audio_targets.T  # caption k -> the clips that contain its sound
    logits = math.exp(2.0) * audio @ text.T
    soft = (F.cross_entropy(logits, audio_targets) + F.cross_entropy(logits.T, text_targets)) / 2
    torch.testing.assert_close(recipe, soft)


def test_mixup_alpha_zero_does_not_mix():
    x = torch.randn(5, 3, generator=gen(12))
    mixed, _, lam = mixup(x, gen(), alpha=0.0)
    assert lam == 1.0 and torch.equal(mixed, x)
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        mixup(x, gen(), alpha=-1.0)


def waves(batch: int = 8, samples: int = 1000) -> torch.Tensor:
    return torch.randn(batch, samples, generator=gen(13))


def test_random_gain_stays_in_range():
    x = waves(batch=64)
    out = random_gain(x, gen(14), min_db=-6.0, max_db=3.0)
    assert out.shape == x.shape
    gain_db = 20 * torch.log10(out[:, 0] / x[:, 0])
    assert (gain_db >= -6.0 - 1e-4).all() and (gain_db <= 3.0 + 1e-4).all()
    assert gain_db.max() - gain_db.min() > 4.0  # spread over the range, not one value
    torch.testing.assert_close(out / x, (out[:, :1] / x[:, :1]).expand_as(x))  # one gain per row
    assert torch.equal(out, random_gain(x, gen(14), min_db=-6.0, max_db=3.0))
    with pytest.raises(ValueError, match="min_db <= max_db"):
        random_gain(x, gen(), min_db=6.0, max_db=-6.0)


def test_random_time_shift_rolls_each_row_within_range():
    sample_rate, max_shift_s = 100, 0.3  # up to 30 samples
    x = torch.arange(20 * 200, dtype=torch.float32).reshape(20, 200)
    out = random_time_shift(x, gen(15), max_shift_s, sample_rate)
    assert out.shape == x.shape
    shifts = set()
    for row, rolled in zip(x, out, strict=True):
        matches = [s for s in range(-30, 31) if torch.equal(torch.roll(row, s), rolled)]
        assert len(matches) == 1
        shifts.update(matches)
    assert len(shifts) > 5
    assert torch.equal(out, random_time_shift(x, gen(15), max_shift_s, sample_rate))
    assert torch.equal(random_time_shift(x, gen(15), 0.0, sample_rate), x)
    with pytest.raises(ValueError, match="max_shift_s >= 0"):
        random_time_shift(x, gen(), -1.0, sample_rate)


def measured_snr_db(clean: torch.Tensor, noisy: torch.Tensor) -> torch.Tensor:
    noise = (noisy - clean).double()
    return 10 * torch.log10(clean.double().pow(2).mean(1) / noise.pow(2).mean(1))


@pytest.mark.parametrize("noise_rows", [1, 8])
def test_mix_background_snr_in_range(noise_rows):
    x = waves() * torch.linspace(0.01, 2.0, 8)[:, None]  # different levels per clip
    noise = 0.3 * torch.randn(noise_rows, 1000, generator=gen(16))
    out = mix_background(x, noise, gen(17), snr_db_range=(5.0, 30.0))
    assert out.shape == x.shape
    snr = measured_snr_db(x, out)
    assert (snr >= 5.0 - 1e-3).all() and (snr <= 30.0 + 1e-3).all()
    assert snr.max() - snr.min() > 3.0
    fixed = mix_background(x, noise, gen(18), snr_db_range=(12.0, 12.0))
    torch.testing.assert_close(measured_snr_db(x, fixed), torch.full((8,), 12.0).double())
    assert torch.equal(out, mix_background(x, noise, gen(17), snr_db_range=(5.0, 30.0)))


def test_mix_background_leaves_silence_alone():
    x = waves(batch=2)
    x[0] = 0
    out = mix_background(x, torch.randn(2, 1000, generator=gen(19)), gen())
    assert torch.equal(out[0], x[0])
    assert torch.equal(mix_background(x, torch.zeros(1, 1000), gen()), x)


def test_mix_background_refuses_mismatched_noise():
    with pytest.raises(ValueError, match=r"crop or loop it"):
        mix_background(waves(), torch.randn(1, 999), gen())
    with pytest.raises(ValueError, match=r"crop or loop it"):
        mix_background(waves(), torch.randn(3, 1000), gen())
    with pytest.raises(ValueError, match="low <= high"):
        mix_background(waves(), torch.randn(1, 1000), gen(), snr_db_range=(30.0, 5.0))
    with pytest.raises(ValueError, match=r"\(batch, samples\)"):
        mix_background(torch.zeros(1000), torch.zeros(1, 1000), gen())


def test_waveform_augmentations_run_on_float64_too():
    x = waves().double()
    for out in (
        random_gain(x, gen()),
        random_time_shift(x, gen(), 0.1, 1000),
        mix_background(x, torch.randn(1, 1000, dtype=torch.float64), gen()),
    ):
        assert out.dtype == torch.float64 and torch.isfinite(out).all()
    assert not math.isnan(mixup(x, gen())[2])


# --- log-mel (dB) changes of the recording chain -------------------------------------------


def test_filter_augment_adds_one_piecewise_linear_curve_per_example():
    x = torch.randn(16, 20, 64, generator=gen(3)) * 10 - 40
    out = filter_augment(x, gen(), max_db=6.0)
    assert out.shape == x.shape and not torch.equal(out, x)
    curve = out - x  # (batch, frames, bins): the same curve in every frame
    assert (curve - curve[:, :1]).abs().max() < 1e-4
    curve = curve[:, 0].double()
    assert curve.abs().max() <= 6.0 + 1e-4
    # Piecewise linear with 2 to 5 pieces: 1 to 4 inner points, each between two bins, so the
    # second difference is non-zero at no more than 8 of the 62 places (else it is a curve).
    kinks = (curve.diff(dim=1).diff(dim=1).abs() > 1e-3).sum(dim=1)
    assert (kinks <= 8).all(), kinks
    # The curves differ between examples and use the range both ways.
    assert curve.std(dim=0).mean() > 1.0
    assert curve.max() > 3.0 and curve.min() < -3.0


def test_filter_augment_replays_and_zero_db_is_identity():
    x = torch.randn(4, 5, 32, generator=gen(1))
    assert torch.equal(filter_augment(x, gen(5), 6.0), filter_augment(x, gen(5), 6.0))
    assert not torch.equal(filter_augment(x, gen(5), 6.0), filter_augment(x, gen(6), 6.0))
    assert torch.equal(filter_augment(x, gen(), 0.0), x)


def test_frequency_shift_moves_bins_and_repeats_the_edge():
    bins = 64
    x = torch.arange(bins, dtype=torch.float32).expand(32, 3, bins).clone()
    out = frequency_shift(x, gen(), max_bins=3)
    shifts = set()
    for row in out[:, 0]:
        s = int(row[bins // 2] - bins // 2) * -1  # bin 32 now holds bin 32 - s
        assert -3 <= s <= 3
        expected = (torch.arange(bins) - s).clamp(0, bins - 1).float()
        assert torch.equal(row, expected)
        shifts.add(s)
    assert len(shifts) >= 5  # most of the 7 shifts occur in 32 draws
    assert torch.equal(frequency_shift(x, gen(), 0), x)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: filter_augment(torch.zeros(2, 64), gen(), 6.0), "batch, frames, mel_bins"),
        (lambda: filter_augment(torch.zeros(2, 3, 64), gen(), -1.0), "max_db >= 0"),
        (lambda: filter_augment(torch.zeros(2, 3, 64), gen(), 6.0, (1, 3)), "points"),
        (lambda: frequency_shift(torch.zeros(2, 3, 64), gen(), -1), "max_bins >= 0"),
        (lambda: frequency_shift(torch.zeros(1, 2, 3, 64), gen(), 2), "batch, frames"),
    ],
)
def test_log_mel_augmentations_refuse_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()
