"""LAION-CLAP through transformers as an earshot model (config kind "clap").

A CLAP model folder holds one `config.json` that *names* a checkpoint (`checkpoint`: a hub id
pinned to its commit, or a local `save_pretrained` folder pinned by its files' sha256) and
never its weights. Loading runs transformers' own `ClapModel` and the checkpoint's tokenizer
and `ClapFeatureExtractor`, with earshot's windows instead of CLAP's random ones:

- audio at the checkpoint's rate (48 kHz) in fixed 10 s windows, hop 5 s (`audio.windows`:
  the last partial window and short files zero-padded, as for every earshot model). Each
  window is exactly the extractor's `max_length`, so its random paths never run: no random
  crop (`rand_trunc` crops only longer input) and no random fusion (`fusion` picks random
  chunks only of longer input; a fused checkpoint gets its global mel four times with
  `is_longer` false, as the extractor gives for input that is not longer). A window that is
  not exactly that length is zero-padded or refused here, never cropped at random;
- text through the checkpoint's tokenizer (truncated at 77 tokens, CLAP's training length);
- vectors in CLAP's projection space (512-d), unit-normalised.

The same file gives bit-identical vectors on CPU across runs and processes (fp32, same batch
size). transformers is imported only when such a model loads.

The model id hashes the config, which pins the checkpoint (hub commit or file hashes), so it
is stable without reading the weights.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from earshot.config import AudioConfig, CheckpointConfig, EncoderConfig, ModelConfig, TextConfig
from earshot.errors import ModelLoadError

WINDOW_S = 10.0
HOP_S = 5.0
TEXT_MAX_TOKENS = 77
ENCODER_NAME = "clap"
_SKIP_FILES = {".gitattributes", "README.md"}


# -- the checkpoint ---------------------------------------------------------------------------


def describe_checkpoint(source: str, revision: str | None = None) -> tuple[CheckpointConfig, Path]:
    """What a model folder records of a checkpoint (`source`: a hub id or a local folder),
    and the local folder it resolved to (downloading a hub id only where allowed)."""
    from earshot.weights import is_hub_id, resolve_hub

    local = Path(source).expanduser()
    if local.is_dir():
        if revision is not None:
            raise ModelLoadError("--revision is for a hub id, not a local folder")
        folder = local.resolve()
        return CheckpointConfig(source=str(folder), files=_folder_hashes(folder)), folder
    if not is_hub_id(source):
        raise ModelLoadError(
            f"CLAP checkpoint '{source}': no such folder, and not a hub id (owner/name)"
        )
    folder, commit = resolve_hub(source, revision)
    return CheckpointConfig(source=source, revision=commit), folder


def _folder_hashes(folder: Path) -> dict[str, str]:
    from earshot.weights import sha256_file

    files = {
        p.name: sha256_file(p)
        for p in sorted(folder.iterdir())
        if p.is_file() and not p.name.startswith(".") and p.name not in _SKIP_FILES
    }
    if "config.json" not in files:
        raise ModelLoadError(f"'{folder}' is not a checkpoint folder: no config.json")
    return files


def checkpoint_folder(checkpoint: CheckpointConfig, allow_download: bool = True) -> Path:
    """The local folder of a recorded checkpoint, checked against what was recorded."""
    from earshot.weights import resolve_hub, sha256_file

    if checkpoint.files is None:
        return resolve_hub(checkpoint.source, checkpoint.revision, allow_download)[0]
    folder = Path(checkpoint.source)
    if not folder.is_dir():
        raise ModelLoadError(
            f"the CLAP checkpoint folder '{folder}' this model names is gone; put it back, "
            "or run `earshot init-model DIR --clap FOLDER` again"
        )
    for name, expected in checkpoint.files.items():
        path = folder / name
        got = sha256_file(path) if path.is_file() else None
        if got != expected:
            what = "is missing" if got is None else f"has sha256 {got}, recorded {expected}"
            raise ModelLoadError(
                f"the CLAP checkpoint folder '{folder}' changed since the model was made: "
                f"{name} {what}; run `earshot init-model DIR --clap {folder}` again"
            )
    return folder


def clap_config(checkpoint: CheckpointConfig, folder: Path) -> ModelConfig:
    """The earshot config of a CLAP checkpoint: its rate and mels, earshot's windows."""
    extractor, clap = _read_settings(folder)
    if float(extractor.max_length_s) != WINDOW_S:
        raise ModelLoadError(
            f"CLAP checkpoint '{checkpoint.source}' takes {extractor.max_length_s} s inputs; "
            f"earshot runs CLAP in {WINDOW_S:g} s windows"
        )
    if extractor.top_db is not None:
        raise ModelLoadError(
            f"CLAP checkpoint '{checkpoint.source}': a feature extractor with top_db is not "
            "supported"
        )
    audio = AudioConfig(
        sample_rate=int(extractor.sampling_rate),
        n_fft=int(extractor.fft_window_size),
        hop_length=int(extractor.hop_length),
        n_mels=int(extractor.feature_size),
        fmin=float(extractor.frequency_min),
        fmax=float(extractor.frequency_max),
        window_s=WINDOW_S,
        hop_s=HOP_S,
        frontend="clap_htk" if extractor.truncation == "fusion" else "clap",
    )
    dim = int(clap.projection_dim)
    return ModelConfig(
        audio=audio,
        encoder=EncoderConfig(
            name=ENCODER_NAME, widths=(), embed_dim=int(clap.audio_config.hidden_size)
        ),
        text=TextConfig(model=checkpoint.source, dim=dim),
        joint_dim=dim,
        kind="clap",
        checkpoint=checkpoint,
    )


