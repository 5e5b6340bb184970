"""Files carrying embedded metadata, for tests and benchmarks: Broadcast Wave `bext`, iXML and
RIFF LIST/INFO chunks written here byte by byte (the layouts of EBU Tech 3285, iXML and RIFF),
ID3 / Vorbis comments / MP4 atoms written through mutagen, and hostile chunks.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np


def chunk(cid: bytes, data: bytes, declared: int | None = None, pad: bool = True) -> bytes:
    """One RIFF chunk: id, uint32 LE size (`declared` to lie about it), data, even padding."""
    size = len(data) if declared is None else declared
    return cid + struct.pack("<I", size) + data + (b"\x00" if pad and len(data) % 2 else b"")


def bext_chunk(
    description: str | bytes = "",
    originator: str = "",
    reference: str = "",
    date: str = "",
    time: str = "",
    coding_history: str = "",
    time_reference: int = 0,
) -> bytes:
    """A `bext` chunk's payload (EBU Tech 3285 v1): fixed fields, then the coding history."""

    def fixed(value: str | bytes, n: int) -> bytes:
        data = value if isinstance(value, bytes) else value.encode("utf-8")
        return data[:n].ljust(n, b"\x00")

    body = (
        fixed(description, 256)
        + fixed(originator, 32)
        + fixed(reference, 32)
        + fixed(date, 10)
        + fixed(time, 8)
        + struct.pack("<Q", time_reference)
        + struct.pack("<H", 1)  # version
        + b"\x00" * 64  # UMID
        + b"\x00" * 10  # loudness values
        + b"\x00" * 180  # reserved
        + coding_history.encode("utf-8")
    )
    return body


def ixml_chunk(fields: Mapping[str, str] = (), user: Mapping[str, str] | str = ()) -> bytes:
    """An iXML document: top-level `fields` (NOTE, SCENE, TAKE...) and a `<USER>` block, either
    Soundminer-style elements (FXNAME, CATEGORY...) or free text."""
    parts = [
        "<?xml version='1.0' encoding='UTF-8'?>",
        "<BWFXML>",
        "<IXML_VERSION>2.10</IXML_VERSION>",
    ]
    parts += [f"<{k}>{escape(v)}</{k}>" for k, v in dict(fields).items()]
    if isinstance(user, str):
        parts.append(f"<USER>{escape(user)}</USER>")
    elif user:
        parts.append(
            "<USER>" + "".join(f"<{k}>{escape(v)}</{k}>" for k, v in user.items()) + "</USER>"
        )
    parts.append("</BWFXML>")
    return "".join(parts).encode("utf-8")


def info_chunk(values: Mapping[str, str | bytes]) -> bytes:
    """A LIST/INFO chunk's payload: 'INFO' then one NUL-terminated subchunk per id."""
    body = b"INFO"
    for cid, value in values.items():
        data = value if isinstance(value, bytes) else value.encode("utf-8")
        body += chunk(cid.encode("ascii"), data + b"\x00")
    return body


def write_wav_chunks(
    path: str | Path,
    before: Sequence[bytes] = (),
    after: Sequence[bytes] = (),
    seconds: float = 0.5,
    sample_rate: int = 16000,
    freq: float = 440.0,
) -> Path:
    """A 16-bit mono WAV with extra raw chunks (from `chunk`) before and after its data chunk."""
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    pcm = (0.3 * np.sin(2 * np.pi * freq * t) * 32767).astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, sample_rate, 2 * sample_rate, 2, 16)
    body = b"WAVE" + chunk(b"fmt ", fmt) + b"".join(before) + chunk(b"data", pcm) + b"".join(after)
    path = Path(path)
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def write_bwf(
    path: str | Path,
    description: str | bytes = "",
    originator: str = "",
    ixml: bytes | None = None,
    info: Mapping[str, str | bytes] | None = None,
    **kwargs,
) -> Path:
    """A Broadcast Wave file: a `bext` chunk (when a description or originator is given), then
    iXML and LIST/INFO chunks where asked, all before the audio."""
    before = []
    if description or originator:
        before.append(chunk(b"bext", bext_chunk(description, originator)))
    if ixml is not None:
        before.append(chunk(b"iXML", ixml))
    if info:
        before.append(chunk(b"LIST", info_chunk(info)))
    return write_wav_chunks(path, before, **kwargs)


def add_bext(path: str | Path, description: str, originator: str = "") -> Path:
    """Insert a `bext` chunk after the header of an existing RIFF/WAVE file (as written by
    soundfile): the audio is untouched."""
    path = Path(path)
    data = path.read_bytes()
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError(f"'{path}' is not a RIFF/WAVE file")
    body = b"WAVE" + chunk(b"bext", bext_chunk(description, originator)) + data[12:]
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def write_id3(path: str | Path, frames: Mapping[str, str], kind: str = "mp3") -> Path:
    """ID3 frames (TIT2, TPE1, COMM, TXXX:NAME ...) into `path` through mutagen: an MP3 (an
    ID3v2 tag at its start) or, `kind="wav"`/`"aiff"`, the file's ID3 chunk."""
    from mutagen import id3

    if kind == "wav":
        from mutagen.wave import WAVE

        f = WAVE(str(path))
    elif kind == "aiff":
        from mutagen.aiff import AIFF

        f = AIFF(str(path))
    else:
        f = None
    tags = id3.ID3() if f is None else (f.tags if f.tags is not None else (f.add_tags() or f.tags))
    for key, value in frames.items():
        if key.startswith("TXXX:"):
            tags.add(id3.TXXX(encoding=3, desc=key[5:], text=[value]))
        elif key.startswith("COMM"):
            desc = key[5:] if ":" in key else ""
            tags.add(id3.COMM(encoding=3, lang="eng", desc=desc, text=[value]))
        else:
            tags.add(getattr(id3, key)(encoding=3, text=[value]))
    if f is None:
        tags.save(str(path))
    else:
        f.save()
    return Path(path)


def write_vorbis_tags(path: str | Path, tags: Mapping[str, str | list[str]]) -> Path:
    """Vorbis comments into a FLAC or Ogg file through mutagen."""
    import mutagen

    f = mutagen.File(str(path))
    if f.tags is None:
        f.add_tags()
    for key, value in tags.items():
        f[key] = value if isinstance(value, list) else [value]
    f.save()
    return Path(path)


def write_mp4_tags(path: str | Path, tags: Mapping[str, str]) -> Path:
    """MP4 atoms (©nam, ©cmt, desc, or '----:com.apple.iTunes:NAME') into an M4A file."""
    from mutagen.mp4 import MP4, MP4FreeForm

    f = MP4(str(path))
    if f.tags is None:
        f.add_tags()
    for key, value in tags.items():
        f[key] = [MP4FreeForm(value.encode())] if key.startswith("----:") else [value]
    f.save()
    return Path(path)
