"""The error types earshot raises on purpose. Each message names the thing and the reason.

All are defined here; the modules that raise them import them (so `from earshot.search import
SearchError` and the like still work)."""

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


class QueryModelUnavailable(ModelLoadError):
    """This folder's text search needs the full (torch) model; the message says why."""


class LeanUnsupported(ModelLoadError):
    """A text model folder the lean encoder does not reproduce exactly (the message says why)."""


class WeightsUnreachable(ModelLoadError):
    """The server could not be reached at all (DNS, refused, timeout before any byte)."""


class CatalogueError(EarshotError):
    """The catalogue cannot be opened, read or written; the message names its path."""


class ModelMismatchError(CatalogueError):
    """A model other than the one whose vectors the catalogue holds tried to write to it."""


class AnnIndexError(EarshotError):
    """An ANN index file cannot be used (missing, damaged, another format): rebuild it."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(
            f"cannot use the ANN index '{self.path}': {reason}; rebuild it from the catalogue"
        )


class SearchError(EarshotError):
    """A query that cannot be answered as asked."""


class DatasetError(EarshotError):
    """A dataset folder or file cannot be used as given."""


class ConfigError(EarshotError):
    """A training config that cannot be used as written."""


class ApiError(Exception):
    """An HTTP answer other than 200, with a message for the person who asked (serve/)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


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


class TextEncoderMismatchError(ModelLoadError, ValueError):
    """A text encoder whose vectors do not fit the model's text head (its width differs).

    Also a `ValueError`, which `JointModel.attach_text_encoder` raised before."""
