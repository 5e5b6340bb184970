"""Training-time audio augmentation: SpecAugment on log-mel, mixup, and waveform tweaks.

Also two log-mel (dB) changes of the recording chain rather than the sound: a random smooth
equaliser (`filter_augment`) and a shift along the mel axis (`frequency_shift`).

Every function draws its randomness from an explicit `torch.Generator`, so a run is reproduced
by seeding one generator, whatever else touches torch's global RNG. Random numbers are drawn
on the generator's device and moved to the data's, so a CPU generator drives GPU batches.
Nothing is modified in place: each function returns a new tensor.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def spec_augment(
    logmel: Tensor,
    generator: torch.Generator,
    time_drop_width: int = 64,
    time_stripes_num: int = 2,
    freq_drop_width: int = 8,
    freq_stripes_num: int = 2,
) -> Tensor:
    """Zero random time and frequency stripes, as PANNs' SpecAugmentation does.

    logmel: (batch, channels, frames, mel_bins) -> same shape. Defaults are CNN14's training
    settings. Per example, `time_stripes_num` stripes of frames and then `freq_stripes_num`
    stripes of mel bins are zeroed; each stripe's width is uniform in [0, drop_width) and its
    start uniform in [0, length - width), like torchlibrosa's DropStripes (which is why the last
    frame and the last bin are never zeroed). Stripes may overlap. Unlike DropStripes this does
    not edit its input in place and has no train/eval switch: the training loop decides when
    to call it. A drop width larger than the axis is capped at the axis length, where
    DropStripes would fail; a width or count of 0 leaves that axis alone.
    """
    if logmel.ndim != 4:
        raise ValueError(
            f"spec_augment needs log-mel of shape (batch, channels, frames, mel_bins), got "
            f"{tuple(logmel.shape)}"
        )
    for name, value in [
        ("time_drop_width", time_drop_width),
        ("time_stripes_num", time_stripes_num),
        ("freq_drop_width", freq_drop_width),
        ("freq_stripes_num", freq_stripes_num),
    ]:
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    batch, _, frames, bins = logmel.shape
    drop_frames = _stripes(batch, frames, time_drop_width, time_stripes_num, generator)
    drop_bins = _stripes(batch, bins, freq_drop_width, freq_stripes_num, generator)
    dropped = drop_frames[:, None, :, None] | drop_bins[:, None, None, :]  # (batch, 1, T, F)
    # masked_fill rather than a multiply: a stripe is exactly 0 even where logmel is -inf.
    return logmel.masked_fill(dropped.to(logmel.device), 0.0)


def _stripes(
    batch: int, length: int, drop_width: int, stripes_num: int, generator: torch.Generator
) -> Tensor:
    """(batch, length) bool, True inside any of each row's `stripes_num` random stripes."""
    device = generator.device
    positions = torch.arange(length, device=device)
    max_width = min(drop_width, length)  # start is drawn from [0, length - width): needs >= 1
    if max_width == 0 or stripes_num == 0:
        return torch.zeros(batch, length, dtype=torch.bool, device=device)
    widths = torch.randint(
        0, max_width, (batch, stripes_num, 1), generator=generator, device=device
    )
    # torch.randint takes one upper bound for all draws; floor(u * n) is uniform on [0, n).
    u = torch.rand(batch, stripes_num, 1, generator=generator, device=device, dtype=torch.float64)
    starts = (u * (length - widths)).long().clamp(max=length - 1)
    inside = (positions >= starts) & (positions < starts + widths)  # (batch, stripes, length)
    return inside.any(dim=1)


