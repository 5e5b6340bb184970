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


def embed_windows(
    model: JointModel, windows: Iterator[Window], batch_size: int = 8, precision: str = "fp32"
) -> Iterator[WindowEmbedding]:
    """Embed windows in batches of `batch_size` as they arrive."""
    batch: list[Window] = []

    def flush() -> Iterator[WindowEmbedding]:
        samples = np.stack([w.samples for w in batch])  # (batch, window_samples)
        vectors = model.encode_audio(samples, batch_size=len(batch), precision=precision).numpy()
        for w, v in zip(batch, vectors, strict=True):
            yield WindowEmbedding(w.start_s, w.end_s, v)
        batch.clear()

    for window in windows:
        batch.append(window)
        if len(batch) == batch_size:
            yield from flush()
    if batch:
        yield from flush()


def embed_file(
    model: JointModel, path: str | Path, batch_size: int = 8, precision: str = "fp32"
) -> list[WindowEmbedding]:
    """Decode, window and embed one file. Raises `AudioDecodeError` for files it cannot read."""
    return list(embed_windows(model, window_file(path, model.config.audio), batch_size, precision))
