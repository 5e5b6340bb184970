"""The joint text-audio model: two encoders, two linear heads, one unit-sphere space."""

from __future__ import annotations

import contextlib
import copy
import itertools
import threading
import warnings
import weakref
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from earshot.audio.efficientat_frontend import build_frontend
from earshot.config import ModelConfig
from earshot.encoders.audio import build_audio_encoder
from earshot.encoders.efficientat import EfficientAtMN
from earshot.encoders.text import TextEncoder
from earshot.model.heads import audio_head

PRECISIONS = ("fp32", "bf16")


class JointModel(nn.Module):
    """Audio: log-mel → CNN → `audio_head`; text: sentence encoder → `text_head`; both → unit
    vectors of `config.joint_dim`, compared by cosine similarity (a dot product).

    The sentence encoder is attached by the loader (`attach_text_encoder`) and is not part of
    this module's state dict: a model folder names it instead of copying it.
    """

    def __init__(self, config: ModelConfig, audio_encoder: nn.Module | None = None):
        super().__init__()
        self.config = config
        self.frontend = build_frontend(config.audio)
        # `audio_encoder`: an encoder built for config.encoder already (with_heads shares one)
        self.audio_encoder = audio_encoder or build_audio_encoder(
            config.encoder, config.audio.n_mels
        )
        if config.fusion:  # trained heads beside their start, one vector (model/fusion.py)
            from earshot.model.fusion import FusedHead

            half, f = config.head_dim, config.fusion
            self.audio_head: nn.Module = FusedHead(
                audio_head_inputs(config), half, f, hidden=config.audio_hidden
            )
            self.text_head: nn.Module = FusedHead(config.text.dim, half, f)
        elif config.window_gate is not None:  # mixed per window with its start (model/fusion.py)
            from earshot.model.fusion import GatedHead

            self.audio_head = GatedHead(
                audio_head_inputs(config), config.joint_dim, config.window_gate,
                hidden=config.audio_hidden,
            )  # fmt: skip
            self.text_head = nn.Linear(config.text.dim, config.joint_dim)
        else:
            self.audio_head = audio_head(
                audio_head_inputs(config), config.joint_dim, config.audio_hidden
            )
            self.text_head = nn.Linear(config.text.dim, config.joint_dim)
        self._text_encoder: TextEncoder | None = None
        self.source: str | None = None  # the folder it was loaded from, if any
        # The audio encoder's tag vocabulary (AudioSet's 527 display names for a tagging
        # backbone), set by the loader; empty for encoders without a tag head (PANNs here).
        self.tag_names: tuple[str, ...] = ()
        # fp32 inference on CPU runs an EfficientAT encoder through `fast_mn_encoder` (an
        # optimised copy, ~2.5x faster); False keeps the plain eager module (benchmarks' "before").
        self.fast_inference = True

    def with_heads(self, config: ModelConfig) -> JointModel:
        """A model of `config` (this one's but for its heads: width, fusion, hidden layer) that
        shares this one's audio encoder, front end, tag names and text encoder; its heads are
        new, as JointModel builds them, and it is in this one's train/eval mode."""
        if (config.audio, config.encoder, config.text) != (
            self.config.audio,
            self.config.encoder,
            self.config.text,
        ):
            raise ValueError("with_heads changes the heads only, not the audio or text side")
        other = JointModel(config, audio_encoder=self.audio_encoder)
        other.frontend = self.frontend
        other.tag_names = self.tag_names
        if self._text_encoder is not None:
            other.attach_text_encoder(self._text_encoder)
        return other.train(self.training)

    # -- text ------------------------------------------------------------------------------
    def attach_text_encoder(self, encoder: TextEncoder) -> None:
        if encoder.dim != self.config.text.dim:
            from earshot.errors import TextEncoderMismatchError

            raise TextEncoderMismatchError(
                f"text model '{encoder.name}' gives {encoder.dim}-d vectors, this model's text "
                f"head takes {self.config.text.dim}-d"
            )
        self._text_encoder = encoder

    @property
    def text_encoder(self) -> TextEncoder:
        if self._text_encoder is None:
            raise RuntimeError("no text encoder attached: load the model with load_model()")
        return self._text_encoder

    def project_text(self, features: torch.Tensor) -> torch.Tensor:
        # features: (batch, text_dim) sentence embeddings → (batch, joint_dim) unit vectors
        return F.normalize(self.text_head(features), dim=-1)

    @torch.no_grad()
    def encode_text(self, sentences: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """Sentences → (n, joint_dim) float32 unit vectors."""
        was_training = self.training
        self.eval()
        try:
            features = self.text_encoder.encode(list(sentences), batch_size=batch_size)
            return self.project_text(features.to(self.text_head.weight.device)).float().cpu()
        finally:
            self.train(was_training)

    # -- audio -----------------------------------------------------------------------------
    def embed_audio(self, waveform: torch.Tensor) -> torch.Tensor:
        # waveform: (batch, samples) at config.audio.sample_rate → (batch, joint_dim) unit
        logmel = self.frontend(waveform)  # (batch, 1, frames, n_mels)
        features = self.audio_encoder(logmel)  # (batch, embed_dim)
        return F.normalize(self.audio_head(features), dim=-1)

    @torch.no_grad()
    def encode_audio(
        self,
        waveforms: torch.Tensor | np.ndarray,
        batch_size: int = 8,
        precision: str = "fp32",
    ) -> torch.Tensor:
        """Waveforms (n, samples) at the model's rate → (n, joint_dim) float32 unit vectors.

        `precision="bf16"` runs the CNN under bf16 autocast in channels_last layout (the
        frontend stays fp32): about twice as fast on CPUs with native bf16, cosine ≥ 0.999 to fp32.
        """
        return self._encode(waveforms, batch_size, precision, with_tags=False)[0]

    @torch.no_grad()
    def encode_audio_tagged(
        self,
        waveforms: torch.Tensor | np.ndarray,
        batch_size: int = 8,
        precision: str = "fp32",
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Like `encode_audio`, plus each window's tag probabilities: (n, joint_dim) unit vectors
        and (n, len(tag_names)) float32 in [0, 1], or None for a model without tags."""
        return self._encode(waveforms, batch_size, precision, with_tags=bool(self.tag_names))

    def _encode(
        self, waveforms, batch_size: int, precision: str, with_tags: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        # The one batching loop behind encode_audio and encode_audio_tagged.
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got '{precision}'")
        x = torch.as_tensor(waveforms, dtype=torch.float32)
        if x.dim() == 1:
            x = x.unsqueeze(0)
        was_training = self.training
        self.eval()
        device = self.audio_head.weight.device
        try:
            vectors, tags = [], []
            for i in range(0, x.shape[0], batch_size):
                logmel = self.frontend(x[i : i + batch_size].to(device))  # always fp32
                v, logits = self._embed_logmel(logmel, precision)
                vectors.append(v.float().cpu())
                if with_tags:
                    tags.append(torch.sigmoid(logits.float()).cpu())
            if not vectors:
                empty = torch.zeros((0, len(self.tag_names))) if with_tags else None
                return torch.zeros((0, self.config.joint_dim)), empty
            return torch.cat(vectors), torch.cat(tags) if with_tags else None
        finally:
            self.train(was_training)

    def embed_logmel(self, logmel: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
        # logmel: the frontend's output → (batch, joint_dim) unit vectors
        return self._embed_logmel(logmel, precision)[0]

    def audio_features(
        self, logmel: torch.Tensor, precision: str = "fp32"
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The encoder's outputs for a batch of log-mel: what the audio head reads (its
        embedding, with a tagging encoder's tag probabilities appended at the config's
        `tag_power` when it says so) and the tag logits (None without a tag head)."""
        encoder: nn.Module = self.audio_encoder
        if precision == "bf16":
            logmel = logmel.contiguous(memory_format=torch.channels_last)
            ctx = torch.autocast(device_type=logmel.device.type, dtype=torch.bfloat16)
        else:
            ctx = contextlib.nullcontext()
            if self.fast_inference and _fast_path_applies(encoder, logmel):
                encoder = fast_mn_encoder(encoder, logmel[:1]) or encoder
        with ctx:
            out = encoder(logmel)
        if not isinstance(out, tuple):
            out = (out, None)
        features, logits = out[0].float(), out[1]
        if len(out) > 2:  # an EfficientAT encoder with pool_max: its time-max embedding
            features = torch.cat([features, out[2].float()], dim=-1)
        if logits is not None:
            logits = logits.float()
            if _head_tags(self.config):
                features = torch.cat([features, tag_columns(logits, self.config)], dim=-1)
        return features, logits

    def _embed_logmel(
        self, logmel: torch.Tensor, precision: str
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        features, logits = self.audio_features(logmel, precision)
        return F.normalize(self.audio_head(features), dim=-1), logits


# -- the EfficientAT fast path ------------------------------------------------------------
# EfficientAT's MobileNet is 46 small convolutions, most followed by BatchNorm and an
# activation: in eager fp32 on CPU about 40 % of its time goes to BatchNorm and the activations,
# and the 1x1 convolutions of a small batch on one thread take PyTorch's unblocked path. For
# inference we trace a copy, freeze it (BatchNorm folded into the convolutions) and let
# `torch.jit.optimize_for_inference` run it in oneDNN's blocked layout with the activations
# fused: the network ~2.5x faster than eager at 1 thread (mn04, 10 s windows: ~9 ms against
# ~23 ms a window on a busy 2-core EPYC; `bench/bench_index.py --models general,general_plain`),
# outputs within ~3e-6 (embedding) and ~1.5e-5 (logits) of eager's. Eager in channels_last gained
# ~10 %; BatchNorm folded into eager convolutions, ~25 %; torch.compile would compile for ~30 s.
# TorchScript's freeze and optimize_for_inference are deprecated (torch 2.13 says so): where
# they fail, or their copy disagrees with eager on the first batch, eager serves. Built on first
# use (~0.7 s), once per encoder and weights; rebuilt when a parameter or buffer is replaced or
# changed in place through the tensor itself (its storage or version counter moves; a write
# through `.data` is not seen).
_FAST_MN: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, nn.Module | None]] = (
    weakref.WeakKeyDictionary()
)
_FAST_MN_LOCK = threading.Lock()


def _fast_path_applies(encoder: nn.Module, logmel: torch.Tensor) -> bool:
    return (
        isinstance(encoder, EfficientAtMN)
        and not encoder.training
        and not torch.is_grad_enabled()
        and not torch.is_autocast_enabled("cpu")
        and logmel.device.type == "cpu"
        and logmel.dtype == torch.float32
        and logmel.dim() == 4
        and logmel.shape[0] > 0
        and logmel.shape[1] == 1
        and all(
            t.device.type == "cpu" and (t.dtype == torch.float32 or not t.is_floating_point())
            for t in _tensors(encoder)
        )
    )


def _tensors(module: nn.Module):
    return itertools.chain(module.parameters(), module.buffers())


def _weights_key(module: nn.Module) -> tuple:
    return tuple((t.data_ptr(), t._version) for t in _tensors(module))


def fast_mn_encoder(encoder: nn.Module, example: torch.Tensor) -> nn.Module | None:
    """The optimised inference copy of an eval-mode EfficientAT `encoder` (same call, same
    `(embedding, logits)`), or None where it cannot be built. `example`: one input batch of the
    shape it will see, (batch, 1, n_mels, frames), used to trace and to check the copy."""
    key = _weights_key(encoder)
    with _FAST_MN_LOCK:
        hit = _FAST_MN.get(encoder)
        if hit is not None and hit[0] == key:
            return hit[1]
        fast = _optimised_copy(encoder, example)
        _FAST_MN[encoder] = (key, fast)
        return fast


def _optimised_copy(encoder: nn.Module, example: torch.Tensor) -> nn.Module | None:
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # The tracer's note on the input-shape check, TorchScript's deprecation notice.
            warnings.simplefilter("ignore")
            clone = copy.deepcopy(encoder).eval()  # shares no storage with the live weights
            traced = torch.jit.trace(clone, example, check_trace=False)
            fast = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
            want, got = encoder(example), fast(example)
            same = all(
                torch.allclose(g, w, rtol=1e-3, atol=1e-3) for g, w in zip(got, want, strict=True)
            )
    except Exception:  # a torch without TorchScript or oneDNN: the eager module serves
        return None
    return fast if same else None


def tag_columns(logits: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """The tag columns the audio head reads: the tag probabilities at the encoder's
    `tag_power` (squared, as every model before the field, with `.square()` itself so those
    models' vectors are bit for bit what they were)."""
    probs = torch.sigmoid(logits)
    power = float(getattr(config.encoder, "tag_power", 2.0))
    return probs.square() if power == 2.0 else probs.pow(power)


def _head_tags(config: ModelConfig) -> bool:
    # Whether the audio head also reads the tag probabilities (a tagging encoder's "teacher
    # space", see MODEL_CARD-general.md); False for every other encoder.
    return bool(getattr(config.encoder, "head_tags", False))


def audio_head_inputs(config: ModelConfig) -> int:
    """The audio head's input width: the encoder's embedding (+ its tags when it reads them)."""
    extra = int(getattr(config.encoder, "n_tags", 0)) if _head_tags(config) else 0
    pooled = 2 if getattr(config.encoder, "pool_max", False) else 1
    return pooled * config.encoder.embed_dim + extra + pool_stats_width(config.encoder)


def pool_stats_width(encoder) -> int:
    """The width of a PANNs encoder's pooled statistics (`EncoderConfig.pool_stats`): time
    mean, maximum and standard deviation of each channel of its last `pool_stats` blocks."""
    k = int(getattr(encoder, "pool_stats", 0))
    return 3 * sum(encoder.widths[-k:]) if k else 0


def resolve_precision(precision: str, model: nn.Module | None = None) -> str:
    """`auto` → bf16 where the CPU computes it natively (AVX512-BF16 / AMX; ~2x faster, cosine
    ≥ 0.999 to fp32), fp32 elsewhere, where emulated bf16 would be slower.

    Except for `model`s whose audio encoder takes the fp32 fast path (EfficientAT's MobileNet,
    `fast_mn_encoder`): bf16 runs it as eager autocast instead, which is slower than the traced
    fp32 copy even on a CPU with AMX (on a 2-core Xeon with AMX the general model indexed
    36.0 files/s in bf16, the fused model before, against 42.4 in fp32, paired rounds of
    bench/bench_index.py --compare; MODEL_CARD-general.md), so auto keeps fp32 for them."""
    if precision != "auto":
        return precision
    if (
        isinstance(getattr(model, "audio_encoder", None), EfficientAtMN)
        and getattr(model, "fast_inference", False)
        and all(p.device.type == "cpu" for p in model.parameters())
    ):
        return "fp32"
    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native = False
    return "bf16" if native else "fp32"


def cosine_scores(queries: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """(q, d) x (n, d) unit vectors → (q, n) cosine similarities."""
    return queries @ items.T
