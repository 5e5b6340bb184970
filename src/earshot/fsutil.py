"""File-system helpers: file modes, one absolute spelling of a path, and the one atomic write
every earshot writer uses."""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

_umask_lock = threading.Lock()


def umask() -> int:
    """The process's umask (reading it means setting it; the lock keeps that atomic here)."""
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def give_default_mode(path: str | Path) -> None:
    """Give a file made by `tempfile.mkstemp` (mode 0600) the mode a plain `open` would have.

    Model folders and reports are meant to be shared: other users, a web server, or a CI job
    running under another account must be able to read them.
    """
    os.chmod(path, 0o666 & ~umask())


def absolute(path: str | os.PathLike) -> str:
    """`path` as one absolute spelling (~ expanded, `.`, `..`, `//` and a trailing `/` taken
    out) that names the same file, so `earshot index ../sounds`, `index ~/sounds` and
    `--folder ./sounds/` all mean the paths the catalogue already holds.

    `..` is taken out lexically where that names what the kernel would (it does unless a folder
    before the `..` is a symlink); otherwise the part up to the last `..` is resolved as the
    kernel does (`os.path.realpath`) and the rest kept as given, so a root that is itself a
    link keeps its own name, as `scan` promises."""
    raw = os.path.join(os.getcwd(), os.path.expanduser(os.fspath(path)))
    parts = raw.split(os.sep)
    if ".." not in parts:
        return os.path.normpath(raw)  # `.`, `//` and a trailing `/`: nothing but spelling
    lexical = os.path.normpath(raw)
    try:
        same = os.path.samestat(os.stat(raw), os.stat(lexical))
    except OSError:
        same = False
    if same:
        return lexical
    last = len(parts) - 1 - parts[::-1].index("..")
    head = os.path.realpath(os.sep.join(parts[: last + 1]) or os.sep)
    return os.path.normpath(os.path.join(head, *parts[last + 1 :]))


# -- atomic writes ----------------------------------------------------------------------------
#
# The one way earshot replaces a file: write a temporary file beside it (a name of its own per
# call, so concurrent writers of one target never share one), flush and fsync it, rename it over
# the target (atomic on POSIX and Windows), then fsync the folder so the rename itself survives
# a crash. On any failure the temporary file is removed and the error re-raised; the target is
# then as it was. Readers see the old file or the new one, never half of either.


def temporary_name(name: str, pid: int | None = None, tag: str | None = None) -> str:
    """`.<name>.<pid>-<hex>.tmp`: hidden, and naming the process that writes it (so a stale one
    can be told from a live one: index/annfile.remove_stale_temporaries)."""
    pid = os.getpid() if pid is None else pid
    tag = uuid.uuid4().hex[:8] if tag is None else tag
    return f".{name}.{pid}-{tag}.tmp"


def fsync_dir(path: str | Path) -> None:
    """Make a rename in `path` durable, where the platform allows (not on Windows)."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def fsync_file(path: str | Path) -> None:
    """fsync a file some other writer closed (np.savez, safetensors, torch.save, h5py)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(source: str | Path, target: str | Path) -> None:
    """fsync `source`, rename it over `target`, fsync the folder. For a file written in place
    under a fixed name on purpose (a download or cache that a re-run resumes); a one-shot
    write should use `atomic_path` / `atomic_open` instead."""
    fsync_file(source)
    os.replace(source, target)
    fsync_dir(Path(target).parent)


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `target` for a writer that wants a file name
    (safetensors' save_file, torch.save, h5py); on a clean exit the file is fsync'ed and
    renamed over `target`. The writer must create the file. (Not np.savez: it would add
    ".npz" to the name; give it `atomic_open`'s file object instead.)"""
    target = Path(target)
    tmp = target.with_name(temporary_name(target.name))
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


@contextlib.contextmanager
def atomic_open(
    target: str | Path, mode: str = "wb", encoding: str | None = None, newline: str | None = None
) -> Iterator[IO[Any]]:
    """Yield a file open for writing (`mode` "wb" or "w") that replaces `target` atomically on
    a clean exit (np.savez, json.dump, pickle)."""
    if mode not in ("w", "wb", "wt"):
        raise ValueError(f"atomic_open writes a new file: mode 'w' or 'wb', not {mode!r}")
    if "b" not in mode and encoding is None:
        encoding = "utf-8"
    with (
        atomic_path(target) as tmp,
        open(tmp, mode.replace("w", "x"), encoding=encoding, newline=newline) as f,
    ):
        yield f
        f.flush()
        os.fsync(f.fileno())


def atomic_write_bytes(target: str | Path, data: bytes) -> None:
    with atomic_open(target, "wb") as f:
        f.write(data)


def atomic_write_text(target: str | Path, text: str, encoding: str = "utf-8") -> None:
    with atomic_open(target, "w", encoding=encoding) as f:
        f.write(text)


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists (this process counts; another user's counts as alive)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True  # another user's
    except (ProcessLookupError, OverflowError, ValueError):
        return False
    return True


def sweep_dead_pid_folders(
    root: str | Path, prefix: str, unnamed_max_age_s: float | None = None
) -> int:
    """Remove this user's folders `root/<prefix><pid>-...` whose process is gone: what a
    process killed mid-task (SIGKILL) left of its scratch space. A folder under `prefix`
    without a pid (an older earshot's name) goes only once `unnamed_max_age_s` old, never
    where that is None; links are never followed. Returns how many were removed."""
    import shutil
    import time

    removed = 0
    try:
        candidates = list(Path(root).glob(prefix + "*"))
    except OSError:
        return 0
    for path in candidates:
        pid_text = path.name[len(prefix) :].split("-", 1)[0]
        try:
            if not path.is_dir() or path.is_symlink() or path.stat().st_uid != os.getuid():
                continue
            if pid_text.isdigit():
                if pid_alive(int(pid_text)):
                    continue
            elif unnamed_max_age_s is None or (
                time.time() - path.stat().st_mtime < unnamed_max_age_s
            ):
                continue
        except OSError:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed += not path.exists()
    return removed