def _read_settings(folder: Path):
    from transformers import ClapConfig, ClapFeatureExtractor

    try:
        with _quiet_transformers():
            extractor = ClapFeatureExtractor.from_pretrained(str(folder), local_files_only=True)
            clap = ClapConfig.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelLoadError(f"'{folder}' is not a CLAP checkpoint folder: {e}") from None
    if getattr(clap, "model_type", None) != "clap":
        raise ModelLoadError(f"'{folder}' is not a CLAP checkpoint (model_type {clap.model_type})")
    return extractor, clap


def clap_model_id(config: ModelConfig) -> str:
    """The model id: the config, which pins the checkpoint (hub commit, or file hashes). A
    local folder's place is left out: its files' hashes say what computes, wherever it is."""
    d = config.to_dict()
    if config.checkpoint is not None and config.checkpoint.files is not None:
        d["checkpoint"]["source"] = d["text"]["model"] = None
    canonical = json.dumps(d, sort_keys=True).encode()
    return hashlib.sha256(b"earshot clap\0" + canonical).hexdigest()[:16]


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No progress bars or advisory warnings from transformers while a checkpoint loads."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    level = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


# -- the front end ----------------------------------------------------------------------------


class ClapFrontend(nn.Module):
    """(batch, samples) → (batch, 1, frames, n_mels): the log-mel of transformers'
    `ClapFeatureExtractor` for each whole window, computed in torch.

    The extractor's own STFT is a Python loop over frames in NumPy (~0.3 s a 10 s window on a
    busy core, as long as the tiny model's network); this is the same arithmetic batched:
    float64 frames and FFT, the spectrum rounded to complex64 as the extractor stores it, its
    power in float64 through the extractor's own mel matrix (Slaney or HTK), floor 1e-10,
    10·log10, float32. Equal to the extractor's output within float32 rounding
    (tests/test_clap.py). Deterministic: the same window gives the same bits, in any batch.
    A window shorter than the checkpoint's input is zero-padded; a longer one is refused,
    never cropped at random.
    """

    def __init__(self, audio: AudioConfig):
        super().__init__()
        from transformers import ClapFeatureExtractor
        from transformers.audio_utils import window_function

        if audio.frontend not in ("clap", "clap_htk"):
            raise ValueError(f"not a CLAP frontend: {audio.frontend}")
        if float(audio.window_s) != WINDOW_S:
            raise ValueError(f"CLAP runs in {WINDOW_S:g} s windows, not {audio.window_s:g} s")
        self.audio = audio
        self.samples = audio.window_samples
        extractor = ClapFeatureExtractor(
            feature_size=audio.n_mels,
            sampling_rate=audio.sample_rate,
            hop_length=audio.hop_length,
            max_length_s=int(WINDOW_S),
            fft_window_size=audio.n_fft,
            frequency_min=audio.fmin,
            frequency_max=audio.fmax,
            truncation="fusion" if audio.frontend == "clap_htk" else "rand_trunc",
        )
        self.extractor = extractor  # the reference this computes (tests compare the two)
        # fusion checkpoints use the HTK filters, the others Slaney's (the extractor's rule)
        mel = (
            extractor.mel_filters if audio.frontend == "clap_htk" else extractor.mel_filters_slaney
        )
        self.register_buffer("mel", torch.from_numpy(np.asarray(mel, np.float64)), persistent=False)
        window = window_function(audio.n_fft, "hann")
        self.register_buffer(
            "window", torch.from_numpy(np.asarray(window, np.float64)), persistent=False
        )

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(waveform).detach().to("cpu", torch.float32)
        if x.dim() == 1:
            x = x.unsqueeze(0)
        if x.shape[1] > self.samples:
            raise ValueError(
                f"a CLAP window is {self.samples} samples, got {x.shape[1]}: earshot never "
                "crops at random"
            )
        if x.shape[1] < self.samples:  # zero-padded, as earshot pads every last window
            x = F.pad(x, (0, self.samples - x.shape[1]))
        spec = torch.stft(
            x.double(),
            self.audio.n_fft,
            self.audio.hop_length,
            window=self.window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )  # (batch, bins, frames), complex128
        # rounded to complex64 as the extractor stores it (each part to float32), frames first
        parts = torch.view_as_real(spec.transpose(1, 2).contiguous()).float().double()
        power = parts[..., 0] ** 2 + parts[..., 1] ** 2  # (batch, frames, bins)
        mel = torch.clamp(power @ self.mel, min=1e-10)  # (batch, frames, n_mels)
        return (10.0 * torch.log10(mel)).float().unsqueeze(1)


