"""File → one unit vector per analysis window, streamed: a long file never sits whole in memory."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from earshot.audio.windows import Window, window_file
from earshot.model.dual import JointModel


@dataclass(frozen=True)
class WindowEmbedding:
    start_s: float
    end_s: float
    vector: np.ndarray  # (joint_dim,) float32, unit norm
    # (len(model.tag_names),) float32 tag probabilities in [0, 1]; None for a model without tags
    tags: np.ndarray | None = None


def embed_windows(
    model: JointModel, windows: Iterator[Window], batch_size: int = 8, precision: str = "fp32"
) -> Iterator[WindowEmbedding]:
    """Embed windows in batches of `batch_size` as they arrive (with each window's tag
    probabilities when the model tags windows)."""
    batch: list[Window] = []

    def flush() -> Iterator[WindowEmbedding]:
        samples = np.stack([w.samples for w in batch])  # (batch, window_samples)
        vectors, tags = encode_windows(model, samples, len(batch), precision)
        for i, (w, v) in enumerate(zip(batch, vectors, strict=True)):
            yield WindowEmbedding(w.start_s, w.end_s, v, None if tags is None else tags[i])
        batch.clear()

    for window in windows:
        batch.append(window)
        if len(batch) == batch_size:
            yield from flush()
    if batch:
        yield from flush()


def encode_windows(
    model: JointModel, samples: np.ndarray, batch_size: int = 8, precision: str = "fp32"
) -> tuple[np.ndarray, np.ndarray | None]:
    """(n, window_samples) → (n, joint_dim) vectors and, from a model with `tag_names`, its
    (n, len(tag_names)) tag probabilities (else None); float32 numpy arrays."""
    if not getattr(model, "tag_names", ()):
        return model.encode_audio(samples, batch_size=batch_size, precision=precision).numpy(), None
    vectors, tags = model.encode_audio_tagged(samples, batch_size, precision)
    return vectors.numpy(), None if tags is None else tags.numpy().astype(np.float32, copy=False)


def embed_file(
    model: JointModel, path: str | Path, batch_size: int = 8, precision: str = "fp32"
) -> list[WindowEmbedding]:
    """Decode, window and embed one file. Raises `AudioDecodeError` for files it cannot read."""
    return list(embed_windows(model, window_file(path, model.config.audio), batch_size, precision))
