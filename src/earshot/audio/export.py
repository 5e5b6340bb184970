"""A span of a recording, cut at the file's own sample rate and channels, and written out.

What `earshot export` and `GET /api/clip/{id}` are made of. Unlike `audio.io.stream` (mono at
the model's rate, for embedding) this keeps the recording as it is: every channel, its own
rate, and samples read in the type that holds them exactly (16-bit as int16, 24/32-bit as
int32, float as float), so a span of a PCM or float file written in its own format or as WAV
holds the source's samples bit for bit (apart from the fades, when asked for).

The span is read through `audio.recording` (`open_source`, `span_frames`, `read_frames`).

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

from earshot.audio.recording import ExportError, Source, read_frames

FADE_SHAPES = ("linear", "equal-power")
MAX_FADE_MS = 10_000.0

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
