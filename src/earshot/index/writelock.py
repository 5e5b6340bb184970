"""One `earshot index` at a time per catalogue (issue #19).

SQLite keeps two indexers from corrupting a catalogue, but not from both decoding and embedding
every file: each reads the catalogue's file states before the other has committed anything. So
`Indexer.run` holds an exclusive advisory lock, `flock` on `<catalogue>.lock` beside the file
(not on the catalogue itself: SQLite's own POSIX locks live there, and where `flock` is emulated
with them, on NFS, the two would meet). A second indexer waits `WAIT_S` for it, then stops with
`IndexLocked`, naming the holder's pid. The kernel drops the lock when its holder exits however
it exits (kill -9 too), so a stale lock file is harmless: it is never deleted (deleting it would
let two processes lock two different files of one name). Searching and serving never take it.

Where there is no `flock` (Windows) or the file system refuses it, indexing runs unlocked, as
before: SQLite still keeps the catalogue whole.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Iterator
from pathlib import Path

from earshot.errors import CatalogueError

WAIT_S = 2.0  # how long a second indexer waits for the first before it gives up
_POLL_S = 0.1


class IndexLocked(CatalogueError):
    """Another process is indexing into the catalogue."""


def lock_path(db: str | Path) -> Path:
    db = Path(db)
    return db.with_name(db.name + ".lock")


@contextlib.contextmanager
def index_lock(db: str | Path, wait_s: float = WAIT_S) -> Iterator[None]:
    """Hold the indexing lock of catalogue `db` for the block; `IndexLocked` if another process
    still holds it after `wait_s` seconds."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    path = lock_path(db)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as exc:
        raise CatalogueError(
            f"cannot index into catalogue '{db}': cannot open its lock file '{path}' "
            f"({exc.strerror or exc})"
        ) from exc
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked = True
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    locked = False  # ENOLCK, EOPNOTSUPP...: no locking on this file system
                    break
                if time.monotonic() >= deadline:
                    raise IndexLocked(
                        f"catalogue '{db}' is being indexed by another process "
                        f"({_holder(fd)}); try again when it has finished"
                    ) from None
                time.sleep(_POLL_S)
        if locked:
            with contextlib.suppress(OSError):  # the pid is for messages only
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            if locked:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)  # no stale pid once it is released
    finally:
        os.close(fd)  # releases the lock


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        text = ""
    return f"pid {text}" if text.isdigit() else "pid unknown"
