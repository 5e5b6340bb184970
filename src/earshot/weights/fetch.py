"""Downloads into the cache: one downloader per target (flock + thread lock), streamed to
`<file>.part`, resumed with Range, retried after a broken attempt, checked, renamed into place."""

from __future__ import annotations

import contextlib
import http.client
import re
import sys
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path

from earshot.errors import ModelLoadError, WeightsUnreachable
from earshot.fsutil import atomic_write_text, replace_durably
from earshot.weights.refs import WeightsRef
from earshot.weights.store import _digests, _offline_reason, _record_path, check_file

#: Seconds any one socket operation (connect, a read) may take before the attempt fails.
TIMEOUT_S = 30.0
#: Download attempts in all; a retry happens only after an attempt that had got through.
ATTEMPTS = 3
#: Seconds before the first retry; doubled for each further one.
RETRY_WAIT_S = 1.0
_CHUNK = 1 << 16

# -- download -------------------------------------------------------------------------------


_Unreachable = WeightsUnreachable


class _Transient(Exception):
    """An attempt that got through and then broke; worth a retry (with resume)."""


_locks_guard = threading.Lock()
_thread_locks: dict[str, threading.Lock] = {}


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """One downloader per target at a time: across processes (flock) and threads."""
    with _locks_guard:
        tlock = _thread_locks.setdefault(str(lock_path), threading.Lock())
    with tlock:
        try:
            import fcntl
        except ImportError:  # not POSIX: the thread lock is all there is
            yield
            return
        with open(lock_path, "a+b") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def download(
    ref: WeightsRef,
    dest_dir: str | Path,
    progress: bool = True,
    timeout: float | None = None,
) -> Path:
    """Download `ref` into `dest_dir/<file>` and return that path (verified).

    Streams to `<file>.part`, resuming an existing one with a Range request (restarting
    cleanly when the server ignores it); checks size and sha256; fsyncs and renames the
    finished file into place, so a reader never sees a partial file. A wrong checksum
    deletes the partial file. Offline (EARSHOT_OFFLINE, HF_HUB_OFFLINE) it refuses at once.
    Connection failures before any byte arrived fail at once;
    an attempt that broke mid-transfer is retried (ATTEMPTS in all), resuming.
    """
    offline = _offline_reason()
    if offline:
        raise ModelLoadError(f"weights '{ref.id}': not downloading {ref.url}: {offline}")
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / ref.file
    part = dest_dir / (ref.file + ".part")
    timeout = TIMEOUT_S if timeout is None else timeout

    with _exclusive(dest_dir / (ref.file + ".lock")):
        # Someone else may have finished it while we waited for the lock.
        if final.is_file() and not check_file(final, ref, record=True):
            return final
        restarted = False
        while True:
            _fetch_part(ref, part, progress, timeout)
            digest, md5 = _digests(part, md5=ref.md5 is not None)
            size = part.stat().st_size
            wrong = None
            if ref.size is not None and size != ref.size:
                wrong = f"got {size} bytes, expected {ref.size}"
            elif ref.sha256 is not None and digest != ref.sha256:
                wrong = f"sha256 {digest}, expected {ref.sha256}"
            elif ref.md5 is not None and md5 != ref.md5:
                wrong = f"md5 {md5}, expected {ref.md5}"
            if wrong is None:
                break
            part.unlink(missing_ok=True)
            if not restarted:
                restarted = True  # a resumed part may have been stale: one clean try more
                continue
            raise ModelLoadError(
                f"weights '{ref.id}': the download from {ref.url} is not the expected file "
                f"({wrong}); the partial file was deleted and nothing was kept"
            )
        if not ref.pinned:
            record = _record_path(final)
            atomic_write_text(record, f"{digest}  {ref.file}\n")
            warnings.warn(
                f"weights '{ref.id}' are unpinned: downloaded {ref.url} with sha256 {digest} "
                f"({size} bytes), recorded in {record}; pin it in the entry to verify it",
                stacklevel=2,
            )
        replace_durably(part, final)
        return final


def _fetch_part(ref: WeightsRef, part: Path, progress: bool, timeout: float) -> None:
    """Bring `part` to the whole file's bytes (unchecked), with retries and resume."""
    wait = RETRY_WAIT_S
    for attempt in range(1, ATTEMPTS + 1):
        try:
            _attempt(ref, part, progress, timeout)
            return
        except (_Transient, _Unreachable) as e:
            # Unreachable on the first attempt means offline: fail at once, no retries.
            if isinstance(e, _Unreachable) and attempt == 1:
                raise
            if attempt == ATTEMPTS:
                raise ModelLoadError(
                    f"weights '{ref.id}': the download from {ref.url} kept failing "
                    f"({ATTEMPTS} attempts; last: {e}); the partial file {part} is kept "
                    "and the next try resumes it"
                ) from None
            print(
                f"earshot: download of {ref.file} broke ({e}); retrying in {wait:g} s",
                file=sys.stderr,
            )
            time.sleep(wait)
            wait *= 2


def _attempt(ref: WeightsRef, part: Path, progress: bool, timeout: float) -> None:
    have = part.stat().st_size if part.is_file() else 0
    if ref.size is not None and have >= ref.size:
        if have == ref.size:
            return  # complete already; the caller checks it
        part.unlink()
        have = 0
    request = urllib.request.Request(ref.url, headers={"User-Agent": "earshot"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the part is no prefix of the file: start over
            e.close()
            part.unlink(missing_ok=True)
            raise _Transient("the server refused to resume; starting over") from None
        e.close()
        if e.code >= 500 or e.code == 429:
            raise _Transient(f"HTTP {e.code} {e.reason}") from None
        raise ModelLoadError(
            f"weights '{ref.id}': cannot download {ref.url}: HTTP {e.code} {e.reason}"
        ) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", e)
        raise _Unreachable(f"cannot reach {ref.url} ({reason})") from None

    with response:
        mode = "ab"
        start = 0
        if have and response.status == 206:
            start = _content_range_start(response.headers.get("Content-Range"))
            if start != have:
                part.unlink(missing_ok=True)
                raise _Transient("the server resumed at the wrong offset; starting over")
        elif have:
            mode, have = "wb", 0  # Range ignored (200): the body is the whole file
        length = response.headers.get("Content-Length")
        total = ref.size
        if total is None and length is not None and length.isdigit():
            total = start + int(length)
        bar = _progress_bar(ref, total, have, progress)
        got = 0
        try:
            with open(part, mode) as f:
                while True:
                    try:
                        block = response.read1(_CHUNK)  # what has arrived: kept on a timeout
                    except (OSError, http.client.HTTPException) as e:
                        raise _Transient(f"connection lost after {have + got} bytes: {e}") from e
                    if not block:
                        break
                    f.write(block)
                    got += len(block)
                    bar.update(len(block))
                    if ref.size is not None and have + got > ref.size:
                        f.close()
                        part.unlink(missing_ok=True)
                        raise ModelLoadError(
                            f"weights '{ref.id}': {ref.url} sends more than the expected "
                            f"{ref.size} bytes; the partial file was deleted"
                        )
        finally:
            bar.close()
        if total is not None and have + got < total:
            raise _Transient(f"connection closed after {have + got} of {total} bytes")


def _content_range_start(value: str | None) -> int:
    m = re.match(r"^\s*bytes\s+(\d+)-", value or "")
    return int(m.group(1)) if m else -1


def _progress_bar(ref: WeightsRef, total: int | None, initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=ref.file,
        file=sys.stderr,
        disable=not enabled,
        leave=False,
    )