# -- the model --------------------------------------------------------------------------------


class ClapJointModel(nn.Module):
    """A CLAP checkpoint behind the interface earshot's commands use of a `JointModel`:
    `config`, `encode_audio`, `encode_audio_tagged`, `encode_text`, `frontend` +
    `embed_logmel` (for `earshot evaluate`'s feature cache), `model_id`, `source`."""

    def __init__(self, config: ModelConfig, clap, tokenizer):
        super().__init__()
        if config.kind != "clap":
            raise ValueError("not a CLAP model config")
        self.config = config
        self.clap = clap.eval()
        self.tokenizer = tokenizer
        self.frontend = ClapFrontend(config.audio)
        self.fusion = bool(getattr(clap.config.audio_config, "enable_fusion", False))
        self.tag_names: tuple[str, ...] = ()
        self.source: str | None = None
        self.model_id = clap_model_id(config)

    @property
    def device(self) -> torch.device:
        return next(self.clap.parameters()).device

    # -- audio ---------------------------------------------------------------------------------
    @torch.no_grad()
    def embed_logmel(self, logmel: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
        """(batch, 1, frames, n_mels) from `frontend` → (batch, joint_dim) unit vectors.

        Always fp32: `precision="bf16"` (what `earshot index` picks by itself on CPUs with
        native bf16) is accepted and runs fp32, as bf16 autocast of CLAP's transformer is
        not checked against its published figures, and a catalogue indexed in bf16 would not
        give the bit-identical vectors a search by example computes in fp32."""
        from earshot.model.dual import PRECISIONS

        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got '{precision}'")
        x = logmel.to(self.device, torch.float32)
        if self.fusion:  # the extractor's shape for input that is not longer: 4 copies
            x = x.expand(-1, 4, -1, -1).contiguous()
        is_longer = torch.zeros((x.shape[0], 1), dtype=torch.bool, device=x.device)
        out = self.clap.get_audio_features(input_features=x, is_longer=is_longer)
        return F.normalize(out.pooler_output.float(), dim=-1)

    @torch.no_grad()
    def encode_audio(
        self, waveforms: torch.Tensor | np.ndarray, batch_size: int = 8, precision: str = "fp32"
    ) -> torch.Tensor:
        """Waveforms (n, samples) at the model's rate → (n, joint_dim) float32 unit vectors."""
        x = torch.as_tensor(waveforms, dtype=torch.float32)
        if x.dim() == 1:
            x = x.unsqueeze(0)
        out = [
            self.embed_logmel(self.frontend(x[i : i + batch_size]), precision).cpu()
            for i in range(0, x.shape[0], batch_size)
        ]
        return torch.cat(out) if out else torch.zeros((0, self.config.joint_dim))

    def encode_audio_tagged(
        self, waveforms: torch.Tensor | np.ndarray, batch_size: int = 8, precision: str = "fp32"
    ) -> tuple[torch.Tensor, None]:
        """As `encode_audio`; CLAP has no tag head, so no tags."""
        return self.encode_audio(waveforms, batch_size, precision), None

    # -- text ----------------------------------------------------------------------------------
    def tokenize(self, sentences: Sequence[str]) -> dict[str, torch.Tensor]:
        return self.tokenizer(
            list(sentences),
            padding=True,
            truncation=True,
            max_length=TEXT_MAX_TOKENS,
            return_tensors="pt",
        )

    @torch.no_grad()
    def encode_text(self, sentences: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """Sentences → (n, joint_dim) float32 unit vectors."""
        sentences = list(sentences)
        out = []
        for i in range(0, len(sentences), batch_size):
            tokens = {
                k: v.to(self.device)
                for k, v in self.tokenize(sentences[i : i + batch_size]).items()
            }
            features = self.clap.get_text_features(
                input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
            )
            out.append(F.normalize(features.pooler_output.float(), dim=-1).cpu())
        return torch.cat(out) if out else torch.zeros((0, self.config.joint_dim))


def load_clap_model(
    config: ModelConfig, device: str = "cpu", allow_download: bool = True
) -> ClapJointModel:
    """The checkpoint `config` names, resolved (hub cache, or its recorded folder, checked),
    loaded through transformers and wrapped; a `ModelLoadError` saying what is wrong."""
    if config.checkpoint is None:
        raise ModelLoadError("a CLAP model config names no checkpoint")
    folder = checkpoint_folder(config.checkpoint, allow_download)
    expected = clap_config(config.checkpoint, folder)
    if expected.audio != config.audio or expected.joint_dim != config.joint_dim:
        raise ModelLoadError(
            f"the CLAP checkpoint '{config.checkpoint.source}' does not match this model's "
            "config.json (its rate, mels or dimension differ); run `earshot init-model` again"
        )
    from transformers import AutoTokenizer, ClapModel

    try:
        with _quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            clap = ClapModel.from_pretrained(
                str(folder), local_files_only=True, dtype=torch.float32
            )
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise ModelLoadError(f"cannot load the CLAP checkpoint in '{folder}': {e}") from None
    return ClapJointModel(config, clap.to(device), tokenizer).eval()
