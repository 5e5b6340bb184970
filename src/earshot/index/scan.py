"""Walk folders for audio files: loops, unreadable folders and vanishing files are reported,
never fatal."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from earshot.audio.av_io import AV_SUFFIXES

# What libsndfile decodes, and what PyAV decodes for it (audio/av_io.py); matched
# case-insensitively on the suffix.
AUDIO_SUFFIXES = AV_SUFFIXES | frozenset(
    {
        ".wav",
        ".wave",
        ".flac",
        ".ogg",
        ".oga",
        ".opus",
        ".mp3",
        ".aif",
        ".aiff",
        ".aifc",
        ".au",
        ".snd",
        ".caf",
        ".w64",
        ".rf64",
    }
)


@dataclass(frozen=True)
class ScanEntry:
    path: str  # absolute
    size: int
    mtime_ns: int


@dataclass
class ScanProblems:
    folders: list[tuple[str, str]] = field(default_factory=list)  # (folder, why not read)
    missing_roots: list[str] = field(default_factory=list)


def scan(roots: Iterable[str | Path], problems: ScanProblems) -> Iterator[ScanEntry]:
    """Audio files under `roots` (files or folders), each once, following symlinks safely."""
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[str] = set()
    for root in roots:
        root = Path(root).expanduser().absolute()
        try:
            st = root.stat()
        except OSError as e:
            problems.missing_roots.append(f"{root}: {e.strerror or e}")
            continue
        if stat.S_ISDIR(st.st_mode):
            yield from _walk(str(root), seen_dirs, seen_files, problems)
        elif _is_audio(root.name):
            entry = _entry(str(root), st)
            if entry.path not in seen_files:
                seen_files.add(entry.path)
                yield entry


def _walk(top: str, seen_dirs: set, seen_files: set, problems: ScanProblems) -> Iterator[ScanEntry]:
    stack = [top]
    while stack:
        folder = stack.pop()
        try:
            st = os.stat(folder)
        except OSError as e:
            problems.folders.append((folder, e.strerror or str(e)))
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen_dirs:  # a symlink loop, or a second link to a folder already walked
            continue
        seen_dirs.add(key)
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            problems.folders.append((folder, e.strerror or str(e)))
            continue
        subdirs = []
        for e in entries:
            try:
                if e.is_dir(follow_symlinks=True):
                    subdirs.append(e.path)
                elif _is_audio(e.name) and e.is_file(follow_symlinks=True):
                    path = os.path.realpath(e.path) if e.is_symlink() else e.path
                    if path in seen_files:
                        continue
                    seen_files.add(path)
                    yield _entry(path, e.stat(follow_symlinks=True))
            except OSError:
                continue  # vanished between listing and stat, or a dangling link
        stack.extend(reversed(subdirs))


def _is_audio(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in AUDIO_SUFFIXES and not name.startswith("._")


def _entry(path: str, st: os.stat_result) -> ScanEntry:
    return ScanEntry(path, st.st_size, st.st_mtime_ns)
