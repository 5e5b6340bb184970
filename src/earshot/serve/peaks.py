"""Waveform thumbnails: a file's loudness envelope as `n` peaks, decoded block by block.

The browser draws them on a canvas with the matching span highlighted. Peaks are computed at
the file's own sample rate (no resampling) from `earshot.audio.io.stream`, so memory stays one
block however long the file, and kept in a small LRU keyed by the file's id, size and mtime:
a re-indexed (changed) file gets fresh peaks.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Hashable

import numpy as np

from earshot.audio.io import probe, stream


def compute_peaks(path: str, n: int) -> tuple[list[float], float]:
    """(`n` peaks in [0, 1] — the largest |sample| of each of n equal slices — , duration s).

    Raises `AudioDecodeError` where the file cannot be decoded. A file shorter than `n`
    samples gives one peak per sample.
    """
    info = probe(path)
    expected = max(1, info.frames)
    # Fine bins first (at least 4 per output peak), pooled to n at the end: the header's frame
    # count can be wrong (a cut MP3), so the bins must not depend on it being exact.
    fine = 4 * n
    per_bin = max(1, math.ceil(expected / fine))
    maxima: list[np.ndarray] = []
    carry = np.zeros(0, dtype=np.float32)
    total = 0
    for block in stream(path, info.sample_rate):
        total += len(block)
        x = np.abs(np.concatenate([carry, block])) if len(carry) else np.abs(block)
        whole = len(x) // per_bin * per_bin
        if whole:
            maxima.append(x[:whole].reshape(-1, per_bin).max(axis=1))
        carry = x[whole:]
    if len(carry):
        maxima.append(np.array([carry.max()], dtype=np.float32))
    bins = np.concatenate(maxima) if maxima else np.zeros(1, dtype=np.float32)
    out = min(n, len(bins))
    edges = np.arange(out + 1) * len(bins) // max(out, 1)  # strictly increasing: out <= len
    pooled = np.maximum.reduceat(bins, edges[:-1]) if out else bins
    pooled = np.clip(np.nan_to_num(pooled), 0.0, 1.0)
    return [round(float(p), 3) for p in pooled], total / info.sample_rate


class PeaksCache:
    """A thread-safe LRU of computed peaks."""

    def __init__(self, capacity: int = 512):
        self.capacity = max(1, int(capacity))
        self._items: OrderedDict[Hashable, tuple[list[float], float]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable, path: str, n: int) -> tuple[list[float], float]:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
            self.misses += 1
        value = compute_peaks(path, n)  # outside the lock: decoding a long file takes a while
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._items)
