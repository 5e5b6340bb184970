"""A span of a recording, cut at the file's own sample rate and channels, and written out.

What `earshot export` and `GET /api/clip/{id}` are made of. Unlike `audio.io.stream` (mono at
the model's rate, for embedding) this keeps the recording as it is: every channel, its own
rate, and samples read in the type that holds them exactly (16-bit as int16, 24/32-bit as
int32, float as float), so a span of a PCM or float file written in its own format or as WAV
holds the source's samples bit for bit (apart from the fades, when asked for).

- `open_source(path)`: the header (`Source`), or `AudioDecodeError`.
- `span_frames(source, start_s, end_s)`: seconds to a frame range, checked (`ExportError`).
- `read_frames(source, first, last)`: (frames, channels) blocks of that range. libsndfile's
  formats seek to the first frame; the PyAV ones (M4A, WMA...) decode from the start and count,
  as indexing does, so a span means the same seconds it meant in a search hit.
- `write_span(...)`: the span in the source's own format where a writer exists (soundfile:
  WAV, AIFF, FLAC, Ogg Vorbis/Opus, MP3, CAF, W64, AU...; PyAV: AAC/ALAC in MP4, WMA, ADTS),
  else WAV with a note; optional fades; atomically (`fsutil.atomic_path`), never over an
  existing file unless asked.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from earshot.errors import AudioDecodeError, EarshotError

BLOCK_FRAMES = 1 << 16  # frames per read: 64 Ki frames (1.5 s of 44.1 kHz), whatever the rate
# A span may end this far past the file's last frame and is taken to mean its end: hit spans
# come from the model-rate signal, whose length rounds differently from the file's.
END_SLACK_S = 0.05
FADE_SHAPES = ("linear", "equal-power")
MAX_FADE_MS = 10_000.0

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
# What a WAV export keeps of the source's sample type; anything else (lossy, ADPCM, ...) is
# decoded and written as 16-bit PCM.
_WAV_KEEPS = {"PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"}
_LOSSY = {"VORBIS", "OPUS", "MPEG_LAYER_I", "MPEG_LAYER_II", "MPEG_LAYER_III", "AAC", "MP3"}
_LOSSY |= {"MP3FLOAT", "WMAV1", "WMAV2", "WMAPRO", "GSM610", "IMA_ADPCM", "MS_ADPCM", "VOX_ADPCM"}

# PyAV sources: container (PyAV's name, by the source's suffix) and codec it is re-encoded with.
_AV_OUTPUT = {
    ".m4a": "mp4",
    ".m4b": "mp4",
    ".mp4": "mp4",
    ".m4v": "mp4",
    ".mov": "mov",
    ".3gp": "3gp",
    ".aac": "adts",
    ".wma": "asf",
}
_AV_CODEC = {"AAC": "aac", "ALAC": "alac", "MP3": "libmp3lame", "MP3FLOAT": "libmp3lame"}
_AV_CODEC |= {"WMAV2": "wmav2", "WMAV1": "wmav2"}
_AV_LOSSLESS = {"ALAC", "FLAC"}


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


@dataclass(frozen=True)
class Exported:
    """What `write_span` wrote."""

    path: Path
    format: str  # the container written: "WAV", "FLAC", "MP4", ...
    subtype: str
    sample_rate: int
    channels: int
    frames: int
    note: str | None  # a sentence when the result is not simply the source's samples


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

    from earshot.audio.io import _describe, _native

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
        raise AudioDecodeError(source.path, f"reading the span failed ({_describe(e)})") from e


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


# -- fades ------------------------------------------------------------------------------------


def fade_gains(position: np.ndarray, n_total: int, fade: int, shape: str) -> np.ndarray | None:
    """Gain per frame for frames at `position` (0-based within a span of `n_total`) with a fade
    of `fade` frames at both ends; None where no frame of `position` is in a fade."""
    if fade <= 0:
        return None
    fade = min(fade, n_total // 2)
    if fade <= 0:
        return None
    # Ramp over frames 0..fade-1 from 1/(fade+1) up; its mirror at the end. Never exactly 0
    # inside the span, never above 1.
    from_start = position + 1
    from_end = n_total - position
    ramp = np.minimum(np.minimum(from_start, from_end) / (fade + 1), 1.0)
    if not (ramp < 1).any():
        return None
    if shape == "equal-power":
        return np.sin(ramp * (np.pi / 2))
    return ramp


def apply_fades(
    blocks: Iterator[np.ndarray], n_total: int, fade: int, shape: str
) -> Iterator[np.ndarray]:
    """The blocks, faded in and out over `fade` frames each, in their own sample type."""
    at = 0
    for x in blocks:
        gains = fade_gains(np.arange(at, at + len(x)), n_total, fade, shape)
        at += len(x)
        if gains is None:
            yield x
            continue
        y = x.astype(np.float64) * gains[:, None]
        if np.issubdtype(x.dtype, np.integer):
            info = np.iinfo(x.dtype)
            y = np.clip(np.rint(y), info.min, info.max)
        yield y.astype(x.dtype)


# -- writing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """How a span will be written: container and sample type, by which library."""

    format: str  # soundfile's major format, or PyAV's container name when `by_av`
    subtype: str  # soundfile's subtype, or PyAV's codec name
    suffix: str  # the file name's ending, with its dot
    by_av: bool
    note: str | None


def wav_plan(source: Source, note: str | None = None) -> Plan:
    subtype = source.subtype if source.subtype in _WAV_KEEPS and not source.by_av else "PCM_16"
    if subtype == "PCM_16" and source.subtype not in ("PCM_16", "PCM_S8", "PCM_U8"):
        if source.subtype in _LOSSY or source.by_av:
            decoded = f"decoded from {source.subtype}"
        else:
            decoded = f"converted from {source.subtype}"
        note = note or f"written as 16-bit WAV ({decoded})"
    return Plan("WAV", subtype, ".wav", False, note)


def source_plan(source: Source) -> Plan:
    """The source's own format where something here writes it, else WAV with a note."""
    import soundfile as sf

    suffix = source.suffix or ".wav"
    if not source.by_av or source.format == "FLAC":  # FLAC: a streaming one PyAV reads
        fmt = source.format
        if fmt in sf.available_formats() and sf.check_format(fmt, source.subtype):
            note = None
            if source.subtype in _LOSSY:
                note = (
                    f"re-encoded as {source.subtype} (lossy: a second generation); "
                    "--format wav keeps the decoded samples"
                )
            return Plan(fmt, source.subtype, suffix, False, note)
        return wav_plan(source, f"{fmt} {source.subtype} cannot be written here: written as WAV")
    container = _AV_OUTPUT.get(suffix)
    codec = _AV_CODEC.get(source.subtype.upper())
    if container and codec:
        note = None
        if source.subtype.upper() not in _AV_LOSSLESS:
            note = (
                f"re-encoded as {source.subtype} (lossy: a second generation, and the "
                "encoder's start-up delay may shift the span slightly); --format wav keeps "
                "the decoded samples"
            )
        return Plan(container, codec, suffix, True, note)
    return wav_plan(
        source, f"{source.format} {source.subtype} cannot be written here: written as WAV"
    )


