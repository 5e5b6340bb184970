"""A recording read as it is: its header (`Source`), a span's bounds in frames, and the
span's frames, at the file's own rate and channels, in the type that holds its samples exactly.

What export (`audio.export`) and playback (`serve.playback`) read through. Unlike
`audio.io.stream` (mono at the model's rate, for embedding) nothing is converted:

- `open_source(path)`: the header (`Source`), or `AudioDecodeError`.
- `span_frames(source, start_s, end_s)`: seconds to a frame range, checked (`ExportError`).
- `read_frames(source, first, last)`: (frames, channels) blocks of that range. libsndfile's
  formats seek to the first frame; the PyAV ones (M4A, WMA...) decode from the start and count,
  as indexing does, so a span means the same seconds it meant in a search hit (playback may
  seek by the container's timestamps instead: `seek=True`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from earshot.errors import AudioDecodeError, EarshotError

BLOCK_FRAMES = 1 << 16  # frames per read: 64 Ki frames (1.5 s of 44.1 kHz), whatever the rate
# A span may end this far past the file's last frame and is taken to mean its end: hit spans
# come from the model-rate signal, whose length rounds differently from the file's.
END_SLACK_S = 0.05
# Sample types libsndfile reads without loss into these NumPy types.
_EXACT_DTYPE = {
    "PCM_S8": "int16",
    "PCM_U8": "int16",
    "PCM_16": "int16",
    "ULAW": "int16",
    "ALAW": "int16",
    "PCM_24": "int32",
    "PCM_32": "int32",
    "FLOAT": "float32",
    "DOUBLE": "float64",
}


class ExportError(EarshotError):
    """A span that cannot be exported as asked (bounds, output name, an existing file)."""


@dataclass(frozen=True)
class Source:
    """A recording's header, as export needs it."""

    path: str
    sample_rate: int
    channels: int
    frames: int
    format: str  # libsndfile's container name ("WAV", "AIFF", "FLAC") or PyAV's ("MP4", "ASF")
    subtype: str  # "PCM_16", "FLOAT", "VORBIS", ...; PyAV's codec name ("AAC", "WMAV2")
    by_av: bool  # decoded by PyAV, not libsndfile

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate

    @property
    def suffix(self) -> str:
        return os.path.splitext(self.path)[1].lower()

    @property
    def dtype(self) -> str:
        """The NumPy type its samples are read in (exact for PCM and float files)."""
        return "float32" if self.by_av else _EXACT_DTYPE.get(self.subtype, "float32")


def open_source(path: str | os.PathLike) -> Source:
    """The file's header (AudioDecodeError where it will not open or holds no frames)."""
    from earshot.audio.io import _probe

    info, by_av = _probe(os.fspath(path))
    if info.frames <= 0:
        raise AudioDecodeError(info.path, "its length is unknown or zero; re-export it")
    # A streaming FLAC (length unknown in its header) goes to PyAV for reading; its subtype is
    # libsndfile's (PCM_16...), so it is still written as FLAC.
    return Source(
        path=info.path,
        sample_rate=int(info.sample_rate),
        channels=int(info.channels),
        frames=int(info.frames),
        format=str(info.format),
        subtype=str(info.subtype),
        by_av=by_av,
    )


def span_frames(source: Source, start_s: float | None, end_s: float | None) -> tuple[int, int]:
    """[first, last) frames of the span from `start_s` to `end_s` seconds (None: the file's
    start / end). An end up to `END_SLACK_S` past the file's end means its end."""
    length = source.duration_s
    start = 0.0 if start_s is None else float(start_s)
    end = length if end_s is None else float(end_s)
    for name, value in (("start", start), ("end", end)):
        if not math.isfinite(value):
            raise ExportError(f"--{name} must be a number of seconds, not {value}")
    if start < 0:
        raise ExportError(f"the span starts before the file does (start {start:g} s < 0)")
    if end <= start:
        raise ExportError(f"the span must end after it starts (start {start:g} s, end {end:g} s)")
    if start >= length:
        raise ExportError(
            f"the span starts at {start:g} s, but '{source.path}' is only {length:.3f} s long"
        )
    if end > length + END_SLACK_S:
        raise ExportError(
            f"the span ends at {end:g} s, but '{source.path}' is only {length:.3f} s long"
        )
    first = round(start * source.sample_rate)
    last = min(source.frames, round(end * source.sample_rate))
    if last <= first:
        raise ExportError(f"the span from {start:g} s to {end:g} s holds no whole sample")
    return first, last


