"""EfficientAT's log-mel front end, numerically its `AugmentMelSTFT` in eval mode.

Upstream (github.com/fschmid56/EfficientAT) computes, in `models/preprocess.py`
`AugmentMelSTFT.forward`, for a mono 32 kHz waveform:

1. a pre-emphasis filter, `conv1d` with the 2-tap kernel [-0.97, 1] (the buffer
   `preemphasis_coefficient` of `AugmentMelSTFT.__init__`): y[n] = x[n + 1] - 0.97 x[n], so the
   signal loses one sample;
2. `torch.stft` with n_fft 1024, hop 320, win_length 800 and a `torch.hann_window(800,
   periodic=False)` (defaults of `AugmentMelSTFT.__init__` and of `inference.py`'s
   `--window_size 800 --hop_size 320`), `center=True` and torch.stft's default `pad_mode`,
   which is "reflect"; torch centres the 800-sample window inside the 1024-sample frame
   (112 zeros either side);
3. the power spectrum, `(x ** 2).sum(-1)` of the real/imaginary pair;
4. a 128-bin mel filterbank from `torchaudio.compliance.kaldi.get_mel_banks(n_mels, n_fft, sr,
   fmin, fmax, vtln_low=100, vtln_high=-500, vtln_warp_factor=1.0)` (no VTLN warping at factor 1),
   which covers the n_fft / 2 = 512 bins below Nyquist, padded with one zero column for the
   Nyquist bin (`torch.nn.functional.pad(mel_basis, (0, 1))`); fmin 0 and fmax None, which
   `AugmentMelSTFT.__init__` turns into sr // 2 - fmax_aug_range // 2 = 16000 - 1000 = 15000 Hz;
   the random fmin/fmax jitter and the frequency/time masking are training-only;
5. `log(x + 1e-5)` and the "fast normalisation" `(x + 4.5) / 5`.

The filterbank is built here (`kaldi_mel_banks`), so torchaudio is not needed; the maths is
Kaldi's (mel = 1127 ln(1 + f / 700), triangles that are linear on the mel axis, peak 1, no area
normalisation, bin k at frequency k * sr / n_fft). In float32 the front end reproduces
upstream's arithmetic step for step (its float32 window and filterbank included), which makes
its output equal to upstream's, not merely close: the float32 filterbank alone differs from the
exact one by up to 1.3e-5, which moves quiet log-mel bins by up to 2e-4.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from earshot.config import AudioConfig

PREEMPHASIS = 0.97  # AugmentMelSTFT.__init__: preemphasis_coefficient = [[[-.97, 1]]]
LOG_OFFSET = 1e-5  # AugmentMelSTFT.forward: (melspec + 0.00001).log()
NORM_SHIFT = 4.5  # AugmentMelSTFT.forward: (melspec + 4.5) / 5.
NORM_SCALE = 5.0


def kaldi_mel_banks(
    n_mels: int,
    n_fft: int,
    sample_rate: float,
    fmin: float,
    fmax: float,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Kaldi-style triangular mel filters below Nyquist: (n_mels, n_fft // 2) in `dtype`.

    The filterbank of torchaudio's `compliance.kaldi.get_mel_banks` with vtln_warp_factor 1.0:
    filter m spans mel points m, m + 1, m + 2 of n_mels + 2 points equally spaced on the mel
    axis (mel = 1127 ln(1 + f / 700)) from mel(fmin) to mel(fmax); its weight at FFT bin k is
    max(0, min(up, down)) of the two linear slopes evaluated at mel(k * sample_rate / n_fft).
    `fmax <= 0` means nyquist + fmax, as in Kaldi. The band edges are Python floats and the
    rest is tensor arithmetic in `dtype`, in the order torchaudio evaluates it, so the default
    float32 gives the very matrix upstream uses (rounding included); float64 is the exact one.
    """
    if n_mels <= 3:
        raise ValueError(f"need more than 3 mel bins, got {n_mels}")
    if n_fft % 2:
        raise ValueError(f"n_fft must be even, got {n_fft}")
    nyquist = 0.5 * sample_rate
    if fmax <= 0.0:
        fmax += nyquist
    if not (0.0 <= fmin < nyquist and 0.0 < fmax <= nyquist and fmin < fmax):
        raise ValueError(f"need 0 <= fmin < fmax <= nyquist, got fmin={fmin}, fmax={fmax}")
    mel_low = 1127.0 * math.log(1.0 + fmin / 700.0)
    mel_high = 1127.0 * math.log(1.0 + fmax / 700.0)
    step = (mel_high - mel_low) / (n_mels + 1)
    m = torch.arange(n_mels, dtype=dtype)[:, None]
    left = mel_low + m * step
    centre = mel_low + (m + 1.0) * step
    right = mel_low + (m + 2.0) * step
    bin_hz = (sample_rate / n_fft) * torch.arange(n_fft // 2, dtype=dtype)
    bin_mel = (1127.0 * torch.log(1.0 + bin_hz / 700.0))[None, :]
    up = (bin_mel - left) / (centre - left)
    down = (right - bin_mel) / (right - centre)
    return torch.clamp(torch.minimum(up, down), min=0.0)


def efficientat_mel_matrix(config: AudioConfig, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The (n_mels, n_fft // 2 + 1) matrix applied to the power spectrum: Kaldi's banks plus a
    zero column for the Nyquist bin, as `AugmentMelSTFT.forward` pads them."""
    banks = kaldi_mel_banks(
        config.n_mels, config.n_fft, config.sample_rate, config.fmin, config.fmax, dtype
    )
    return F.pad(banks, (0, 1))


class EfficientAtLogMel(nn.Module):
    """Waveform (batch, samples) → EfficientAT log-mel (batch, 1, n_mels, frames).

    frames = 1 + (samples - 1) // hop_length (pre-emphasis drops a sample). Frequency runs along
    dim 2, as the MobileNets expect: the transpose of `LogMel`'s (frames, n_mels) layout. fp32
    input computes in fp32 as upstream does; fp64 input computes in fp64 throughout.
    """

    def __init__(self, config: AudioConfig):
        super().__init__()
        if config.frontend != "efficientat":
            raise ValueError(f"EfficientAtLogMel needs frontend='efficientat', got {config}")
        self.config = config
        self.win_length = config.win_length or config.n_fft
        # Buffers, not parameters: fixed, and kept out of the saved weights. The float32 ones
        # are upstream's own values (torch's float32 Hann window, torchaudio's float32
        # filterbank), the float64 ones exact.
        for suffix, dtype in (("", torch.float32), ("64", torch.float64)):
            window = torch.hann_window(self.win_length, periodic=False, dtype=dtype)
            self.register_buffer("window" + suffix, window, persistent=False)
            mel = efficientat_mel_matrix(config, dtype)
            self.register_buffer("mel_basis" + suffix, mel, persistent=False)

    # Rows are computed this many at a time. The spectrogram of one 10 s window at 32 kHz is
    # 4 MB of complex numbers (513 bins x 1,001 frames) and its power 2 MB more: a batch of 8
    # or 16 windows at once runs out of the CPU's caches, and the same arithmetic took ~1.5-2x
    # as long as two windows at a time (`bench/bench_frontend.py`). Each row's numbers are the
    # same either way (tested), so the chunk size is a speed setting only.
    chunk_rows = 2

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        if waveform.dim() != 2:
            raise ValueError(
                f"EfficientAtLogMel expects (batch, samples), got shape {tuple(waveform.shape)}"
            )
        n_fft = self.config.n_fft
        if waveform.shape[1] - 1 <= n_fft // 2:
            raise ValueError(
                f"signal of {waveform.shape[1]} samples is too short for reflect padding "
                f"(needs more than {n_fft // 2 + 1}); pad it first"
            )
        if waveform.dtype == torch.float64:
            window, mel_basis = self.window64, self.mel_basis64
        else:
            window, mel_basis = self.window, self.mel_basis
            waveform = waveform.float()
        window, mel_basis = window.to(waveform.dtype), mel_basis.to(waveform.dtype)
        step = max(1, int(self.chunk_rows))
        if waveform.shape[0] <= step:
            return self._logmel(waveform, window, mel_basis)
        return torch.cat(
            [
                self._logmel(waveform[i : i + step], window, mel_basis)
                for i in range(0, waveform.shape[0], step)
            ]
        )

    def _logmel(
        self, waveform: torch.Tensor, window: torch.Tensor, mel_basis: torch.Tensor
    ) -> torch.Tensor:
        # Upstream's conv1d with [-0.97, 1], as one subtraction: the same float32 numbers
        # (checked bit for bit against conv1d) at a seventh of the cost.
        x = waveform[:, 1:] - PREEMPHASIS * waveform[:, :-1]
        spec = torch.stft(
            x,
            n_fft=self.config.n_fft,
            hop_length=self.config.hop_length,
            win_length=self.win_length,
            window=window,
            center=True,
            pad_mode="reflect",
            normalized=False,
            return_complex=True,
        )  # (batch, n_fft // 2 + 1, frames)
        # = upstream's (view_as_real(spec) ** 2).sum(-1), bit for bit, without the strided sum
        power = spec.real.square() + spec.imag.square()
        with torch.autocast(device_type=power.device.type, enabled=False):  # as upstream
            mel = torch.matmul(mel_basis, power)  # (batch, n_mels, frames)
        logmel = (torch.log(mel + LOG_OFFSET) + NORM_SHIFT) / NORM_SCALE
        return logmel.unsqueeze(1)


def build_frontend(audio: AudioConfig) -> nn.Module:
    """The front end `audio.frontend` names: "panns" → `LogMel`, "efficientat" →
    `EfficientAtLogMel`, "clap" / "clap_htk" → `encoders.clap.ClapFrontend`."""
    if audio.frontend == "efficientat":
        return EfficientAtLogMel(audio)
    if audio.frontend == "panns":
        from earshot.audio.features import LogMel

        if audio.win_length not in (None, audio.n_fft):
            raise ValueError(
                f"the panns frontend windows with n_fft samples; got win_length "
                f"{audio.win_length} for n_fft {audio.n_fft}"
            )
        return LogMel(audio)
    if audio.frontend in ("clap", "clap_htk"):  # transformers' ClapFeatureExtractor
        from earshot.encoders.clap import ClapFrontend

        return ClapFrontend(audio)
    raise ValueError(f"unknown audio frontend '{audio.frontend}'; known: efficientat, panns, clap")
