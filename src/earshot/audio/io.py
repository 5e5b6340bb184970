"""Audio files in, mono float32 at one sample rate out, a block at a time.

soundfile (libsndfile) decodes and soxr resamples; M4A/AAC, MP4 and the other formats libsndfile
does not read go through PyAV by their suffix (audio/av_io.py), with the same checks. Whatever a
file does wrong, the only exception that escapes is `AudioDecodeError`, naming the file and the
reason; a bad argument (a sample rate of 0) is a programming error and raises `ValueError`.
A reason never quotes the file's content (a link may point at a private file, and reasons are
stored and served): it names the kind of content, not its bytes.

What is refused rather than guessed at:

- a sample rate outside 1 kHz to 2 MHz (`MIN_RATE`, `MAX_RATE`): no recording has one, and a
  corrupt header's 1 Hz would make 40 KB of WAV into 5.6 hours of 32 kHz audio;
- NaN or infinite samples, and samples beyond `MAX_AMPLITUDE` (1,000 × full scale, +60 dBFS):
  float files hold full scale at ±1, and overs of a few dB are normal, but a file at 1e20 is
  corrupt or written on another scale; scaling it would hide that, clipping would make a square
  wave of it, and the model's vectors go NaN above about 1e17. Re-export such a file
  normalised.

How libsndfile 1.2.2 treats a file cut short (found by slicing valid files' bytes):

- WAV, AIFF: the frame count is clamped to the bytes present, so the readable part decodes
  with no error. earshot reads the data chunk's declared size itself (audio/headers.py) and
  refuses a file that holds less than it promises, at open, as "truncated".
- FLAC: the readable part decodes, then reading fails ("Internal psf_fseek() failed", or
  "flac decoder lost sync" for a tiny file). `stream()` has yielded the good blocks by then
  and raises `AudioDecodeError`, so a truncated FLAC is never taken for a short one.
- Ogg Vorbis, Ogg Opus: the length comes from the last complete page, so the readable part
  decodes. A cut inside the first pages fails at open ("file is malformed") or leaves zero
  frames; both raise `AudioDecodeError`.
- MP3: `probe()` reports the length the Xing header promises, but decoding stops at the cut,
  so `stream()` yields fewer samples than `probe().frames`, with no error. A cut inside the
  first frame fails at open.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr

from earshot.audio.av_io import (
    AV_HINT,
    AV_SUFFIXES,
    DecodeFailure,
    decode_av,
    looks_like_av,
    probe_av,
)
from earshot.audio.cstderr import named_c_stderr
from earshot.audio.failures import HINT, describe, sniff, why_unopenable
from earshot.audio.headers import data_shortfall, flac_total_samples
from earshot.errors import AudioDecodeError

PathLike = str | os.PathLike[str]

# Bounds one read's buffer (32 MiB of float32) however many channels a file has: 30 s of a
# 64-channel 48 kHz recording would otherwise take 370 MB.
_MAX_BLOCK_SAMPLES = 1 << 23

MIN_RATE, MAX_RATE = 1_000, 2_000_000  # Hz: a header outside this is taken for corrupt
MAX_AMPLITUDE = 1000.0  # |sample| above this (+60 dBFS) is refused: see the module docstring


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header says. `frames` counts per channel, at `sample_rate`."""

    path: str
    sample_rate: int
    channels: int
    frames: int
    duration_s: float
    format: str  # container: libsndfile's "WAV", "FLAC", "OGG", "MP3", ...; PyAV's "MP4", ...
    subtype: str  # its encoding: "PCM_16", "FLOAT", "VORBIS", "OPUS", "MPEG_LAYER_III", ...


def probe(path: PathLike) -> AudioInfo:
    """Read a file's header without decoding it. Raises AudioDecodeError where it won't open."""
    return _probe(os.fspath(path))[0]


def _probe(p: str, count: bool = True) -> tuple[AudioInfo, bool]:
    """The header, and whether PyAV (not libsndfile) reads the file. A FLAC whose header
    leaves its length unknown is counted by decoding it, unless not `count`."""
    _check_path(p)
    if _by_av(p):
        return probe_av(p), True
    if flac_total_samples(p) == 0:
        return _probe_streaming_flac(p, count), True
    with _open(p) as f:
        info = AudioInfo(
            path=p,
            sample_rate=int(f.samplerate),
            channels=int(f.channels),
            frames=int(f.frames),
            duration_s=f.frames / f.samplerate,
            format=str(f.format),
            subtype=str(f.subtype),
        )
    return info, False


