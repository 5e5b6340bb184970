"""Walk folders for audio files: loops, unreadable folders, vanishing files, pipes and names
the catalogue cannot store are reported, never fatal."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from earshot.audio.av_io import AV_SUFFIXES
from earshot.fsutil import absolute

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
    missing_roots: list[tuple[str, str]] = field(default_factory=list)  # (root, why)
    empty_roots: list[str] = field(default_factory=list)  # root folders with nothing in them
    # Files found but not indexable, and not recordable in the catalogue: (path as printable
    # text, why). A name that is not UTF-8 cannot be stored, so it is reported on every run.
    files: list[tuple[str, str]] = field(default_factory=list)
    # Audio names that are not files (a pipe, a device, a link to nothing or in a loop): never
    # read, but recorded as skipped like any file that cannot be indexed. (entry of the name
    # itself, by lstat, why)
    not_files: list[tuple[ScanEntry, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # roots that are files, but not audio


NOT_UTF8 = (
    "its name is not valid UTF-8, so the catalogue cannot store it; rename it (e.g. with "
    "`convmv -f latin1 -t utf8`)"
)
NOT_REGULAR = "not a regular file (a pipe or device); save the audio to a file first"
BROKEN_LINK = "a symbolic link to nothing that can be read ({why}); fix or remove the link"


def shown(path: str) -> str:
    """`path` as printable text: undecodable bytes of a name as \\xNN (never surrogates)."""
    try:
        return os.fsencode(path).decode("utf-8", "backslashreplace")
    except UnicodeError:  # a surrogate that no file system decoding made
        return path.encode("utf-8", "backslashreplace").decode("utf-8")


def scan(roots: Iterable[str | Path], problems: ScanProblems) -> Iterator[ScanEntry]:
    """Audio files under `roots` (files or folders), each once, following symlinks safely.

    Only regular files are yielded (after following links): a pipe or device is never read.
    Every path is under the root it was found through: a link to a file is yielded under the
    link's own path, after everything else, unless its target was already found under its own
    path (then it is a duplicate and left out). Names that are not UTF-8 go to
    `problems.files`, audio names that are not files (pipes, devices, broken links) to
    `problems.not_files`, not to the caller.
    """
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[str] = set()
    seen_ids: set[tuple[int, int]] = set()  # (device, inode) of every file yielded
    links: list[tuple[str, os.stat_result]] = []  # links to files: yielded last
    for root in roots:
        root = Path(absolute(root))
        try:
            st = root.stat()
        except OSError as e:
            problems.missing_roots.append((str(root), e.strerror or str(e)))
            continue
        if stat.S_ISDIR(st.st_mode):
            walk = _walk(str(root), seen_dirs, seen_files, seen_ids, links, problems)
            for path, st in walk:
                yield _entry(path, st)
        elif not _is_audio(root.name):
            problems.ignored.append(str(root))
        elif not stat.S_ISREG(st.st_mode):
            if _name_ok(str(root), problems):
                _not_a_file(str(root), problems)
        elif _name_ok(str(root), problems) and str(root) not in seen_files:
            seen_files.add(str(root))
            seen_ids.add((st.st_dev, st.st_ino))
            yield _entry(str(root), st)
    for path, st in links:
        key = (st.st_dev, st.st_ino)
        if key in seen_ids or path in seen_files:
            continue
        seen_ids.add(key)
        seen_files.add(path)
        yield _entry(path, st)


def _walk(
    top: str,
    seen_dirs: set,
    seen_files: set,
    seen_ids: set,
    links: list,
    problems: ScanProblems,
) -> Iterator[tuple[str, os.stat_result]]:
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
        if folder == top and not entries:
            problems.empty_roots.append(top)
        subdirs = []
        for e in entries:
            try:
                if e.is_dir(follow_symlinks=True):
                    subdirs.append(e.path)
                elif _is_audio(e.name):
                    if not _name_ok(e.path, problems):
                        continue
                    # is_file: a regular file (a pipe or device named .wav is not one)
                    if not e.is_file(follow_symlinks=True):
                        _not_a_file(e.path, problems)
                        continue
                    st = e.stat(follow_symlinks=True)
                    if e.is_symlink():
                        links.append((e.path, st))
                    elif e.path not in seen_files:
                        seen_files.add(e.path)
                        seen_ids.add((st.st_dev, st.st_ino))
                        yield e.path, st
            except OSError:
                # Vanished between listing and stat (nothing to report), or a link in a loop
                # (ELOOP from is_dir), reported as a dangling one is.
                if _is_audio(e.name) and _name_ok(e.path, problems):
                    _not_a_file(e.path, problems)
        stack.extend(reversed(subdirs))


def _not_a_file(path: str, problems: ScanProblems) -> None:
    """Record an audio name that is not a regular file (a pipe, a device, a link to one, to
    nothing or in a loop) in `problems.not_files`; nothing is opened."""
    try:
        own = os.lstat(path)
    except OSError:
        return  # vanished since it was listed
    try:
        st = os.stat(path)
    except OSError as e:
        problems.not_files.append((_entry(path, own), BROKEN_LINK.format(why=e.strerror or e)))
        return
    if not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode):
        problems.not_files.append((_entry(path, own), NOT_REGULAR))


def _name_ok(path: str, problems: ScanProblems) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        problems.files.append((shown(path), NOT_UTF8))
        return False
    return True


def _is_audio(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in AUDIO_SUFFIXES and not name.startswith("._")


def _entry(path: str, st: os.stat_result) -> ScanEntry:
    return ScanEntry(path, st.st_size, st.st_mtime_ns)