def plan_for(source: Source, fmt: str) -> Plan:
    if fmt == "wav":
        return wav_plan(source)
    if fmt == "source":
        return source_plan(source)
    raise ExportError(f"--format is 'wav' or 'source', not '{fmt}'")


def clip_name(source_path: str, first: int, last: int, rate: int, suffix: str) -> str:
    """`<stem>_<start>-<end><suffix>`, seconds with up to 3 decimals, e.g. `rain_1.5-4.wav`."""
    stem = Path(source_path).stem
    return f"{stem}_{_seconds(first / rate)}-{_seconds(last / rate)}{suffix}"


def _seconds(s: float) -> str:
    text = f"{s:.3f}".rstrip("0").rstrip(".")
    return text or "0"


def write_span(
    source: Source,
    first: int,
    last: int,
    target: str | os.PathLike,
    plan: Plan,
    fade_ms: float = 0.0,
    fade_shape: str = "linear",
    force: bool = False,
) -> Exported:
    """Write frames [first, last) of `source` to `target` as `plan` says (atomically). If the
    PyAV encoder refuses (a rate AAC does not take, say), the span is written as WAV instead,
    at `target` with its suffix changed to .wav, and the note says so."""
    from earshot.fsutil import atomic_path

    target = Path(target)
    _check_target(source, target, force)
    if fade_shape not in FADE_SHAPES:
        raise ExportError(f"the fade is {' or '.join(FADE_SHAPES)}, not '{fade_shape}'")
    if not (math.isfinite(fade_ms) and 0 <= fade_ms <= MAX_FADE_MS):
        raise ExportError(f"--fade is 0 to {MAX_FADE_MS:g} ms, not {fade_ms:g}")
    fade = round(fade_ms / 1000 * source.sample_rate)
    n = last - first

    def blocks() -> Iterator[np.ndarray]:
        return apply_fades(read_frames(source, first, last), n, fade, fade_shape)

    if plan.by_av:
        try:
            with atomic_path(target) as tmp:
                frames = _write_av(tmp, plan, source, blocks())
            return Exported(target, plan.format, plan.subtype, source.sample_rate,
                            source.channels, frames, plan.note)  # fmt: skip
        except _EncoderRefused as e:
            target = target.with_suffix(".wav")
            _check_target(source, target, force)
            plan = wav_plan(source, f"the {plan.subtype} encoder refused ({e}): written as WAV")
    with atomic_path(target) as tmp:
        frames = _write_sf(tmp, plan, source, blocks())
    return Exported(target, plan.format, plan.subtype, source.sample_rate, source.channels,
                    frames, plan.note)  # fmt: skip


