"""The one atomic write (earshot.fsutil): no temp file left on failure, fsync'ed, the old
content kept when a write fails, concurrent writers of one target never sharing a temp file."""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest

from earshot import fsutil
from earshot.fsutil import atomic_open, atomic_path, atomic_write_bytes, atomic_write_text


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_writes_bytes_and_text(tmp_path):
    atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01")
    atomic_write_text(tmp_path / "a.txt", "héllo\n")
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo\n"
    assert _leftovers(tmp_path) == []


def test_new_file_gets_the_default_mode(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "x")
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~fsutil.umask()


def test_failing_writer_leaves_old_content_and_no_temp_file(tmp_path):
    target = tmp_path / "t.json"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk on fire"), atomic_open(target, "w") as f:
        f.write("half a new file")
        raise RuntimeError("disk on fire")
    assert target.read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_failing_path_writer_leaves_no_temp_file(tmp_path):
    target = tmp_path / "c.npz"
    target.write_bytes(b"old")

    def broken_savez(path):
        with open(path, "wb") as f:
            f.write(b"PK partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"), atomic_path(target) as tmp:
        broken_savez(tmp)
    assert target.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_writer_that_makes_no_file_fails_cleanly(tmp_path):
    with pytest.raises(FileNotFoundError), atomic_path(tmp_path / "x"):
        pass
    assert list(tmp_path.iterdir()) == []


def test_failing_rename_leaves_no_temp_file(tmp_path, monkeypatch):
    target = tmp_path / "t.txt"
    target.write_text("old")

    def no_replace(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(fsutil.os, "replace", no_replace)
    with pytest.raises(PermissionError):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_fsyncs_the_file_and_the_folder(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def record(fd):
        synced.append(os.path.realpath(f"/proc/self/fd/{fd}") if os.path.exists("/proc") else fd)
        real(fd)

    monkeypatch.setattr(fsutil.os, "fsync", record)
    atomic_write_text(tmp_path / "a.txt", "x")
    assert len(synced) >= 2
    if os.path.exists("/proc"):
        assert any(".a.txt." in s for s in synced)  # the temp file, before the rename
        assert str(tmp_path.resolve()) in synced  # the folder, after it
    synced.clear()
    with atomic_open(tmp_path / "b.npz") as f:
        np.savez(f, x=np.arange(3))  # a file object: savez adds no ".npz" to the temp name
    assert len(synced) >= 2
    assert np.load(tmp_path / "b.npz")["x"].tolist() == [0, 1, 2]


def test_temp_file_lies_beside_the_target(tmp_path):
    with atomic_open(tmp_path / "j.json", "w") as f:
        assert os.path.dirname(f.name) == str(tmp_path)
        assert os.path.basename(f.name).startswith(f".j.json.{os.getpid()}-")
        json.dump({"a": 1}, f)
    assert json.loads((tmp_path / "j.json").read_text()) == {"a": 1}


def test_concurrent_writers_do_not_clobber_each_others_temp_files(tmp_path):
    target = tmp_path / "shared.bin"
    n = 8
    barrier = threading.Barrier(n)
    names, errors = [], []

    def writer(i):
        try:
            with atomic_open(target, "wb") as f:
                names.append(f.name)
                payload = bytes([i]) * 100_000
                f.write(payload[:50_000])
                barrier.wait(timeout=10)  # every writer holds its temp file open at once
                f.write(payload[50_000:])
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(set(names)) == n
    data = target.read_bytes()
    assert len(data) == 100_000 and len(set(data)) == 1  # one writer's whole file, not a mix
    assert _leftovers(tmp_path) == []


def test_replace_durably(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(fsutil.os, "fsync", lambda fd: synced.append(fd))
    part = tmp_path / "w.partial"
    part.write_bytes(b"new")
    fsutil.replace_durably(part, tmp_path / "w")
    assert (tmp_path / "w").read_bytes() == b"new" and not part.exists()
    assert len(synced) == 2


def test_absolute_is_one_spelling_naming_the_same_file(tmp_path, monkeypatch):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "elsewhere" / "c").mkdir(parents=True)
    (tmp_path / "a" / "link").symlink_to(tmp_path / "elsewhere" / "c")
    monkeypatch.chdir(tmp_path / "a" / "b")
    base = str(tmp_path)
    assert fsutil.absolute("..") == f"{base}/a"
    assert fsutil.absolute("../b/./") == f"{base}/a/b"
    assert fsutil.absolute(f"{base}//a/b/../b") == f"{base}/a/b"
    assert fsutil.absolute("x.wav") == f"{base}/a/b/x.wav"  # need not exist
    monkeypatch.setenv("HOME", base)
    assert fsutil.absolute("~/a/./b") == f"{base}/a/b"
    # `..` after a link is the parent of where the link points, as the kernel reads it; the
    # part after the last `..` keeps its own name, links and all.
    assert fsutil.absolute(f"{base}/a/link/..") == f"{base}/elsewhere"
    assert fsutil.absolute(f"{base}/a/link/../c") == f"{base}/elsewhere/c"
    assert fsutil.absolute(f"{base}/a/b/../link") == f"{base}/a/link"
