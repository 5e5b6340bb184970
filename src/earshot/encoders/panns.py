"""Load PANNs checkpoints (e.g. `Cnn14_mAP=0.431.pth`) into earshot's audio encoder.

PANNs saves `{"model": state_dict}` where the state dict also holds its frontend
(`spectrogram_extractor.*`, `logmel_extractor.melW`) and its AudioSet classifier
(`fc_audioset.*`). Our encoder keeps PANNs' names for everything else, so the conversion is a
filter, plus a check that the checkpoint's frontend is the one we compute.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from earshot.audio.features import mel_filterbank
from earshot.config import AudioConfig
from earshot.errors import CheckpointMismatchError, ModelLoadError

# Parts of a PANNs model that earshot does not take from the checkpoint: the frontend is
# recomputed (and checked against the checkpoint's), the AudioSet classifier is not used.
DROPPED_PREFIXES = ("spectrogram_extractor.", "logmel_extractor.", "fc_audioset.")


def convert_panns_state_dict(
    checkpoint: Mapping[str, object], audio: AudioConfig, source: str = "<checkpoint>"
) -> dict[str, torch.Tensor]:
    """PANNs checkpoint (or its bare state dict) → state dict for `PannsCnn`. Pure: no I/O."""
    state = checkpoint.get("model", checkpoint)
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise ModelLoadError(
            f"'{source}' is not a PANNs checkpoint: expected {{'model': state_dict}}"
        )
    # Checkpoints saved from nn.DataParallel carry a 'module.' prefix on every key.
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    _check_frontend(state, audio, source)
    return {k: v for k, v in state.items() if not k.startswith(DROPPED_PREFIXES)}


def _check_frontend(state: Mapping[str, torch.Tensor], audio: AudioConfig, source: str) -> None:
    mel = state.get("logmel_extractor.melW")
    if mel is not None:
        ours = mel_filterbank(audio.sample_rate, audio.n_fft, audio.n_mels, audio.fmin, audio.fmax)
        if tuple(mel.shape) != ours.shape or not np.allclose(mel.float().numpy(), ours, atol=1e-6):
            raise ModelLoadError(
                f"'{source}' was trained with another log-mel frontend (melW {tuple(mel.shape)}) "
                f"than this model's ({audio.sample_rate} Hz, n_fft {audio.n_fft}, "
                f"{audio.n_mels} mels, {audio.fmin:g}-{audio.fmax:g} Hz); set the model's audio "
                f"config to the checkpoint's"
            )
    stft = state.get("spectrogram_extractor.stft.conv_real.weight")
    if stft is not None and stft.shape[-1] != audio.n_fft:
        raise ModelLoadError(
            f"'{source}' uses n_fft {stft.shape[-1]}, the model's audio config says {audio.n_fft}"
        )


def check_state_dict(
    model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str
) -> None:
    """Raise `CheckpointMismatchError` naming every missing, unexpected or mis-shaped key."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError(source, missing, unexpected, mismatched)


def read_checkpoint(path: str | Path) -> dict[str, object]:
    """Read a `.pth` with `weights_only=True`: a checkpoint cannot run code on load."""
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelLoadError(f"checkpoint '{path}' does not exist") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
        raise ModelLoadError(
            f"cannot read checkpoint '{path}': {e}. If it holds objects other than tensors "
            f"(optimizer state, numpy statistics), re-save just its 'model' entry"
        ) from None
    except Exception as e:  # the unpickler fails on a non-checkpoint in any way it likes
        raise ModelLoadError(
            f"cannot read checkpoint '{path}': not a PyTorch checkpoint ({type(e).__name__}: {e})"
        ) from None
    if not isinstance(obj, dict):
        raise ModelLoadError(f"checkpoint '{path}' holds a {type(obj).__name__}, not a dict")
    return obj


def load_panns_checkpoint(path: str | Path, encoder: torch.nn.Module, audio: AudioConfig) -> None:
    """Load a PANNs `.pth` into `encoder` in place, strictly."""
    state = convert_panns_state_dict(read_checkpoint(path), audio, source=str(path))
    check_state_dict(encoder, state, str(path))
    encoder.load_state_dict(state, strict=True)
