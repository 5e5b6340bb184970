"""Faults to inject into the indexer's decode workers, for tests. Kept light (no torch, no
pytest): a spawned worker imports this module to unpickle the function it is handed."""

from __future__ import annotations

import os

from earshot.index.decoding import decode_entry
from earshot.index.journal import decode_fully


def crash_on_some(entry, audio, with_windows=True):
    """`decode_entry`, except that the worker process dies (as on a decoder segfault) on a file
    whose name starts with "crash"."""
    if os.path.basename(entry.path).startswith("crash"):
        os._exit(139)
    return decode_entry(entry, audio, with_windows)


def decode_fully_crashing_on_some(entry, audio):
    """`earshot.index.journal.decode_fully`, except that its process dies on a file whose name
    starts with "crash"."""
    if os.path.basename(entry.path).startswith("crash"):
        os._exit(139)
    return decode_fully(entry, audio)
