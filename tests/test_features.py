"""The log-mel frontend against torchlibrosa, the frontend PANNs itself runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from earshot.audio.features import LogMel, mel_filterbank
from earshot.audio.io import load
from earshot.config import AudioConfig

pytest.importorskip("torchlibrosa", reason="torchlibrosa is a dev extra")

CFG = AudioConfig()


@pytest.fixture(scope="module")
def panns_frontend():
    """PANNs' Cnn14 frontend (torchlibrosa), built with exactly the arguments PANNs passes."""
    from earshot.testing.panns import panns_frontend as build

    spec, logmel = build()

    @torch.no_grad()
    def run(x: torch.Tensor) -> torch.Tensor:
        return logmel(spec(x))

    return run


def test_filterbank_equals_librosa():
    librosa = pytest.importorskip("librosa")
    ref = librosa.filters.mel(sr=32000, n_fft=1024, n_mels=64, fmin=50, fmax=14000).T
    ours = mel_filterbank(32000, 1024, 64, 50, 14000)
    assert ours.shape == (513, 64) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-8)


def test_shape_and_frames():
    x = torch.randn(3, 32000 * 10)
    out = LogMel(CFG)(x)
    assert out.shape == (3, 1, 1001, 64)  # 1 + samples // hop, as PANNs
    assert out.dtype == torch.float32


def test_silence_is_floor_not_minus_infinity():
    out = LogMel(CFG)(torch.zeros(1, 32000))
    assert torch.all(out == -100.0)  # 10*log10(1e-10): PANNs' amin, no top_db clipping


def test_rejects_bad_shapes():
    with pytest.raises(ValueError, match="batch, samples"):
        LogMel(CFG)(torch.zeros(32000))
    with pytest.raises(ValueError, match="too short"):
        LogMel(CFG)(torch.zeros(1, 100))


def signals(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(32000 * 4) / 32000
    return {
        "white": 0.1 * rng.standard_normal(32000 * 10),
        "loud": rng.uniform(-1, 1, 32000 * 3),
        "quiet": 1e-4 * rng.standard_normal(32000 * 2),
        "chirp": 0.5 * np.sin(2 * np.pi * (100 + 2000 * t) * t)
        + 0.01 * rng.standard_normal(t.size),
        "odd_length": 0.2 * rng.standard_normal(32000 + 317),
    }


def exact_reference(x: np.ndarray) -> np.ndarray:
    """PANNs' log-mel computed in float64 with librosa: what torchlibrosa approximates.

    torchlibrosa itself is no float64 reference: its DFT matrices are stored as float32.
    """
    librosa = pytest.importorskip("librosa")
    stft = librosa.stft(
        x,
        n_fft=1024,
        hop_length=320,
        window="hann",
        center=True,
        pad_mode="reflect",
        dtype=np.complex128,
    )  # (513, frames)
    # melW in float32, as librosa builds it and PANNs stores it
    mel_w = librosa.filters.mel(sr=32000, n_fft=1024, n_mels=64, fmin=50, fmax=14000)
    mel = mel_w.astype(np.float64) @ (np.abs(stft) ** 2)
    return 10.0 * np.log10(np.maximum(mel, 1e-10)).T  # (frames, 64)


@pytest.mark.parametrize("name", list(signals()))
def test_float64_equals_exact_reference_every_bin(name):
    """Same algorithm: in float64 every bin agrees, whatever its level."""
    x = signals()[name]
    ours = LogMel(CFG)(torch.from_numpy(x)[None])
    assert ours.dtype == torch.float64
    ref = exact_reference(x)
    assert ours.shape[2:] == ref.shape
    assert np.abs(ours[0, 0].numpy() - ref).max() <= 1e-5


@pytest.mark.parametrize("name", ["white", "loud", "quiet", "odd_length"])
def test_float32_parity_random_signals(panns_frontend, name):
    x = torch.from_numpy(signals()[name].astype(np.float32))[None]
    diff = (LogMel(CFG)(x) - panns_frontend(x)).abs().max().item()
    assert diff <= 1e-3, f"max |ours - torchlibrosa| = {diff:.2e} dB"


def _real_files(shared_data, n_each: int = 4):
    picks = []
    for folder, pattern in [
        ("urbansound8k-derived", "*.ogg"),
        ("fsdd", "*.flac"),
        ("librosa-examples", "*.ogg"),
    ]:
        found = sorted((shared_data / folder).rglob(pattern))
        picks += found[:: max(1, len(found) // n_each)][:n_each]
    assert picks, f"no audio found under {shared_data}"
    return picks


@pytest.mark.realdata
def test_parity_on_real_recordings(panns_frontend, shared_data):
    for path in _real_files(shared_data):
        wave = load(path, 32000)[: 32000 * 30]
        x32 = torch.from_numpy(wave)[None]
        ours32, ref32 = LogMel(CFG)(x32), panns_frontend(x32)
        # float32: agree in every bin within 60 dB of the clip's loudest bin; below that both
        # implementations carry float32 rounding noise (checked against float64 below).
        audible = ref32 > ref32.max() - 60.0
        d32 = (ours32 - ref32).abs()[audible].max().item()
        assert d32 <= 1e-3, f"{path.name}: {d32:.2e} dB"
        x64 = x32.double()
        d64 = np.abs(LogMel(CFG)(x64)[0, 0].numpy() - exact_reference(x64[0].numpy())).max()
        assert d64 <= 1e-5, f"{path.name}: float64 {d64:.2e} dB"
