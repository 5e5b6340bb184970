"""What a WAV or AIFF header promises, read from its chunk headers, to tell a cut file from a
short one.

libsndfile clamps the frame count of a WAV or AIFF file whose data chunk runs past the end of the
file to the bytes present, and decodes the rest without an error (its log says "should be"), so
an interrupted copy or download would pass for a shorter recording. `data_shortfall` reads the
header itself: the data chunk's declared size against the bytes after its start.

Only chunk headers are read (a few dozen bytes each, the bodies are seeked past), never audio.
Sizes that streaming writers leave as placeholders (0, 0xFFFFFFFF, arecord's 0x7FFFFFFF, sox's
0x7FFFF000: anything from 0x7FFFF000 up) promise nothing and are not compared; libsndfile reads
such files to their end.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass

# A 32-bit size at or above this is a writer's "unknown" placeholder, not a promise.
_PLACEHOLDER = 0x7FFFF000
_MAX_CHUNKS = 4096  # a header with more chunks than this before its data is not parsed


@dataclass(frozen=True)
class Shortfall:
    """A data chunk that declares more bytes than the file holds after the chunk's start."""

    declared: int  # bytes of sample data the header promises
    present: int  # bytes of it in the file


def data_shortfall(path: str) -> Shortfall | None:
    """The WAV (RIFF, RIFX, RF64) or AIFF/AIFC file's missing sample data, or None when its
    data chunk is whole, its size is a placeholder, or the file is not one of these (or its
    header cannot be followed: libsndfile judges those)."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(12)
            if len(head) < 12:
                return None
            if head[:4] in (b"RIFF", b"RIFX", b"RF64") and head[8:12] == b"WAVE":
                found = _wav_data(f, head[:4])
            elif head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
                found = _aiff_data(f)
            else:
                return None
    except OSError:
        return None
    if found is None:
        return None
    start, declared, frame_bytes = found
    present = max(0, size - start)
    # Less than one frame short is a writer's rounding, not lost audio.
    if declared - present >= max(1, frame_bytes):
        return Shortfall(declared, present)
    return None


def chunks(f, endian: str, max_chunks: int = _MAX_CHUNKS) -> Iterator[tuple[bytes, int, int]]:
    """(id, declared size, offset of the body) of each chunk of a RIFF or AIFF file after its
    12-byte form header, in order, at most `max_chunks`; stops at the end of the file. The
    caller may read inside a chunk between steps. An RF64/BW64 data chunk whose size is the
    0xFFFFFFFF placeholder is yielded as declared, and stepped past by the ds64 chunk's 64-bit
    size, so the chunks after the audio are still found."""
    at, data_size64 = 12, None
    for _ in range(max_chunks):
        f.seek(at)
        raw = f.read(8)
        if len(raw) < 8:
            return
        cid, csize = raw[:4], struct.unpack(endian + "I", raw[4:])[0]
        if cid == b"ds64" and csize >= 16:  # riff size, data size (uint64 each), ...
            ds64 = f.read(16)
            if len(ds64) == 16:
                data_size64 = struct.unpack("<Q", ds64[8:])[0]
        yield cid, csize, at + 8
        if cid == b"data" and csize == 0xFFFFFFFF and data_size64 is not None:
            csize = data_size64
        at += 8 + csize + (csize & 1)  # chunks are padded to an even length


def _wav_data(f, magic: bytes) -> tuple[int, int, int] | None:
    endian = ">" if magic == b"RIFX" else "<"
    block_align, ds64_data = 0, None
    for cid, csize, body in chunks(f, endian):
        if cid == b"ds64" and csize >= 16:  # RF64: the real 64-bit sizes
            f.seek(body)
            _, ds64_data = struct.unpack("<QQ", f.read(16))
        elif cid == b"fmt " and csize >= 14:
            f.seek(body)
            block_align = struct.unpack(endian + "HHIIH", f.read(14))[4]
        elif cid == b"data":
            declared = csize
            if magic == b"RF64" and csize == 0xFFFFFFFF:
                if ds64_data is None:
                    return None
                declared = ds64_data
            elif csize == 0 or csize >= _PLACEHOLDER:
                return None
            return body, declared, block_align
    return None


def _aiff_data(f) -> tuple[int, int, int] | None:
    frame_bytes = 0
    for cid, csize, body in chunks(f, ">"):
        if cid == b"COMM" and csize >= 8:
            f.seek(body)
            channels, _, bits = struct.unpack(">HIH", f.read(8))
            frame_bytes = channels * ((bits + 7) // 8)  # exact for PCM; a lower bound otherwise
        elif cid == b"SSND" and csize >= 8:
            if csize >= _PLACEHOLDER:
                return None
            f.seek(body)
            offset = struct.unpack(">I", f.read(4))[0]
            # The chunk holds an offset and a block size (8 bytes), `offset` bytes, then data.
            return body + 8 + offset, csize - 8 - offset, frame_bytes
    return None


def flac_total_samples(path: str) -> int | None:
    """The total samples (per channel) a native FLAC file's STREAMINFO gives, 0 meaning
    "unknown" (what streaming encoders write: they cannot seek back to fill it in), or None
    when the file is not a FLAC starting with a STREAMINFO block.

    STREAMINFO is the first metadata block after "fLaC": a 4-byte block header (last-block
    flag and 7-bit type 0, 24-bit length, at least 34), then 34 bytes whose bits 108..143 (the
    low 36 bits of bytes 13..17) are the total.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(8 + 18)
    except OSError:
        return None
    if len(head) < 26 or head[:4] != b"fLaC" or head[4] & 0x7F != 0:
        return None
    if int.from_bytes(head[5:8], "big") < 34:
        return None
    return int.from_bytes(head[8 + 13 : 8 + 18], "big") & ((1 << 36) - 1)
