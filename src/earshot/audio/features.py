"""Log-mel frontend, numerically PANNs' (torchlibrosa's) own.

PANNs computes a centred, reflect-padded STFT with a periodic Hann window, a power spectrogram,
a Slaney-style mel filterbank (librosa's default) and `10 * log10(max(x, 1e-10))` with no top_db
clipping. We compute the STFT with `torch.stft` (an FFT, not torchlibrosa's DFT-as-convolution)
and build the filterbank ourselves, so neither librosa nor torchlibrosa is needed at run time;
tests hold the result to torchlibrosa's within 1e-3 dB.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from earshot.config import AudioConfig

_DB = math.log(10) / 10  # dB → natural log of power


def power_sum_db(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """10·log10(10^(a/10) + 10^(b/10)), stably: two sounds' log-mel powers summed (a mixture)."""
    return torch.logaddexp(a * _DB, b * _DB) / _DB


AMIN = 1e-10  # PANNs' floor before the log; with ref = 1.0 the dB offset is zero


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    # Slaney's auditory toolbox scale: linear below 1 kHz, logarithmic above.
    f = np.asarray(f, dtype=np.float64)
    f_sp = 200.0 / 3
    mels = f / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    above = f >= min_log_hz
    mels[above] = min_log_mel + np.log(f[above] / min_log_hz) / logstep
    return mels


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp = 200.0 / 3
    freqs = f_sp * m
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    above = m >= min_log_mel
    freqs[above] = min_log_hz * np.exp(logstep * (m[above] - min_log_mel))
    return freqs


def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float
) -> np.ndarray:
    """Slaney-normalised triangular mel filters, as `librosa.filters.mel` builds them by default.

    Returns float32 of shape (n_fft // 2 + 1, n_mels): the layout PANNs stores as `melW`
    (librosa, too, computes in float64 and stores float32).
    """
    fft_freqs = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)
    mel_pts = _mel_to_hz(
        np.linspace(_hz_to_mel(np.array([fmin]))[0], _hz_to_mel(np.array([fmax]))[0], n_mels + 2)
    )
    fdiff = np.diff(mel_pts)
    ramps = mel_pts[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))  # (n_mels, n_bins)
    enorm = 2.0 / (mel_pts[2 : n_mels + 2] - mel_pts[:n_mels])  # equal area per filter
    weights *= enorm[:, None]
    return weights.T.astype(np.float32)


class LogMel(nn.Module):
    """Waveform (batch, samples) at `config.sample_rate` → log-mel (batch, 1, frames, n_mels).

    frames = 1 + samples // hop_length, as with torchlibrosa's centred STFT.
    """

    def __init__(self, config: AudioConfig):
        super().__init__()
        self.config = config
        # Buffers, not parameters: the frontend is fixed and is not saved with the weights.
        self.register_buffer(
            "window",
            torch.hann_window(config.n_fft, periodic=True, dtype=torch.float64),
            persistent=False,
        )
        mel = mel_filterbank(
            config.sample_rate, config.n_fft, config.n_mels, config.fmin, config.fmax
        )
        self.register_buffer("melW", torch.from_numpy(mel.astype(np.float64)), persistent=False)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        # waveform: (batch, samples) float32
        if waveform.dim() != 2:
            raise ValueError(f"LogMel expects (batch, samples), got shape {tuple(waveform.shape)}")
        n_fft = self.config.n_fft
        if waveform.shape[1] <= n_fft // 2:
            raise ValueError(
                f"signal of {waveform.shape[1]} samples is too short for reflect padding "
                f"(needs more than {n_fft // 2}); pad it first"
            )
        # float64 in, float64 throughout: the parity tests use it to check the algorithm exactly,
        # since in float32 bins far below a clip's peak carry rounding noise of ~0.01 dB.
        dtype = torch.float64 if waveform.dtype == torch.float64 else torch.float32
        spec = torch.stft(
            waveform.to(dtype),
            n_fft=n_fft,
            hop_length=self.config.hop_length,
            win_length=n_fft,
            window=self.window.to(dtype),
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )  # (batch, n_fft // 2 + 1, frames)
        power = spec.real.square() + spec.imag.square()
        mel = torch.matmul(power.transpose(1, 2), self.melW.to(dtype))  # (batch, frames, n_mels)
        logmel = 10.0 * torch.log10(torch.clamp(mel, min=AMIN))
        return logmel.unsqueeze(1)  # (batch, 1, frames, n_mels)