def _check_target(source: Source, target: Path, force: bool) -> None:
    if target.is_dir():
        raise ExportError(f"'{target}' is a folder; name the file to write")
    if not target.parent.is_dir():
        raise ExportError(f"no folder '{target.parent}' to write '{target.name}' into")
    if target.exists():
        try:
            same = os.path.samefile(target, source.path)
        except OSError:
            same = False
        if same:
            raise ExportError(f"'{target}' is the source recording itself; name another file")
        if not force:
            raise ExportError(f"'{target}' already exists; --force replaces it")


def _write_sf(tmp: Path, plan: Plan, source: Source, blocks: Iterator[np.ndarray]) -> int:
    import soundfile as sf

    frames = 0
    try:
        with sf.SoundFile(
            tmp, "x", samplerate=source.sample_rate, channels=source.channels,
            format=plan.format, subtype=plan.subtype,
        ) as out:  # fmt: skip
            to_int = _INT_TARGET.get(plan.subtype)
            for x in blocks:
                if to_int is not None and x.dtype.kind == "f":
                    x = _float_to_int(x, to_int)
                out.write(x)
                frames += len(x)
    except (sf.SoundFileError, RuntimeError) as e:
        raise ExportError(
            f"cannot write {plan.format} {plan.subtype} at {source.sample_rate} Hz with "
            f"{source.channels} channels ({e}); try --format wav"
        ) from e
    return frames


# Integer subtypes float data is converted to here, not by libsndfile: it scales by 0x7FFF
# where decoders scale by 1/0x8000 (so a 16-bit value read as float came back 1 LSB off) and
# wraps overs instead of clipping them.
_INT_TARGET = {"PCM_U8": "int16", "PCM_S8": "int16", "PCM_16": "int16", "PCM_24": "int32"}
_INT_TARGET |= {"PCM_32": "int32", "ALAC_16": "int16", "ALAC_20": "int32", "ALAC_24": "int32"}
_INT_TARGET |= {"ALAC_32": "int32"}


def _float_to_int(x: np.ndarray, dtype: str) -> np.ndarray:
    info = np.iinfo(dtype)
    scale = float(-int(info.min))  # 32768 or 2^31: the decoders' scale
    return np.clip(np.rint(x.astype(np.float64) * scale), info.min, info.max).astype(dtype)


class _EncoderRefused(Exception):
    pass


def _write_av(tmp: Path, plan: Plan, source: Source, blocks: Iterator[np.ndarray]) -> int:
    import av

    layouts = {1: "mono", 2: "stereo", 6: "5.1", 8: "7.1"}
    layout = layouts.get(source.channels)
    if layout is None:
        raise _EncoderRefused(f"{source.channels} channels")
    frames = 0
    try:
        with av.open(str(tmp), "w", format=plan.format) as out:
            stream = out.add_stream(plan.subtype, rate=source.sample_rate, layout=layout)
            if plan.subtype in ("aac", "libmp3lame", "wmav2"):
                stream.bit_rate = 128_000 * min(source.channels, 2)
            for x in blocks:
                frame = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(x.T, dtype=np.float32), format="fltp", layout=layout
                )
                frame.sample_rate = source.sample_rate
                for packet in stream.encode(frame):
                    out.mux(packet)
                frames += len(x)
            for packet in stream.encode(None):
                out.mux(packet)
    except (av.FFmpegError, ValueError) as e:
        raise _EncoderRefused(str(e)) from e
    return frames