def stream(path: PathLike, sample_rate: int, block_s: float = 30.0) -> Iterator[np.ndarray]:
    """Decode a file block by block: mono float32 at `sample_rate`. Yields (samples,) arrays.

    Never holds the whole file: each read is about `block_s` seconds of the input (less for
    files with many channels), averaged over channels, then resampled with a streaming soxr
    resampler whose tail is flushed at the end, so the blocks add up to about
    round(frames * sample_rate / input_rate) samples. Blocks vary in length. At the file's own
    rate no resampling happens and the samples are exactly libsndfile's, averaged.

    A file that won't open raises AudioDecodeError here, at the call; a file that fails later
    (truncated FLAC, NaN samples) raises it from the iteration, after the good blocks.
    """
    _check_rate(sample_rate)
    if not (isinstance(block_s, numbers.Real) and math.isfinite(block_s) and block_s > 0):
        raise ValueError(f"block_s must be a positive number of seconds, got {block_s!r}")
    p = os.fspath(path)
    # Opened once here only to fail fast: a generator body would not run until next().
    info, by_av = _probe(p, count=False)
    if by_av:
        return _decode_av(p, int(sample_rate), float(block_s), info)
    return _decode(p, int(sample_rate), float(block_s))


def load(path: PathLike, sample_rate: int) -> np.ndarray:
    """The whole signal, mono float32 at `sample_rate`: (samples,). For short clips."""
    blocks = list(stream(path, sample_rate))
    return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)


class _ToRate:
    """Mono blocks at the input rate → checked blocks at the output rate, streaming; counts the
    input samples taken, which says where a failure happened."""

    def __init__(self, path: str, rate: int, sample_rate: int):
        self.path, self.rate, self.done = path, rate, 0
        self.resampler = None
        if rate != sample_rate:
            self.resampler = soxr.ResampleStream(rate, sample_rate, 1, dtype="float32")

    def feed(self, mono: np.ndarray) -> np.ndarray:
        _check_samples(self.path, mono, self.done / self.rate, self.rate)
        self.done += len(mono)
        return mono if self.resampler is None else self.resampler.resample_chunk(mono)

    def finish(self, hint: str) -> np.ndarray:
        """The resampler's tail; AudioDecodeError if nothing was decoded at all."""
        if self.done == 0:
            raise AudioDecodeError(self.path, f"no audio could be decoded (cut short?); {hint}")
        if self.resampler is None:
            return np.zeros(0, dtype=np.float32)
        return self.resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)

    def failed(self, promised_s: float, detail: str, hint: str) -> AudioDecodeError:
        """`promised_s` 0: a header that does not give the length (a streaming FLAC)."""
        of = f" of the {promised_s:.1f} s its header promises" if promised_s > 0 else ""
        return AudioDecodeError(
            self.path,
            f"truncated or corrupt: decoding failed after {self.done / self.rate:.1f} s"
            f"{of} ({detail}); {hint}",
        )


