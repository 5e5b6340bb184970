"""The ANN index's file: a JSON header and a FAISS index, checksummed and written atomically.

Layout, little-endian:
    magic       b"EARSHOT-ANN\\n"
    header_len  u32
    header      JSON, `header_len` bytes: {"format": "earshot-ann", "version": 1, ...}
    index       the bytes of `faiss.write_index`
    trailer     u64 length of the index bytes, u32 their crc32, b"END\\n"
The trailer comes last so that a file cut short anywhere, or never written to the end, is told
apart from a complete one before FAISS reads a byte of it.

A write goes to `.<name>.<pid>-<hex>.tmp` beside the file and is renamed over it. A process
killed mid-write leaves its temporary file behind; the next write removes those of processes
that are gone (`remove_stale_temporaries`).

This module knows bytes, not what the header means: `earshot.index.ann` fills the header and
checks it against the index it describes.
"""

from __future__ import annotations

import json
import os
import re
import struct
import time
import zlib
from pathlib import Path

import faiss

from earshot.errors import AnnIndexError
from earshot.fsutil import atomic_open, pid_alive, temporary_name

FORMAT = "earshot-ann"
FORMAT_VERSION = 1

_MAGIC = b"EARSHOT-ANN\n"
_HEADER_LEN = struct.Struct("<I")
_TRAILER = struct.Struct("<QI4s")  # index bytes, their crc32, end marker
_END = b"END\n"
# Read and write in 64 KiB blocks: with 1 MiB ones the allocator kept the freed blocks, and a
# loaded 100k-segment index held 896 bytes of RSS per segment instead of 625.
_IO_BLOCK = 1 << 16
# A temporary file whose process is gone is deleted by the next write; one whose pid is alive
# only once untouched this long (the pid may have been reused by another process since).
# (A writer on another machine sharing the folder looks dead: its write then fails to rename,
# which it survives, see `earshot.index.ann_sync.ensure_index`.)
_STALE_LIVE_S = 24 * 3600


def write(path: str | Path, header: dict, index) -> None:
    """Write `header` and the FAISS `index` to `path` atomically (temporary file + rename).

    Raises OSError where the file cannot be written (no room, no permission, `path` a folder);
    `path` is then as it was, and no temporary file is left.
    """
    path = Path(path)
    raw = json.dumps(header, sort_keys=True).encode()
    remove_stale_temporaries(path)
    with atomic_open(path, "wb") as f:
        f.write(_MAGIC + _HEADER_LEN.pack(len(raw)) + raw)
        crc, size = 0, 0

        def write_chunk(chunk: bytes) -> int:
            nonlocal crc, size
            crc, size = zlib.crc32(chunk, crc), size + len(chunk)
            return f.write(chunk)

        faiss.write_index(index, faiss.PyCallbackIOWriter(write_chunk, _IO_BLOCK))
        f.write(_TRAILER.pack(size, crc, _END))


_temporary_name = temporary_name  # the name fsutil's atomic writes use (tests make stale ones)


def remove_stale_temporaries(path: str | Path, now: float | None = None) -> list[Path]:
    """Delete the temporary files that writes of `path` left behind when their process died
    (or that no one touched for `_STALE_LIVE_S`); returns those deleted. Never raises."""
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.([0-9]+)-[0-9a-f]+\.tmp")
    now = time.time() if now is None else now
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None:
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            age = now - entry.stat(follow_symlinks=False).st_mtime
            if not pid_alive(int(match.group(1))) or age > _STALE_LIVE_S:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue  # gone already, or not ours to delete
    return removed


def read(path: str | Path) -> tuple[dict, object]:
    """(header, FAISS index) of a file written by `write`; AnnIndexError if it cannot be used.

    Checks the magic, the header's format and version, the trailer and the checksum; what the
    header says about the index is for the caller to check.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if f.read(len(_MAGIC)) != _MAGIC:
                raise AnnIndexError(path, "not an earshot ANN index file")
            (header_len,) = _HEADER_LEN.unpack(_read_exact(f, _HEADER_LEN.size, path))
            if f.tell() + header_len > size:
                raise AnnIndexError(path, "the file is truncated")
            header = _parse_header(_read_exact(f, header_len, path), path)
            start = f.tell()
            if size < start + _TRAILER.size:
                raise AnnIndexError(path, "the file is truncated")
            f.seek(size - _TRAILER.size)
            index_len, crc, end = _TRAILER.unpack(f.read(_TRAILER.size))
            if end != _END or start + index_len + _TRAILER.size != size:
                raise AnnIndexError(path, "the file is truncated or was not written to the end")
            f.seek(start)
            if _crc32(f, index_len) != crc:
                raise AnnIndexError(path, "checksum mismatch: the file is damaged")
            f.seek(start)
            index = faiss.read_index(faiss.PyCallbackIOReader(f.read, _IO_BLOCK))
    except FileNotFoundError:
        raise AnnIndexError(path, "the file does not exist") from None
    except (OSError, RuntimeError, struct.error) as e:  # faiss raises RuntimeError
        raise AnnIndexError(path, f"cannot read it ({type(e).__name__}: {e})") from None
    return header, index


def _read_exact(f, n: int, path: Path) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise AnnIndexError(path, "the file is truncated")
    return data


def _parse_header(raw: bytes, path: Path) -> dict:
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise AnnIndexError(path, "its header is not valid JSON") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise AnnIndexError(path, "its header does not describe an earshot ANN index")
    if header.get("version") != FORMAT_VERSION:
        raise AnnIndexError(
            path, f"format version {header.get('version')}, this earshot reads {FORMAT_VERSION}"
        )
    return header


def _crc32(f, n: int) -> int:
    crc = 0
    while n > 0:
        block = f.read(min(n, 16 * _IO_BLOCK))
        if not block:
            break
        crc, n = zlib.crc32(block, crc), n - len(block)
    return crc