def read_frames(
    source: Source,
    first: int,
    last: int,
    block: int = BLOCK_FRAMES,
    dtype: str | None = None,
    seek: bool = False,
) -> Iterator[np.ndarray]:
    """(n, channels) blocks of frames [first, last) in `dtype` (default `source.dtype`, exact);
    fewer frames than asked only where the file holds fewer than its header says (a PyAV
    length is an estimate). PyAV's formats are always float32.

    `seek=True` (playback, never export) lets a PyAV format start near `first` by the
    container's timestamps instead of decoding from the start: sample-exact where the
    timestamps count samples (AAC), within a millisecond where they are coarser (WMA's)."""
    if source.by_av:
        yield from _read_av(source, first, last, block, seek)
        return
    import soundfile as sf

    from earshot.audio.failures import describe
    from earshot.audio.io import _native

    try:
        with sf.SoundFile(_native(source.path)) as f:
            f.seek(first)
            todo = last - first
            while todo > 0:
                got = f.read(min(block, todo), dtype=dtype or source.dtype, always_2d=True)
                if len(got) == 0:
                    break
                todo -= len(got)
                yield got
    except (sf.SoundFileError, RuntimeError, OSError, ValueError) as e:
        raise AudioDecodeError(source.path, f"reading the span failed ({describe(e)})") from e


# A seek starts this many seconds before the wanted frame: the decoder's first frame after a
# jump can be garbage (overlapped transforms need the packet before), and containers land on
# a packet near, not at, the asked time.
SEEK_PREROLL_S = 0.5
# Below this, decoding from the start is as quick as a seek and always exact.
SEEK_MIN_S = 10.0
# Codecs whose every frame but the last holds the same number of samples: a landing found
# from coarse timestamps (WMA's are milliseconds) snaps to that grid, and is then exact.
FIXED_FRAME_CODECS = frozenset({"aac", "wmav1", "wmav2", "alac", "mp2", "mp3", "mp3float", "ac3"})


def _read_av(
    source: Source, first: int, last: int, block: int, seek: bool = False
) -> Iterator[np.ndarray]:
    """Decode from the start (as indexing did, so the seconds agree), drop frames before
    `first`, stop at `last`; with `seek`, start from the container's packet before `first`
    when the timestamps allow it (`_seek_to`)."""
    import av

    from earshot.audio.av_io import _describe, _open

    at = 0
    pending: list[np.ndarray] = []
    held = 0
    with _open(source.path) as (container, track):
        planar = av.AudioResampler(format="fltp")
        try:
            frames = container.decode(track)
            if seek and first > SEEK_MIN_S * source.sample_rate:
                at, frames = _seek_to(container, track, source.sample_rate, first)
            for frame in frames:
                for out in planar.resample(frame):
                    x = out.to_ndarray().T  # (n, channels)
                    if x.shape[1] != source.channels:  # a layout change: keep the first ones
                        x = _fit_channels(x, source.channels)
                    lo, hi = max(first - at, 0), min(last - at, len(x))
                    at += len(x)
                    if hi > lo:
                        pending.append(x[lo:hi])
                        held += hi - lo
                    if held >= block:
                        yield np.ascontiguousarray(np.concatenate(pending), dtype=np.float32)
                        pending, held = [], 0
                if at >= last:
                    break
        except av.FFmpegError as e:
            raise AudioDecodeError(source.path, f"decoding failed ({_describe(e)})") from e
    if pending:
        yield np.ascontiguousarray(np.concatenate(pending), dtype=np.float32)


def _seek_to(container, track, rate: int, first: int):
    """(the frame index the returned decoder starts at, the decoder), positioned at least
    `SEEK_PREROLL_S` before frame `first` by the container's timestamps, counted from the
    first frame's as decoding from the start counts them; or (0, a decoder from the start)
    where a timestamp is missing or the container lands too late."""
    import itertools

    def from_start():
        container.seek(0, stream=track, backward=True, any_frame=False)
        return 0, container.decode(track)

    head = next(container.decode(track), None)
    if head is None or head.pts is None or not track.time_base:
        return from_start()
    tb, p0 = float(track.time_base), head.pts
    target = p0 + (first / rate - SEEK_PREROLL_S) / tb
    if target <= p0:
        return from_start()
    container.seek(int(target), stream=track, backward=True, any_frame=False)
    frames = container.decode(track)
    landed = next(frames, None)
    if landed is None or landed.pts is None:
        return from_start()
    at = round((landed.pts - p0) * tb * rate)
    n = landed.samples
    if track.codec_context.name in FIXED_FRAME_CODECS and n == head.samples and n > 0:
        at = round(at / n) * n  # every frame before is n long: millisecond pts snap to it
    if at < 0 or at > first - SEEK_PREROLL_S * rate / 2:
        return from_start()
    return at, itertools.chain([landed], frames)


def _fit_channels(x: np.ndarray, channels: int) -> np.ndarray:
    if x.shape[1] > channels:
        return x[:, :channels]
    return np.pad(x, ((0, 0), (0, channels - x.shape[1])))