def _decode(path: str, sample_rate: int, block_s: float) -> Iterator[np.ndarray]:
    convert, promised = _ToRate(path, sample_rate, sample_rate), 0.0  # until it opens
    try:
        with _open(path) as f:
            rate, channels = int(f.samplerate), int(f.channels)
            convert, promised = _ToRate(path, rate, sample_rate), f.frames / rate
            mp3 = str(f.format) == "MP3"  # libmpg123 prints to fd 2 with no file name
            block = max(1, min(round(block_s * rate), _MAX_BLOCK_SAMPLES // channels))
            buf = np.empty((block, channels), dtype=np.float32)  # (frames, channels), reused
            weights = np.full(channels, 1.0 / channels, dtype=np.float32)
            while True:
                # read() with `out` goes past the header's frame count if the data does, and
                # returns only what was decoded; blocks() would pad a short read with stale data.
                with named_c_stderr(path) if mp3 else contextlib.nullcontext():
                    got = f.read(block, dtype="float32", always_2d=True, out=buf)
                if len(got) == 0:
                    break
                # A mat-vec, not got.mean(axis=1): numpy's strided mean took 6.7 ms per 10 s of
                # 44.1 kHz stereo, the mat-vec 0.1 ms (and is exact for stereo).
                mono = got[:, 0].copy() if channels == 1 else got @ weights
                out = convert.feed(mono)
                if len(out):
                    yield out
            tail = convert.finish(HINT)
            if len(tail):
                yield tail
    except AudioDecodeError:
        raise
    except (sf.SoundFileError, RuntimeError, OSError, ValueError, EOFError) as e:
        raise convert.failed(promised, describe(e), HINT) from e


def _decode_av(
    path: str, sample_rate: int, block_s: float, info: AudioInfo
) -> Iterator[np.ndarray]:
    """`_decode` for the formats PyAV reads (audio/av_io.py): the same checks and resampling."""
    rate = info.sample_rate
    block = max(1, min(round(block_s * rate), _MAX_BLOCK_SAMPLES // info.channels))
    convert = _ToRate(path, rate, sample_rate)
    try:
        for mono in decode_av(path, block):
            out = convert.feed(mono)
            if len(out):
                yield out
    except DecodeFailure as e:
        raise convert.failed(info.duration_s, str(e), AV_HINT) from e
    tail = convert.finish(AV_HINT)
    if len(tail):
        yield tail


def _probe_streaming_flac(path: str, count: bool) -> AudioInfo:
    """A FLAC with STREAMINFO total_samples = 0, "unknown": what a streaming encoder writes, a
    valid file. libsndfile 1.2.2 reports SF_COUNT_MAX frames for it and fails with "Internal
    psf_fseek() failed" in its last block, so PyAV decodes it; its length is counted by decoding
    (`count`), else left 0 (unknown)."""
    info = probe_av(path)
    try:  # libsndfile names the sample format (PCM_16, PCM_24) as for every other FLAC
        with sf.SoundFile(_native(path)) as f:
            info = dataclasses.replace(info, subtype=str(f.subtype))
    except (sf.SoundFileError, RuntimeError, OSError, ValueError, TypeError):
        pass
    if not count:
        return info
    frames = 0
    try:
        for mono in decode_av(path, 1 << 20):
            frames += len(mono)
    except DecodeFailure as e:
        raise _ToRate(path, info.sample_rate, info.sample_rate).failed(0.0, str(e), HINT) from e
    if frames == 0:
        raise AudioDecodeError(path, f"contains no audio frames (empty or cut short); {HINT}")
    return dataclasses.replace(info, frames=frames, duration_s=frames / info.sample_rate)


def _by_av(path: str) -> bool:
    """PyAV reads MP4, ASF and ADTS content whatever the name, and files named like them
    (`AV_SUFFIXES`) unless they start like a format of libsndfile's."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return False  # libsndfile's path words the error
    if looks_like_av(head):
        return True
    return sniff(head) is None and os.path.splitext(path)[1].lower() in AV_SUFFIXES


def _check_path(path: str) -> None:
    """Raise AudioDecodeError unless `path` is a non-empty regular file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise AudioDecodeError(path, "no such file; check the path") from None
    except PermissionError:
        raise AudioDecodeError(path, "permission denied; check the file's permissions") from None
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the path
        raise AudioDecodeError(path, f"cannot access it ({describe(e)})") from None
    if stat.S_ISDIR(st.st_mode):
        raise AudioDecodeError(path, "is a directory, not an audio file")
    if not stat.S_ISREG(st.st_mode):
        # libsndfile would block forever on a FIFO with no writer.
        raise AudioDecodeError(path, "not a regular file (a pipe or device); save the audio first")
    if st.st_size == 0:
        raise AudioDecodeError(path, f"empty file (0 bytes); {HINT}")


def _open(path: str) -> sf.SoundFile:
    """Open a file `_check_path` passed for reading, or raise AudioDecodeError saying why not."""
    try:
        f = sf.SoundFile(_native(path))
    except (sf.SoundFileError, RuntimeError, OSError, ValueError, TypeError) as e:
        raise AudioDecodeError(path, why_unopenable(path, e)) from e
    try:
        if f.frames <= 0:
            raise AudioDecodeError(path, f"contains no audio frames (empty or cut short); {HINT}")
        check_header_rate(path, int(f.samplerate))
        cut = data_shortfall(path)
        if cut is not None:
            have = f.frames / f.samplerate
            promised = have * cut.declared / max(1, cut.present)
            raise AudioDecodeError(
                path,
                f"truncated: the file holds {have:.1f} s of the {promised:.1f} s its header "
                f"promises ({cut.present:,} of {cut.declared:,} bytes of audio; an interrupted "
                f"copy or download?); {HINT}",
            )
    except BaseException:
        f.close()
        raise
    return f


def _native(path: str) -> str | bytes:
    """`path` as libsndfile can open it: soundfile encodes a str strictly as UTF-8, so a POSIX
    name that is not UTF-8 (decoded by Python with surrogate escapes) goes as its own bytes."""
    if os.name == "posix":
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:
            return os.fsencode(path)
    return path


def check_header_rate(path: str, rate: int) -> None:
    """AudioDecodeError unless a file's own sample rate is within MIN_RATE..MAX_RATE."""
    if not MIN_RATE <= rate <= MAX_RATE:
        raise AudioDecodeError(
            path,
            f"its header says a sample rate of {rate:,} Hz, outside {MIN_RATE:,} to "
            f"{MAX_RATE:,} Hz (corrupt?); {HINT}",
        )


def _check_samples(path: str, mono: np.ndarray, offset_s: float, rate: int) -> None:
    """AudioDecodeError for NaN, infinite or absurdly loud samples (see the module docstring)."""
    if not len(mono):
        return
    peak = float(np.max(np.abs(mono)))  # NaN if any sample is NaN
    if peak <= MAX_AMPLITUDE:
        return
    finite = np.isfinite(mono)
    if not finite.all():
        at = offset_s + int(np.argmin(finite)) / rate
        raise AudioDecodeError(
            path, f"contains NaN or infinite samples (first at {at:.3f} s); re-export it"
        )
    at = offset_s + int(np.argmax(np.abs(mono) > MAX_AMPLITUDE)) / rate
    raise AudioDecodeError(
        path,
        f"samples reach {peak:.3g}, far beyond full scale (±1; first above {MAX_AMPLITUDE:g} at "
        f"{at:.3f} s): corrupt, or float data on another scale; re-export it normalised",
    )


def _check_rate(sample_rate: int) -> None:
    if not isinstance(sample_rate, numbers.Integral) or isinstance(sample_rate, bool):
        raise ValueError(f"sample_rate must be an integer in Hz, got {sample_rate!r}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
