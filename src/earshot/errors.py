"""The error types earshot raises on purpose. Each message names the thing and the reason."""

from __future__ import annotations

from pathlib import Path


class EarshotError(Exception):
    """Base class: every error earshot raises deliberately derives from it."""


class AudioDecodeError(EarshotError):
    """A file could not be turned into audio samples.

    The only exception type that decoding lets escape: unreadable, empty, truncated and
    non-audio files all end up here, with the file's path and a plain reason.
    """

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot decode '{self.path}': {reason}")


class ModelLoadError(EarshotError):
    """A model, checkpoint or text encoder could not be loaded."""


class CheckpointMismatchError(ModelLoadError):
    """A checkpoint's keys or shapes do not fit the model it is loaded into."""

    def __init__(
        self,
        source: str,
        missing: list[str],
        unexpected: list[str],
        mismatched: list[str] | None = None,
    ):
        self.missing = sorted(missing)
        self.unexpected = sorted(unexpected)
        self.mismatched = sorted(mismatched or [])
        parts = []
        if self.missing:
            parts.append(f"missing keys: {', '.join(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected keys: {', '.join(self.unexpected)}")
        if self.mismatched:
            parts.append(f"shape mismatches: {', '.join(self.mismatched)}")
        super().__init__(f"checkpoint '{source}' does not fit the model: " + "; ".join(parts))
