"""Which file the indexer was decoding in its own process, for the run after a crash.

Decoding in worker processes costs a codec crash (a segfault in libsndfile or FFmpeg) its file
only: the pool breaks and the file is retried alone (`decode_pool.decode_in_workers`). Where the
indexer decodes in its own process (`workers=0`, the default on 2 cores, where shipping every
file's samples back from a worker costs a quarter of the speed; and files streamed at commit
time), a crash ends the run, and would end every rerun at the same file.

So before each such decode the indexer writes the file's path to `<catalogue>.decoding` (one
small write, no fsync: the page cache outlives the process) and removes it when the run ends,
however it ends short of a crash. A run that finds the file there decodes that one file first
in a pool of one worker, whole (`decode_fully` through `decode_pool.pool_pass`): if that crashes
too, the file is skipped with CRASHED_HERE; if it decodes (the last run was killed, not
crashed), it is indexed as usual. The indexing lock (earshot.index.writelock) keeps two runs
off one journal.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

CRASHED_HERE = (
    "the decoder crashed on it (it ended an earlier `earshot index`, then crashed a process of "
    "its own); re-export it"
)


def journal_path(db: str | Path) -> Path:
    db = Path(db)
    return db.with_name(db.name + ".decoding")


class DecodeJournal:
    """`<catalogue>.decoding`: the path being decoded in this process, if any. Best effort: a
    journal that cannot be written costs the protection, never the run."""

    def __init__(self, db: str | Path):
        self.path = journal_path(db)
        self._fd: int | None = None
        self._broken = False

    def left_by_last_run(self) -> str | None:
        """The file an earlier run was decoding here when it ended without cleaning up."""
        try:
            raw = self.path.read_bytes()
        except OSError:
            return None
        name = raw.rstrip(b"\n")
        return os.fsdecode(name) if name else None

    def decoding(self, path: str) -> None:
        if self._broken:
            return
        try:
            if self._fd is None:
                flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
                self._fd = os.open(self.path, flags, 0o666)
            data = os.fsencode(path) + b"\n"
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, data, 0)
        except OSError:
            self._broken = True

    def close(self) -> None:
        """The run ended short of a crash: nothing is left in flight."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        with contextlib.suppress(OSError):
            self.path.unlink()


def decode_fully(entry, audio):
    """The trial of the file an earlier run left in the journal, in a worker: the whole file
    decoded and dropped (the crash may come late in it), then its record without windows, as
    for a long file, so the indexer streams it at commit time. A Python exception is not a
    crash (the indexer reports it as usual when it streams the file), so none leaves here."""
    from earshot.audio.windows import window_file
    from earshot.index import decoding

    with contextlib.suppress(Exception):
        for _ in window_file(entry.path, audio):
            pass
    return decoding.decode_entry(entry, audio, with_windows=False)
