"""Checkpoints in PANNs' own file layout, written from our encoders (needs the dev extra)."""

from __future__ import annotations

from pathlib import Path

import torch

from earshot.encoders.audio import PannsCnn


def panns_frontend():
    """PANNs' Cnn14 frontend from torchlibrosa, built with exactly the arguments PANNs passes."""
    from torchlibrosa.stft import LogmelFilterBank, Spectrogram

    spec = Spectrogram(
        n_fft=1024,
        hop_length=320,
        win_length=1024,
        window="hann",
        center=True,
        pad_mode="reflect",
        freeze_parameters=True,
    )
    logmel = LogmelFilterBank(
        sr=32000,
        n_fft=1024,
        n_mels=64,
        fmin=50,
        fmax=14000,
        ref=1.0,
        amin=1e-10,
        top_db=None,
        freeze_parameters=True,
    )
    return spec, logmel


def panns_checkpoint(encoder: PannsCnn, classes: int = 527, seed: int = 0) -> dict:
    """`{"model": state_dict}` as PANNs saves it: frontend, encoder and `fc_audioset` keys."""
    spec, logmel = panns_frontend()
    gen = torch.Generator().manual_seed(seed)
    state = {f"spectrogram_extractor.{k}": v for k, v in spec.state_dict().items()}
    state |= {f"logmel_extractor.{k}": v for k, v in logmel.state_dict().items()}
    state |= dict(encoder.state_dict())
    state["fc_audioset.weight"] = torch.randn(classes, encoder.embed_dim, generator=gen)
    state["fc_audioset.bias"] = torch.randn(classes, generator=gen)
    return {"model": state}


def write_panns_checkpoint(path: str | Path, encoder: PannsCnn, seed: int = 0) -> Path:
    torch.save(panns_checkpoint(encoder, seed=seed), path)
    return Path(path)
