"""Cutting a stream of samples into overlapping fixed-length windows, without holding it all.

Windows start at 0, hop, 2*hop, ... and stop after the first one that reaches the end of the
signal. That last window is zero-padded at its end to the window length, as PANNs pads a
short clip, but its `end_s` is where the signal really ends: 23 s with 10 s windows and a 5 s
hop gives [0, 10], [5, 15], [10, 20], [15, 23]; 20 s gives [0, 10], [5, 15], [10, 20].
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from earshot.audio.io import PathLike, stream
from earshot.config import AudioConfig


# eq=False: a generated __eq__ would compare arrays and raise on `if a == b`.
@dataclass(frozen=True, eq=False)
class Window:
    """One window of mono audio. `samples` always has the full window length."""

    start_s: float
    end_s: float  # the signal's end for a padded last window, else start_s + window
    samples: np.ndarray  # (window_samples,) float32, zero-padded at the end if short

    def __post_init__(self) -> None:
        if self.samples.ndim != 1 or self.end_s < self.start_s:
            raise ValueError(
                f"a window needs 1-D samples and end_s >= start_s, got shape "
                f"{self.samples.shape}, [{self.start_s}, {self.end_s}]"
            )


def window_bounds(num_samples: int, window: int, hop: int) -> list[tuple[int, int]]:
    """[start, end) sample indices of the windows `windows()` makes of num_samples samples.

    `end` is clamped to num_samples; the reference that the streaming code is tested against,
    and a way to count windows from a file's header before decoding it.
    """
    _check_sizes(window, hop)
    bounds: list[tuple[int, int]] = []
    start = 0
    while start < num_samples:
        bounds.append((start, min(start + window, num_samples)))
        if start + window >= num_samples:
            break
        start += hop
    return bounds


def windows(
    blocks: Iterable[np.ndarray],
    sample_rate: int,
    window_s: float = 10.0,
    hop_s: float = 5.0,
) -> Iterator[Window]:
    """Cut (samples,) blocks of any lengths into Windows, yielding each as soon as it is known.

    Holds at most about one window plus one block of samples. An empty signal gives no windows.
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    window, hop = round(window_s * sample_rate), round(hop_s * sample_rate)
    _check_sizes(window, hop)
    return _windows(iter(blocks), sample_rate, window, hop)


def window_file(path: PathLike, audio: AudioConfig) -> Iterator[Window]:
    """A file's windows at the model's sample rate; raises AudioDecodeError for a bad file."""
    return windows(stream(path, audio.sample_rate), audio.sample_rate, audio.window_s, audio.hop_s)


def _windows(blocks: Iterator[np.ndarray], rate: int, window: int, hop: int) -> Iterator[Window]:
    # Pending blocks are joined only once a window's worth has arrived, so tiny blocks do not
    # cost a window-sized copy each.
    pending: list[np.ndarray] = []
    have = 0  # samples in `pending`
    start = 0  # sample index of pending[0][0], which is the next window's start
    reached = 0  # sample index where the last yielded window ended (0: none yet)
    for block in blocks:
        block = np.asarray(block, dtype=np.float32)
        if block.ndim != 1:
            raise ValueError(f"windows() takes 1-D mono blocks, got shape {block.shape}")
        if not len(block):
            continue
        pending.append(block)
        have += len(block)
        if have < window:
            continue
        buf = np.concatenate(pending) if len(pending) > 1 else pending[0]
        offset = 0
        while have - offset >= window:
            # A copy: a kept window must not pin the whole buffer.
            samples = buf[offset : offset + window].copy()
            yield Window(start / rate, (start + window) / rate, samples)
            reached = start + window
            offset += hop
            start += hop
        # hop <= window, so offset never passes the buffer's end.
        pending = [buf[offset:]] if offset < len(buf) else []
        have = len(buf) - offset
    end = start + have
    if end > reached:
        samples = np.zeros(window, dtype=np.float32)
        if pending:
            rest = np.concatenate(pending)
            samples[: len(rest)] = rest
        yield Window(start / rate, end / rate, samples)


def _check_sizes(window: int, hop: int) -> None:
    if window <= 0 or not 0 < hop <= window:
        raise ValueError(
            f"need a window of at least one sample and 0 < hop <= window, got {window}, {hop}"
        )
