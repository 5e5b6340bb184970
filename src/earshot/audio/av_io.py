"""AAC and the other formats libsndfile does not read (M4A, MP4, 3GP, ADTS, WMA), through PyAV.

Phones record M4A (AAC in an MP4 container), and archives hold video files whose sound is
wanted; libsndfile reads neither. PyAV (FFmpeg's libraries, bundled in its wheel) decodes them.
`audio.io.probe` and `audio.io.stream` send a file here by its suffix (`AV_SUFFIXES`), after the
same checks of the path, so the rest of earshot sees one interface, the same mono float32
blocks and the same `AudioDecodeError`s.

Differences from libsndfile's formats, which callers may see:
- `frames` and `duration_s` come from the container's header (an estimate from the bit rate for
  a bare ADTS `.aac`), so `stream()` can yield slightly more or fewer samples than promised:
  AAC decodes whole 1,024-sample frames, and the encoder's delay is trimmed only where the
  file says how much it is (an MP4 edit list).
- Only the first audio track is decoded; a video track's packets are read past, not decoded.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np

from earshot.errors import AudioDecodeError

if TYPE_CHECKING:
    from earshot.audio.io import AudioInfo

# Matched case-insensitively on the suffix; everything else goes to libsndfile.
AV_SUFFIXES = frozenset({".m4a", ".m4b", ".mp4", ".m4v", ".mov", ".3gp", ".aac", ".wma"})

AV_HINT = "re-export it (e.g. as FLAC or WAV)"

# How these files start, whatever they are called: MP4/QuickTime atoms at byte 4, the ASF
# (WMA) header GUID, or an ADTS frame's sync word (12 bits set, layer 00: never an MP3 frame).
_ATOMS = (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip")
_ASF = bytes.fromhex("3026b2758e66cf11")


def looks_like_av(head: bytes) -> bool:
    """Whether a file's first bytes are a container that goes to PyAV."""
    if head[4:8] in _ATOMS or head.startswith(_ASF):
        return True
    return len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xF6) == 0xF0


def probe_av(path: str) -> AudioInfo:
    from earshot.audio.io import AudioInfo, check_header_rate

    with _open(path) as (container, track):
        rate = int(track.codec_context.sample_rate or 0)
        channels = int(track.codec_context.layout.nb_channels or 0)
        if rate <= 0 or channels <= 0:
            raise AudioDecodeError(path, f"its audio track has no rate or channels; {AV_HINT}")
        check_header_rate(path, rate)
        if track.duration is not None and track.time_base is not None:
            seconds = float(track.duration * track.time_base)
        elif container.duration is not None:
            seconds = container.duration / 1_000_000  # AV_TIME_BASE
        else:
            seconds = 0.0
        names = container.format.name.split(",")  # "mov,mp4,m4a,3gp,3g2,mj2", "aac", "asf"
        return AudioInfo(
            path=path,
            sample_rate=rate,
            channels=channels,
            frames=max(0, round(seconds * rate)),
            duration_s=max(0.0, seconds),
            format="MP4" if "mp4" in names else names[0].upper(),
            subtype=str(track.codec_context.name).upper(),
        )


def decode_av(path: str, block_samples: int) -> Iterator[np.ndarray]:
    """Blocks of about `block_samples`, every channel averaged, float32, at the track's rate
    (`probe_av`). A file that fails part-way raises `DecodeFailure` after the good blocks (the
    caller knows how far it got); one that will not open, or changes its sample rate part-way
    (no longer one signal), AudioDecodeError."""
    import av

    with _open(path) as (container, track):
        rate = int(track.codec_context.sample_rate)
        to_planar = av.AudioResampler(format="fltp")  # any sample format → (channels, n) float
        pending: list[np.ndarray] = []
        held = 0
        try:
            for frame in container.decode(track):
                for planar in to_planar.resample(frame):
                    if planar.sample_rate != rate:
                        raise AudioDecodeError(
                            path,
                            f"its sample rate changes from {rate} to {planar.sample_rate} Hz; "
                            f"{AV_HINT}",
                        )
                    samples = planar.to_ndarray()
                    mono = samples[0] if len(samples) == 1 else samples.mean(axis=0)
                    pending.append(mono.astype(np.float32, copy=False))
                    held += len(mono)
                if held >= block_samples:
                    yield np.concatenate(pending)
                    pending, held = [], 0
        except av.FFmpegError as e:
            if pending:  # the good part first, as libsndfile's formats do
                yield np.concatenate(pending)
            raise DecodeFailure(_describe(e)) from e
        if pending:
            yield np.concatenate(pending)


@contextmanager
def _open(path: str):
    """`with _open(path) as (container, audio_track)`, or AudioDecodeError saying why not."""
    import av

    try:
        container = av.open(path, mode="r")
    except av.FFmpegError as e:
        raise AudioDecodeError(path, _why_unopenable(path, e)) from e
    except (OSError, ValueError, UnicodeDecodeError) as e:
        # The exception's type, not its message: a decoding error's message quotes bytes.
        raise AudioDecodeError(path, f"cannot open it ({type(e).__name__}); {AV_HINT}") from e
    with container:
        if not container.streams.audio:
            raise AudioDecodeError(path, "has no audio track (a video without sound?)")
        yield container, container.streams.audio[0]


class DecodeFailure(Exception):
    """Decoding stopped part-way; the message is FFmpeg's reason."""


def _describe(e: Exception) -> str:
    return getattr(e, "strerror", None) or str(e) or type(e).__name__


def _why_unopenable(path: str, e: Exception) -> str:
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError:
        head = b""
    if looks_like_av(head):
        return f"corrupt or truncated audio/video file ({_describe(e)}); {AV_HINT}"
    from earshot.audio.failures import content_kind

    return (
        f"not a readable audio or video file ({content_kind(head)}); check what was saved "
        f"under this name"
    )
