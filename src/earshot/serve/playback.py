"""Playing every indexed format in the page: files the browser decodes are served as they are;
the rest are transcoded on the fly to 16-bit PCM WAV, streamed and seekable (HTTP Range).

Which formats Chromium's `<audio>` plays was found in headless Chromium 156 (Debian), one
file per format written by libsndfile or PyAV: it plays WAV (also WAVE_FORMAT_EXTENSIBLE and
RF64) holding 8/16/24/32-bit PCM, 32-bit float, µ-law or A-law, at rates up to 384 kHz and
with 6 channels; FLAC; Ogg Vorbis and Opus; MP3; AAC, MP3 or FLAC in MP4/MOV/3GP, and bare
ADTS AAC. It refuses AIFF (any sample type), CAF, W64, AU, WMA, ALAC in MP4, and WAV holding
64-bit float, IMA/MS ADPCM or G.721 ("DEMUXER_ERROR_COULD_NOT_OPEN" / "NO_SUPPORTED_STREAMS").
`browser_plays` is that list; anything not on it is transcoded, so an unknown format is
transcoded rather than failing in the page.

The transcode is a WAV of known length: a 44-byte header, then the frames as 16-bit PCM at
the file's own rate (Chromium plays every rate libsndfile reads), its channels kept up to
two and mixed to mono above that. Its length is computed from the header's frame count, so a
byte range maps to frames, and only those frames are decoded: a seek into an hour-long AIFF
reads a few blocks, not the hour. Nothing is cached. (PyAV's formats, WMA and ALAC, start
from the container's packet before the range, found by its timestamps and snapped to the
codec's fixed frame length, so the samples equal a decode from the start (tested for WMA and
AAC); where timestamps are missing they decode from the start. Their frame count is the
container's estimate, so the output is padded with silence or cut to it.) Clip folders a
killed server left in the temporary folder are removed at the next server's first clip.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from fastapi.responses import FileResponse

from earshot.audio.export import MAX_FADE_MS
from earshot.audio.recording import Source, read_frames

__all__ = ["MAX_FADE_MS", "audio_response", "browser_plays", "clip_response"]

HEADER_BYTES = 44
MAX_WAV_DATA = 0xFFFFFFFF - 36  # the RIFF size field is 32 bits: a longer file plays cut short

# (format, subtype) pairs that Chromium plays as they are (see the module docstring).
_WAV_PLAYS = {"PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "ULAW", "ALAW"}
_MP4_PLAYS = {"AAC", "MP3", "MP3FLOAT", "FLAC", "OPUS"}  # PyAV's decoder names, upper case


def browser_plays(fmt: str | None, subtype: str | None) -> bool:
    """Whether Chromium decodes a file of this container and sample type (as the catalogue
    stores them: libsndfile's names, or PyAV's container and codec)."""
    fmt, subtype = (fmt or "").upper(), (subtype or "").upper()
    if fmt in ("WAV", "WAVEX", "RF64"):
        return subtype in _WAV_PLAYS
    if fmt in ("FLAC", "MP3"):
        return True
    if fmt == "OGG":
        return subtype in ("VORBIS", "OPUS")
    if fmt in ("MP4", "AAC"):  # PyAV: "MP4" (mov,mp4,m4a,3gp) or "AAC" (bare ADTS)
        return subtype in _MP4_PLAYS
    return False


@dataclass(frozen=True)
class WavTranscode:
    """A source as a 16-bit PCM WAV of exactly `length` bytes, any byte range of it on demand."""

    source: Source
    channels: int  # 1 or 2
    frames: int

    @classmethod
    def of(cls, source: Source) -> WavTranscode:
        channels = source.channels if source.channels <= 2 else 1
        frames = min(source.frames, MAX_WAV_DATA // (2 * channels))
        return cls(source, channels, frames)

    @property
    def frame_bytes(self) -> int:
        return 2 * self.channels

    @property
    def length(self) -> int:
        return HEADER_BYTES + self.frames * self.frame_bytes

    def header(self) -> bytes:
        rate, ch = self.source.sample_rate, self.channels
        data = self.frames * self.frame_bytes
        return b"".join(
            (
                b"RIFF",
                struct.pack("<I", 36 + data),
                b"WAVEfmt ",
                struct.pack("<IHHIIHH", 16, 1, ch, rate, rate * ch * 2, ch * 2, 16),
                b"data",
                struct.pack("<I", data),
            )
        )

    def iter_bytes(self, first: int, last: int) -> Iterator[bytes]:
        """Bytes [first, last] (inclusive, as HTTP ranges are) of the WAV."""
        if first < HEADER_BYTES:
            yield self.header()[first : last + 1]
            first = HEADER_BYTES
        if last < first:
            return
        fb = self.frame_bytes
        f0 = (first - HEADER_BYTES) // fb
        f1 = min(self.frames, (last - HEADER_BYTES) // fb + 1)
        skip = (first - HEADER_BYTES) - f0 * fb  # bytes of the first frame before `first`
        todo = last + 1 - first
        for chunk in self._pcm(f0, f1):
            if skip:
                chunk, skip = chunk[skip:], 0
            if len(chunk) > todo:
                chunk = chunk[:todo]
            todo -= len(chunk)
            if chunk:
                yield chunk
            if todo <= 0:
                return

    def _pcm(self, f0: int, f1: int) -> Iterator[bytes]:
        """Frames [f0, f1) as 16-bit little-endian PCM, padded with silence to the promised
        count where the file holds fewer."""
        done = f0
        for x in read_frames(self.source, f0, f1, dtype="float32", seek=True):
            if self.channels == 1 and x.shape[1] > 1:
                x = x.mean(axis=1, keepdims=True)
            x = x[: f1 - done]
            done += len(x)
            yield _to_pcm16(x)
            if done >= f1:
                return
        if done < f1:
            yield bytes((f1 - done) * self.frame_bytes)


def _to_pcm16(x: np.ndarray) -> bytes:
    y = np.clip(np.rint(x * 32768.0), -32768, 32767).astype("<i2")
    return y.tobytes()


_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class RangeNotSatisfiable(Exception):
    pass


def parse_range(header: str | None, length: int) -> tuple[int, int] | None:
    """The inclusive byte range one `Range: bytes=a-b` header asks of `length` bytes; None for
    no header, or one this server answers with the whole body (several ranges, other units).
    RangeNotSatisfiable where no byte of it exists."""
    if not header:
        return None
    m = _RANGE.fullmatch(header.strip())
    if m is None:
        return None
    a, b = m.groups()
    if not a and not b:
        return None
    if not a:  # the last b bytes
        n = int(b)
        if n == 0:
            raise RangeNotSatisfiable
        return max(0, length - n), length - 1
    first = int(a)
    if b and int(b) < first:
        return None  # syntactically invalid: ignored (RFC 9110 14.1.1)
    if first >= length:
        raise RangeNotSatisfiable
    return first, min(int(b) if b else length - 1, length - 1)


# -- the responses app.py sends ----------------------------------------------------------------


def audio_response(info: dict, range_header: str | None):
    """`GET /api/audio/{id}`: the file itself where the browser plays it, else the WAV
    transcode, with Range (206 / 416) either way."""
    from fastapi.responses import Response, StreamingResponse

    from earshot.audio.recording import open_source
    from earshot.errors import ApiError, AudioDecodeError

    headers = {"Cache-Control": "private, no-cache", "Accept-Ranges": "bytes"}
    if browser_plays(info.get("format"), info.get("subtype")):
        ext = str(info.get("ext") or "").lower()
        return FileResponse(
            info["path"],
            media_type=MEDIA_TYPES.get(ext, "application/octet-stream"),
            filename=info["name"],
            content_disposition_type="inline",
            headers=headers,
        )
    try:
        wav = WavTranscode.of(open_source(info["path"]))
    except AudioDecodeError as e:
        raise ApiError(422, f"cannot play file {info['id']}: {e.reason}") from None
    headers["Content-Disposition"] = content_disposition("inline", f"{_stem(info['name'])}.wav")
    headers["X-Earshot-Transcoded"] = f"{info.get('format')} {info.get('subtype')} -> WAV PCM_16"
    try:
        wanted = parse_range(range_header, wav.length)
    except RangeNotSatisfiable:
        return Response(
            status_code=416, headers={**headers, "Content-Range": f"bytes */{wav.length}"}
        )
    first, last, status = 0, wav.length - 1, 200
    if wanted is not None:
        (first, last), status = wanted, 206
        headers["Content-Range"] = f"bytes {first}-{last}/{wav.length}"
    headers["Content-Length"] = str(last - first + 1)
    return StreamingResponse(
        wav.iter_bytes(first, last), status_code=status, media_type="audio/wav", headers=headers
    )


def clip_response(
    info: dict, start: float, end: float, fmt: str, fade_ms: float, fade_shape: str,
    max_clip_s: float,
):  # fmt: skip
    """`GET /api/clip/{id}`: the span written (as `earshot export` writes it) to a temporary
    file, sent as an attachment, then removed."""
    import shutil
    import tempfile

    from earshot.audio.export import clip_name, plan_for, write_span
    from earshot.audio.recording import ExportError, open_source, span_frames
    from earshot.errors import ApiError, AudioDecodeError

    if end - start > max_clip_s:
        raise ApiError(
            422,
            f"a clip is at most {max_clip_s:g} s long (earshot serve --max-clip-s); "
            f"this one is {end - start:g} s",
        )
    try:
        source = open_source(info["path"])
        first, last = span_frames(source, start, end)
        plan = plan_for(source, fmt)
    except ExportError as e:
        raise ApiError(422, str(e).replace(info["path"], info["name"])) from None
    except AudioDecodeError as e:
        raise ApiError(422, f"cannot read file {info['id']}: {e.reason}") from None
    sweep_stale_clips()
    folder = tempfile.mkdtemp(prefix=f"{CLIP_PREFIX}{os.getpid()}-")
    try:
        name = _safe_name(clip_name(info["name"], first, last, source.sample_rate, plan.suffix))
        done = write_span(source, first, last, f"{folder}/{name}", plan, fade_ms, fade_shape)
    except ExportError as e:
        shutil.rmtree(folder, ignore_errors=True)
        raise ApiError(422, str(e).replace(folder + "/", "")) from None
    except AudioDecodeError as e:
        shutil.rmtree(folder, ignore_errors=True)
        raise ApiError(422, f"cannot read file {info['id']}: {e.reason}") from None
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    headers = {
        "Content-Disposition": content_disposition("attachment", done.path.name),
        "Cache-Control": "private, no-store",
    }
    if done.note:
        headers["X-Earshot-Note"] = done.note.encode("ascii", "replace").decode()
    ext = done.path.suffix.lstrip(".").lower()
    return _TemporaryFileResponse(
        folder,
        done.path,
        media_type=MEDIA_TYPES.get(ext, "application/octet-stream"),
        headers=headers,
    )


CLIP_PREFIX = "earshot-clip-"  # + the pid of the server that made it + a random tail
_swept: set[int] = set()  # pids of servers that have swept the temporary folder


def sweep_stale_clips(folder: str | None = None) -> int:
    """Remove clip folders that a dead server left behind (a clip is removed once sent, but a
    server killed while it wrote one or sent it leaves it); once per process, at its first
    clip. A folder names its server's pid; one without a pid is left alone unless it is a day
    old. Returns how many were removed."""
    import tempfile

    from earshot.fsutil import sweep_dead_pid_folders

    if folder is None:
        if os.getpid() in _swept:
            return 0
        _swept.add(os.getpid())
    return sweep_dead_pid_folders(folder or tempfile.gettempdir(), CLIP_PREFIX, 86400)


class _TemporaryFileResponse(FileResponse):
    """A FileResponse whose folder is removed once it is sent, or the client went away (a
    background task is skipped when sending fails)."""

    def __init__(self, folder: str, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.folder = folder

    async def __call__(self, scope, receive, send) -> None:
        import shutil

        try:
            await super().__call__(scope, receive, send)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


MEDIA_TYPES = {
    "wav": "audio/wav",
    "wave": "audio/wav",
    "flac": "audio/flac",
    "ogg": "audio/ogg",
    "oga": "audio/ogg",
    "opus": "audio/ogg",
    "mp3": "audio/mpeg",
    "aif": "audio/aiff",
    "aiff": "audio/aiff",
    "au": "audio/basic",
    "caf": "audio/x-caf",
    "w64": "audio/x-w64",
    "m4a": "audio/mp4",
    "m4b": "audio/mp4",
    "mp4": "audio/mp4",  # the page plays only its sound
    "m4v": "video/mp4",
    "mov": "video/quicktime",
    "3gp": "audio/3gpp",
    "aac": "audio/aac",
    "wma": "audio/x-ms-wma",
}

_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')


def _stem(name: str) -> str:
    stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    return stem or "audio"


def _safe_name(name: str) -> str:
    """A file name with no separators, control characters or characters Windows refuses."""
    name = _UNSAFE.sub("_", name).strip(" .") or "clip"
    if len(name) > 200:
        stem, dot, suffix = name.rpartition(".")
        name = f"{stem[:190]}.{suffix[:9]}" if dot and len(suffix) < 10 else name[:200]
    return name


def content_disposition(kind: str, filename: str) -> str:
    """`attachment; filename="ascii"; filename*=UTF-8''pct` (RFC 6266 / RFC 5987): an ASCII
    fallback for old clients, the real name for the rest."""
    import unicodedata
    from urllib.parse import quote

    filename = _safe_name(filename)
    ascii_name = unicodedata.normalize("NFKD", filename).encode("ascii", "ignore").decode()
    ascii_name = re.sub(r"[^A-Za-z0-9._ ()+,=@-]", "_", ascii_name) or "clip"
    value = f'{kind}; filename="{ascii_name}"'
    if ascii_name != filename:
        value += f"; filename*=UTF-8''{quote(filename, safe='')}"
    return value
