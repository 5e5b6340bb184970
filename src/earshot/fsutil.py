"""File-system helpers shared by the writers of model folders and reports."""

from __future__ import annotations

import os
import threading
from pathlib import Path

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