def mixup(
    x: Tensor, generator: torch.Generator, alpha: float = 1.0
) -> tuple[Tensor, Tensor, float]:
    """Mix each example with a partner from a random permutation of the batch.

    x: (batch, ...) -> mixed: same shape, mixed[i] = lam * x[i] + (1 - lam) * x[perm[i]];
    perm: (batch,) long on x's device; lam: float ~ Beta(alpha, alpha), one per batch (as in
    Zhang et al.'s reference code), so that the loss can be combined with plain float weights.
    alpha = 0 means no mixing (lam = 1). An example may be its own partner.

    For contrastive training, mixed clip i contains clip i's sound with weight lam and clip
    perm[i]'s with 1 - lam, so it should match caption i and caption perm[i] in that ratio::

        mixed, perm, lam = mixup(waves, generator)
        a = model.embed_audio(mixed)  # (batch, dim); t: the captions' (batch, dim)
        loss = lam * loss_fn(a, t) + (1 - lam) * loss_fn(a, t[perm])

    For InfoNCE this is exactly the cross-entropy with soft targets (lam on text i,
    1 - lam on text perm[i]; and for text k, lam on mixed k and 1 - lam on the clip it was mixed
    into), because cross-entropy is linear in its targets and a permutation of the candidates
    does not change a softmax. A `same` mask passed with the first term becomes `same[:, perm]`
    for the second.
    """
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"mixup needs a non-empty batch (batch, ...), got {tuple(x.shape)}")
    if alpha < 0:
        raise ValueError(f"mixup alpha must be >= 0 (0 disables mixing), got {alpha}")
    perm = torch.randperm(x.shape[0], generator=generator, device=generator.device)
    perm = perm.to(x.device)
    if alpha == 0:
        lam = 1.0
    else:
        # torch's Beta sampler takes no generator: seed numpy's from it so the run replays.
        seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
        lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    return lam * x + (1 - lam) * x[perm], perm, lam


def _check_waves(wave: Tensor, what: str) -> None:
    if wave.ndim != 2:
        raise ValueError(
            f"{what} needs waveforms of shape (batch, samples), got {tuple(wave.shape)}"
        )


def _uniform(low: float, high: float, batch: int, generator: torch.Generator) -> Tensor:
    """(batch,) float64 uniform on [low, high), on the generator's device."""
    u = torch.rand(batch, generator=generator, device=generator.device, dtype=torch.float64)
    return low + (high - low) * u


def random_gain(
    wave: Tensor, generator: torch.Generator, min_db: float = -6.0, max_db: float = 6.0
) -> Tensor:
    """Scale each example by a gain drawn uniformly in decibels from [min_db, max_db].

    wave: (batch, samples) -> same shape. No clipping: the log-mel front end takes any level.
    """
    _check_waves(wave, "random_gain")
    if min_db > max_db:
        raise ValueError(f"random_gain needs min_db <= max_db, got {min_db} > {max_db}")
    gain_db = _uniform(min_db, max_db, wave.shape[0], generator)
    gain = (10 ** (gain_db / 20)).to(device=wave.device, dtype=wave.dtype)
    return wave * gain[:, None]


def random_time_shift(
    wave: Tensor, generator: torch.Generator, max_shift_s: float, sample_rate: int
) -> Tensor:
    """Roll each example circularly by a whole number of samples in [-max, +max].

    wave: (batch, samples) -> same shape; max = round(max_shift_s * sample_rate). Circular, so
    no sound is lost and no silence is invented: a clip's content just starts elsewhere.
    """
    _check_waves(wave, "random_time_shift")
    if max_shift_s < 0 or sample_rate <= 0:
        raise ValueError(
            f"random_time_shift needs max_shift_s >= 0 and sample_rate > 0, got "
            f"{max_shift_s} and {sample_rate}"
        )
    batch, samples = wave.shape
    max_shift = round(max_shift_s * sample_rate)
    shifts = torch.randint(
        -max_shift, max_shift + 1, (batch, 1), generator=generator, device=generator.device
    ).to(wave.device)
    # torch.roll takes one shift for the whole tensor; gathering does one per row.
    source = (torch.arange(samples, device=wave.device) - shifts) % samples  # (batch, samples)
    return wave.gather(1, source)


