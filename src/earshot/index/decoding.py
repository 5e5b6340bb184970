"""Decoding one file for the indexer: hash its bytes, probe it, read its embedded metadata and
cut it into the model's windows, in a worker process or in the indexer's own.

`decode_entry` never raises for what a file does (a pipe in its place, a corrupt header, a
file gone since the scan, an exception nobody foresaw): every failure comes back as the
file's `error`, a sentence that is stored and shown. A long file comes back without windows,
for the indexer to stream (`index/build.py`). `worker_init` makes a worker die with the
indexer, however that ends.
"""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import os
import signal
import stat
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from earshot.config import AudioConfig
from earshot.errors import AudioDecodeError
from earshot.index.scan import NOT_REGULAR, ScanEntry
from earshot.index.store import FileRecord

# A worker hands back a whole file's windows; a file whose header says it is longer than this,
# or whose windows pass _MAX_WORKER_BYTES (a header that understates), is streamed here instead:
# a 5.6-hour file must not become a 5 GB array. 300 s of 10 s windows at 32 kHz: 77 MB.
LONG_FILE_S = 300.0
_MAX_WORKER_BYTES = 128 << 20


@dataclass
class Decoded:
    entry: ScanEntry
    record: FileRecord | None = None
    windows: np.ndarray | None = None  # (n_windows, window_samples) float32
    spans: list[tuple[float, float]] = field(default_factory=list)
    error: str | None = None
    vanished: bool = False


def file_hash(path: str) -> str:
    """blake2b-128 of the file's bytes. AudioDecodeError, having read nothing, unless it is a
    regular file: opened without blocking (a FIFO with no writer would block the open), then
    checked on the open descriptor, so a file swapped for a pipe or device after the scan is
    never read."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    with open(fd, "rb", closefd=True) as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise AudioDecodeError(path, NOT_REGULAR)
        h = hashlib.blake2b(digest_size=16)
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def read_record(entry: ScanEntry, content_hash: str) -> FileRecord:
    import soundfile as sf

    from earshot.audio.io import probe

    info = probe(entry.path)
    try:
        with sf.SoundFile(entry.path) as f:
            tags = {k: v for k, v in f.copy_metadata().items() if v}
    except Exception:  # metadata is a nicety; the audio itself decoded
        tags = {}
    return FileRecord(
        entry.path,
        entry.size,
        entry.mtime_ns,
        content_hash,
        info.duration_s,
        info.sample_rate,
        info.channels,
        info.format,
        info.subtype,
        tags,
        embedded_metadata(entry.path),
    )


def embedded_metadata(path: str) -> dict:
    """The file's embedded metadata record (`earshot.audio.metadata`); {} where it has none or
    reading it failed in a way nobody foresaw: metadata never fails a file."""
    from earshot.audio.metadata import read_metadata

    try:
        return read_metadata(path).as_dict()
    except Exception:
        return {}


def decode_entry(entry: ScanEntry, audio: AudioConfig, with_windows: bool = True) -> Decoded:
    """Runs in a worker: hash, probe and window one file. Never raises (bar BaseExceptions
    such as KeyboardInterrupt): every failure is the file's `error`.

    A file longer than LONG_FILE_S by its header, or whose windows outgrow _MAX_WORKER_BYTES,
    comes back with its record and no windows: `Indexer._commit` streams it.
    """
    try:
        if not os.path.exists(entry.path):
            return Decoded(entry, vanished=True)
        record = read_record(entry, file_hash(entry.path))
        if not with_windows or record.duration_s > LONG_FILE_S:
            return Decoded(entry, record)
        return _windowed(entry, record, audio)
    except AudioDecodeError as e:
        if not os.path.exists(entry.path):
            return Decoded(entry, vanished=True)
        return Decoded(entry, error=e.reason)
    except OSError as e:
        if not os.path.exists(entry.path):
            return Decoded(entry, vanished=True)
        return Decoded(entry, error=f"cannot read it ({e.strerror or e})")
    except Exception as e:
        return Decoded(entry, error=unexpected(e))


def _windowed(entry: ScanEntry, record: FileRecord, audio: AudioConfig) -> Decoded:
    from earshot.audio.windows import window_file

    window_bytes = 4 * round(audio.window_s * audio.sample_rate)
    limit = max(1, _MAX_WORKER_BYTES // max(1, window_bytes))
    windows = []
    for w in window_file(entry.path, audio):
        windows.append(w)
        if len(windows) > limit:  # longer than its header said: stream it instead
            return Decoded(entry, record)
    if not windows:
        return Decoded(entry, error="no audio in the file")
    return Decoded(
        entry,
        decoded_length(record, windows[-1].end_s),
        np.stack([w.samples for w in windows]),
        [(w.start_s, w.end_s) for w in windows],
    )


def decoded_length(record: FileRecord, decoded_s: float) -> FileRecord:
    """`record` with the length that decoded where its header's was off by more than 0.5 s
    and 1%: a bare ADTS AAC's is FFmpeg's guess from its first frames' bit rate (silence then
    sound made 65 s into 312 s), a cut MP3's the length its Xing header promised."""
    if abs(decoded_s - record.duration_s) > max(0.5, 0.01 * decoded_s):
        return dataclasses.replace(record, duration_s=decoded_s)
    return record


def unexpected(e: BaseException) -> str:
    """A skip reason for an exception no decoder check foresaw. Its type only: a message may
    quote the file's bytes, and reasons are stored and served."""
    if isinstance(e, MemoryError):
        return "out of memory while decoding it; re-export it in smaller parts"
    return f"earshot failed on it ({type(e).__name__}); this is a bug, please report it"


def worker_init(parent_pid: int) -> None:
    """Runs first in each decode worker: make it die with the indexer, however that ends.

    Linux: the kernel sends SIGKILL when the parent dies (prctl PR_SET_PDEATHSIG). Everywhere:
    a watchdog thread exits once the parent pid is gone (re-parented), within half a second.
    Without them a killed indexer (kill -9, OOM) leaves its workers blocked on their queue
    forever: they hold its write end themselves, so they never see it close.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):
            pass  # the watchdog still covers it
    if os.getppid() != parent_pid:  # the parent died before the prctl
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="earshot-parent-watch", daemon=True).start()
