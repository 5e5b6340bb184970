"""Typed, frozen configuration. A model folder's config.json is `ModelConfig.to_dict()`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from earshot.weights import WeightsRef

FRONTENDS = ("panns", "efficientat", "clap", "clap_htk")
KINDS = ("earshot", "clap")


@dataclass(frozen=True)
class AudioConfig:
    """How a file becomes log-mel frames. Defaults are PANNs' (CNN14, 32 kHz).

    `frontend` names the log-mel recipe: "panns" (`audio.features.LogMel`: Slaney mels, dB) or
    "efficientat" (`audio.efficientat_frontend.EfficientAtLogMel`: pre-emphasis, Kaldi mels,
    log + fixed normalisation; `EFFICIENTAT_AUDIO` holds its settings), "clap" / "clap_htk"
    (a CLAP checkpoint's own `ClapFeatureExtractor`, transformers': Slaney mels as its
    unfused checkpoints use, or the HTK mels of its fused ones; `encoders.clap.ClapFrontend`).
    """

    sample_rate: int = 32000
    n_fft: int = 1024
    hop_length: int = 320
    n_mels: int = 64
    fmin: float = 50.0
    fmax: float = 14000.0
    window_s: float = 10.0  # analysis window for long files
    hop_s: float = 5.0
    frontend: str = "panns"
    win_length: int | None = None  # STFT window length; None = n_fft (PANNs)

    def __post_init__(self) -> None:
        if self.sample_rate <= 0 or self.n_fft <= 0 or self.hop_length <= 0 or self.n_mels <= 0:
            raise ValueError(f"audio settings must be positive: {self}")
        if self.frontend not in FRONTENDS:
            raise ValueError(
                f"unknown audio frontend '{self.frontend}'; known: {', '.join(FRONTENDS)}"
            )
        if self.win_length is not None:
            object.__setattr__(self, "win_length", int(self.win_length))
            if not 0 < self.win_length <= self.n_fft:
                raise ValueError(
                    f"need 0 < win_length <= n_fft, got {self.win_length} and {self.n_fft}"
                )
        if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            raise ValueError(
                f"need 0 <= fmin < fmax <= sample_rate/2, got fmin={self.fmin}, "
                f"fmax={self.fmax}, sample_rate={self.sample_rate}"
            )
        if self.window_s <= 0 or not 0 < self.hop_s <= self.window_s:
            raise ValueError(
                f"need window_s > 0 and 0 < hop_s <= window_s, got {self.window_s}, {self.hop_s}"
            )

    @property
    def window_samples(self) -> int:
        return round(self.window_s * self.sample_rate)

    @property
    def hop_samples(self) -> int:
        return round(self.hop_s * self.sample_rate)


@dataclass(frozen=True)
class EncoderConfig:
    """The audio CNN; PANNs' CNN14 is the default.

    PANNs (cnn14, cnn10): `widths` are the conv blocks' channels, `embed_dim` fc1's width.
    EfficientAT MobileNetV3 (mn04, mn10, ...): `width` is the width multiplier, `widths` is
    empty, `embed_dim` the pooled last-conv width (384 for 0.4, 960 for 1.0) and `n_tags` the
    AudioSet classifier's outputs (527). PANNs encoders carry no classifier: `n_tags` 0.
    """

    name: str = "cnn14"
    widths: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)
    embed_dim: int = 2048  # the audio embedding fed to the head
    width: float = 1.0  # MobileNet width multiplier
    n_tags: int = 0  # tag classifier outputs (0: none)
    # Pretrained weights from elsewhere, named and never stored (`earshot.weights.WeightsRef`:
    # id, file, sha256, size, url): the encoder's checkpoint and its tag names' file. A model
    # with `weights` keeps its encoder out of model.safetensors (model/pretrained.py).
    weights: WeightsRef | None = None
    labels: WeightsRef | None = None
    head_tags: bool = False  # the audio head also reads the tag probabilities (p^tag_power)
    # the power of the tag probabilities the audio head reads (head_tags): 2, the squares, as
    # every model before it; 1, the probabilities themselves (MODEL_CARD-general.md)
    tag_power: float = 2.0
    # EfficientAT: the audio head also reads the last feature map's maximum over time (of its
    # mean over frequency), beside upstream's average over both: a short sound in a long,
    # mostly silent window is not averaged away
    pool_max: bool = False
    # PANNs: the audio head also reads the last `pool_stats` conv blocks' time mean, maximum
    # and standard deviation (of their mean over frequency), before fc1: what a frozen encoder
    # trained on a few sounds still tells apart of others (the offline student's card)
    pool_stats: int = 0

    def __post_init__(self) -> None:
        for name in ("weights", "labels"):
            value = getattr(self, name)
            if isinstance(value, dict):
                object.__setattr__(self, name, WeightsRef.from_dict(value))
        object.__setattr__(self, "head_tags", bool(self.head_tags))
        object.__setattr__(self, "pool_max", bool(self.pool_max))
        if self.head_tags and self.n_tags == 0:
            raise ValueError(f"head_tags needs an encoder with tags (n_tags > 0): {self}")
        object.__setattr__(self, "tag_power", float(self.tag_power))
        if not 0.0 < self.tag_power <= MAX_TAG_POWER:
            raise ValueError(f"tag_power must lie in (0, {MAX_TAG_POWER:g}], got {self.tag_power}")
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "width", float(self.width))
        object.__setattr__(self, "n_tags", int(self.n_tags))
        if any(w <= 0 for w in self.widths) or self.embed_dim <= 0 or not self.width > 0:
            raise ValueError(f"encoder widths must be positive: {self}")
        if self.n_tags < 0:
            raise ValueError(f"n_tags must be >= 0: {self}")
        object.__setattr__(self, "pool_stats", int(self.pool_stats))
        if not 0 <= self.pool_stats <= len(self.widths):
            raise ValueError(
                f"pool_stats must name 0 to {len(self.widths)} of the last conv blocks: {self}"
            )


@dataclass(frozen=True)
class TextConfig:
    """The sentence encoder: a sentence-transformers name or a local folder."""

    model: str = "all-MiniLM-L6-v2"
    dim: int = 384


@dataclass(frozen=True)
class CheckpointConfig:
    """A third-party checkpoint folder a model runs whole (kind "clap"), named, never stored.

    `source`: a hub id (`laion/clap-htsat-unfused`) or an absolute local folder. `revision`:
    the hub commit it was resolved to (pins its files). `files`: for a local folder, each
    file's sha256 (pins it; checked on load). Either way the model id hashes these.
    """

    source: str
    revision: str | None = None
    files: dict[str, str] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or not self.source:
            raise ValueError("checkpoint.source must name a hub id or a folder")
        if self.files is not None:
            object.__setattr__(self, "files", {str(k): str(v) for k, v in self.files.items()})


@dataclass(frozen=True)
class WindowGate:
    """A general model's per-window mix of its trained audio head with its start
    (model/fusion.py `GatedHead`): w = low + (1 − low) · sigmoid((k − tau) / width), k the mean
    of a window's `top` largest cosines to the `bank` vectors (training captions, or training
    windows through the trained head)."""

    tau: float
    low: float
    width: float
    bank: int
    top: int = 1

    def __post_init__(self) -> None:
        for name in ("tau", "low", "width"):
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "bank", int(self.bank))
        object.__setattr__(self, "top", int(self.top))
        if not 0.0 <= self.low <= 1.0:
            raise ValueError(f"window_gate low must be in [0, 1], got {self.low}")
        if self.width <= 0 or not 1 <= self.top <= self.bank:
            raise ValueError("window_gate needs width > 0 and 1 <= top <= bank (vectors)")


@dataclass(frozen=True)
class ModelConfig:
    audio: AudioConfig = field(default_factory=AudioConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    text: TextConfig = field(default_factory=TextConfig)
    joint_dim: int = 300
    # "earshot": our encoders and heads (model.safetensors); "clap": a CLAP checkpoint run
    # whole through transformers (`checkpoint` names it; encoders/clap.py)
    kind: str = "earshot"
    checkpoint: CheckpointConfig | None = None
    # > 0: each side has two heads of joint_dim / 2, the trained one and a fixed one (the
    # teacher start), and a vector is [√(1 − fusion) · trained ; √fusion · start], each half
    # unit length: every cosine is (1 − fusion) · the trained heads' + fusion · the start's
    # (model/fusion.py). 0: one head a side, as every model before it.
    fusion: float = 0.0
    # > 0: the (trained) audio head is a linear map plus a residual MLP with one hidden layer
    # of this width, zero at initialisation (model/heads.py). 0: linear, as every model before.
    audio_hidden: int = 0
    # set: the audio head is the trained one mixed per window with its start (WindowGate,
    # model/fusion.py `GatedHead`), one vector of joint_dim; None: not gated, as before.
    window_gate: WindowGate | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "audio_hidden", int(self.audio_hidden))
        if isinstance(self.window_gate, dict):
            object.__setattr__(self, "window_gate", WindowGate(**self.window_gate))
        if self.window_gate is not None and self.fusion:
            raise ValueError("a model is fused (fusion) or gated per window, not both")
        if self.audio_hidden < 0:
            raise ValueError(f"audio_hidden must be >= 0 (0: linear), got {self.audio_hidden}")
        if not 0.0 <= float(self.fusion) < 1.0:
            raise ValueError(f"fusion must be in [0, 1), got {self.fusion}")
        if self.fusion and self.joint_dim % 2:
            raise ValueError(f"a fused model's joint_dim must be even, got {self.joint_dim}")
        if isinstance(self.checkpoint, dict):
            object.__setattr__(self, "checkpoint", _build(CheckpointConfig, self.checkpoint))
        if self.kind not in KINDS:
            raise ValueError(f"unknown model kind '{self.kind}'; known: {', '.join(KINDS)}")
        if (self.kind == "clap") != (self.checkpoint is not None):
            raise ValueError("a model of kind 'clap' names its checkpoint; no other kind does")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if self.kind == "earshot":  # added later: left out, so older ids stay the same
            del d["kind"], d["checkpoint"]
        if not self.fusion:  # likewise
            del d["fusion"]
        if not self.audio_hidden:  # likewise
            del d["audio_hidden"]
        if self.window_gate is None:  # likewise
            del d["window_gate"]
        d["encoder"]["widths"] = list(self.encoder.widths)
        # asdict() does not go through WeightsRef.to_dict: its later `md5`, where unset, is left
        # out here too, or every model naming weights would change id (catalogues refused).
        for name in ("weights", "labels"):
            if getattr(self.encoder, name) is not None:
                d["encoder"][name] = getattr(self.encoder, name).to_dict()
        # Fields added after models were shipped are written only when they differ from their
        # defaults, so an older config's dict (and the model id hashed from it) is unchanged.
        for part, names in _LATER_FIELDS.items():
            defaults = {f.name: f.default for f in dataclasses.fields(getattr(self, part))}
            for name in names:
                if d[part][name] == defaults[name]:
                    del d[part][name]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        known = {
            "audio", "encoder", "text", "joint_dim", "kind", "checkpoint", "fusion", "audio_hidden",
            "window_gate",
        }  # fmt: skip
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config fields: {sorted(unknown)}")
        return cls(
            audio=_build(AudioConfig, d.get("audio", {})),
            encoder=_build(EncoderConfig, d.get("encoder", {})),
            text=_build(TextConfig, d.get("text", {})),
            joint_dim=int(d.get("joint_dim", 300)),
            kind=d.get("kind", "earshot"),
            checkpoint=d.get("checkpoint"),
            fusion=float(d.get("fusion", 0.0)),
            audio_hidden=int(d.get("audio_hidden", 0)),
            window_gate=d.get("window_gate"),
        )

    @property
    def head_dim(self) -> int:
        """Each head's output width: joint_dim, or half of it in a fused model."""
        return self.joint_dim // 2 if self.fusion else self.joint_dim


# The largest `EncoderConfig.tag_power` accepted: a guard against typos (measured: 0.5 to 4)
MAX_TAG_POWER = 8.0

# Per part of ModelConfig: fields left out of to_dict() while they hold their default.
_LATER_FIELDS: dict[str, tuple[str, ...]] = {
    "audio": ("frontend", "win_length"),
    "encoder": (
        "width",
        "n_tags",
        "weights",
        "labels",
        "head_tags",
        "pool_max",
        "pool_stats",
        "tag_power",
    ),
}

# EfficientAT's front end (`audio.efficientat_frontend`): 128 Kaldi mels from 0 to 15 kHz,
# an 800-sample Hann window in a 1024-point FFT, hop 320 at 32 kHz.
EFFICIENTAT_AUDIO = AudioConfig(
    n_mels=128, fmin=0.0, fmax=15000.0, frontend="efficientat", win_length=800
)


def _build(cls: type, d: dict[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    return cls(**d)