def mix_background(
    wave: Tensor,
    noise: Tensor,
    generator: torch.Generator,
    snr_db_range: tuple[float, float] = (5.0, 30.0),
) -> Tensor:
    """Add background noise to each example at an SNR drawn uniformly from snr_db_range (dB).

    wave: (batch, samples); noise: (batch, samples) or (1, samples), shared by every example;
    returns (batch, samples). SNR = 10 log10(mean(wave^2) / mean(scaled_noise^2)) per example,
    over the whole clip. A silent clip or silent noise gets no noise (the SNR is undefined).
    Noise must already have the clip's length: cropping or looping it is the data loader's call.
    """
    _check_waves(wave, "mix_background")
    _check_waves(noise, "mix_background's noise")
    batch, samples = wave.shape
    if noise.shape[0] not in (1, batch) or noise.shape[1] != samples:
        raise ValueError(
            f"noise must have shape ({batch}, {samples}) or (1, {samples}) to match the "
            f"waveforms, got {tuple(noise.shape)}; crop or loop it to the clip length first"
        )
    low, high = snr_db_range
    if low > high:
        raise ValueError(f"snr_db_range must be (low, high) with low <= high, got {snr_db_range}")
    snr_db = _uniform(low, high, batch, generator).to(wave.device)
    # Powers in float64: a quiet clip's mean square in float32 loses the SNR's last digits.
    signal_power = wave.double().pow(2).mean(dim=1)  # (batch,)
    noise_power = noise.double().pow(2).mean(dim=1)  # (batch,) or (1,)
    wanted_noise_power = signal_power / 10 ** (snr_db / 10)
    scale = torch.where(
        noise_power > 0, (wanted_noise_power / noise_power.clamp(min=1e-300)).sqrt(), 0.0
    )
    return wave + noise * scale[:, None].to(wave.dtype)


def _check_logmel(logmel: Tensor, what: str) -> None:
    if logmel.ndim != 3:
        raise ValueError(
            f"{what} needs log-mel of shape (batch, frames, mel_bins), got {tuple(logmel.shape)}"
        )


def filter_augment(
    logmel_db: Tensor, generator: torch.Generator, max_db: float, points: tuple[int, int] = (3, 6)
) -> Tensor:
    """Add a random smooth equaliser curve to each example: FilterAugment's linear type.

    logmel_db: (batch, frames, mel_bins) in dB -> same shape. Per example, k points (k uniform
    in [points[0], points[1]]) are placed on the mel axis: the two ends plus k - 2 random bins;
    each gets a gain uniform in [-max_db, max_db] and the curve is linear between them (Nam et
    al., "FilterAugment", ICASSP 2022). What it imitates: another microphone, another room,
    another distance, which shift a clip's spectral balance without changing what it is.
    """
    _check_logmel(logmel_db, "filter_augment")
    low, high = points
    if max_db < 0 or not 2 <= low <= high:
        raise ValueError(
            f"filter_augment needs max_db >= 0 and 2 <= points[0] <= points[1], got {max_db} "
            f"and {points}"
        )
    batch, _, bins = logmel_db.shape
    device = generator.device
    grid = np.arange(bins, dtype=np.float64)
    curves = np.empty((batch, bins))
    for i in range(batch):
        k = int(torch.randint(low, high + 1, (1,), generator=generator, device=device))
        inner = torch.rand(k - 2, generator=generator, device=device, dtype=torch.float64)
        at = np.concatenate([[0.0], np.sort(inner.cpu().numpy()) * (bins - 1), [bins - 1.0]])
        gains = _uniform(-max_db, max_db, k, generator).cpu().numpy()
        curves[i] = np.interp(grid, at, gains)
    curve = torch.from_numpy(curves).to(device=logmel_db.device, dtype=logmel_db.dtype)
    return logmel_db + curve[:, None, :]


def frequency_shift(logmel: Tensor, generator: torch.Generator, max_bins: int) -> Tensor:
    """Shift each example along the mel axis by a whole number of bins in [-max, +max].

    logmel: (batch, frames, mel_bins) -> same shape. The bins shifted in at the edge repeat the
    edge bin (nothing wraps round from the other end of the spectrum). A shift of a few mel bins
    is roughly a pitch shift of a few semitones above 1 kHz: another engine speed, another voice.
    """
    _check_logmel(logmel, "frequency_shift")
    if max_bins < 0:
        raise ValueError(f"frequency_shift needs max_bins >= 0, got {max_bins}")
    batch, _, bins = logmel.shape
    shifts = torch.randint(
        -max_bins, max_bins + 1, (batch, 1), generator=generator, device=generator.device
    ).to(logmel.device)
    source = (torch.arange(bins, device=logmel.device) - shifts).clamp(0, bins - 1)  # (batch, F)
    return logmel.gather(2, source[:, None, :].expand_as(logmel))
