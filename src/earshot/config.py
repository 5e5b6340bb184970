"""Typed, frozen configuration. A model folder's config.json is `ModelConfig.to_dict()`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class AudioConfig:
    """How a file becomes log-mel frames. Defaults are PANNs' (CNN14, 32 kHz)."""

    sample_rate: int = 32000
    n_fft: int = 1024  # window length too: PANNs uses win_length == n_fft
    hop_length: int = 320
    n_mels: int = 64
    fmin: float = 50.0
    fmax: float = 14000.0
    window_s: float = 10.0  # analysis window for long files
    hop_s: float = 5.0

    def __post_init__(self) -> None:
        if self.sample_rate <= 0 or self.n_fft <= 0 or self.hop_length <= 0 or self.n_mels <= 0:
            raise ValueError(f"audio settings must be positive: {self}")
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
    """The audio CNN. `widths` are the conv blocks' channels; PANNs' CNN14 is the default."""

    name: str = "cnn14"
    widths: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)
    embed_dim: int = 2048  # fc1's width: the audio embedding fed to the head

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if any(w <= 0 for w in self.widths) or self.embed_dim <= 0:
            raise ValueError(f"encoder widths must be positive: {self}")


@dataclass(frozen=True)
class TextConfig:
    """The sentence encoder: a sentence-transformers name or a local folder."""

    model: str = "all-MiniLM-L6-v2"
    dim: int = 384


@dataclass(frozen=True)
class ModelConfig:
    audio: AudioConfig = field(default_factory=AudioConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    text: TextConfig = field(default_factory=TextConfig)
    joint_dim: int = 300

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["encoder"]["widths"] = list(self.encoder.widths)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        known = {"audio", "encoder", "text", "joint_dim"}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config fields: {sorted(unknown)}")
        return cls(
            audio=_build(AudioConfig, d.get("audio", {})),
            encoder=_build(EncoderConfig, d.get("encoder", {})),
            text=_build(TextConfig, d.get("text", {})),
            joint_dim=int(d.get("joint_dim", 300)),
        )


def _build(cls: type, d: dict[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    return cls(**d)
