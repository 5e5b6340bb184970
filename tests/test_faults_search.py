"""Faults around search (issue #19): the ANN cache beside a catalogue and the catalogue file.

Each test is built from a red-team repro: a leftover `.ann` of another catalogue or model, a
cache that cannot be written (no room, a folder in its place, a read-only folder), temporary
files of a killed search, a read-only catalogue, a 0-byte catalogue file, and the hint that
names the model a catalogue needs.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from earshot import fsutil
from earshot.index import annfile, schema
from earshot.index.store import Catalogue, CatalogueError, FileRecord, ModelMismatchError
from earshot.model.io import model_id
from earshot.search import Searcher, SearchError, ann_path_for
from earshot.testing.models import tiny_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def other_model():
    return tiny_model(seed=1)


def record(path: str) -> FileRecord:
    return FileRecord(path, 100, 1, f"hash-{path}", 10.0, 16000, 1, "WAV", "PCM_16")


def fill(cat: Catalogue, model, n_files: int, seed: int, folder: str = "/clips") -> np.ndarray:
    """`n_files` one-window files of random unit vectors in one batch; returns the vectors."""
    dim = model.config.joint_dim
    cat.bind_model(model_id(model), dim)
    v = np.random.default_rng(seed).standard_normal((n_files, dim)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    with cat.batch():
        for i in range(n_files):
            cat.put_file(record(f"{folder}/{seed}-{i}.wav"), [(0.0, 10.0, v[i])])
    return v


def brute_force(cat: Catalogue, query: np.ndarray, k: int) -> list[tuple[str, float]]:
    ids, vectors = cat.vectors()
    scores = vectors.astype(np.float32) @ query
    rows = cat.segments(ids.tolist())
    order = np.argsort(-scores, kind="stable")[:k]
    return [(rows[int(ids[i])].path, float(scores[i])) for i in order]


def found(searcher: Searcher, query: np.ndarray, k: int) -> list[tuple[str, float]]:
    return [(h.path, h.score) for h in searcher.search_vector(query, k)]


def assert_same(got, expected) -> None:
    assert [p for p, _ in got] == [p for p, _ in expected]
    assert [s for _, s in got] == pytest.approx([s for _, s in expected], abs=1e-3)


def queries(model, n: int = 3, seed: int = 99) -> np.ndarray:
    q = np.random.default_rng(seed).standard_normal((n, model.config.joint_dim))
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def delete_catalogue(db: Path) -> None:
    """`rm s.sqlite*` but for the .ann: the catalogue and its -wal/-shm go, the cache stays."""
    for suffix in ("", "-wal", "-shm"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)


# --- 1. a leftover .ann is only ever used for the catalogue and model it was built from -------


def test_a_leftover_ann_is_not_used_for_a_new_catalogue_of_the_same_name(tmp_path, model):
    db = tmp_path / "s.sqlite"
    with Catalogue(db) as cat:
        fill(cat, model, 200, seed=1)
        Searcher(cat, model).search_vector(queries(model)[0], 5)
    assert ann_path_for(cat).is_file()
    delete_catalogue(db)
    # Another catalogue at the same path: as many batches (generation 1), more segments, so
    # the old file looked extendable (the same generation, removals 0, max id 200 < 250).
    with Catalogue(db) as cat:
        fill(cat, model, 250, seed=2, folder="/other")
        searcher = Searcher(cat, model)
        for q in queries(model):
            assert_same(found(searcher, q, 10), brute_force(cat, q, 10))
        assert all(h.path.startswith("/other/") for h in searcher.search_vector(q, 50))
        header, _ = annfile.read(ann_path_for(cat))
        assert header["identity"] == {"catalogue": cat.uuid, "model_id": model_id(model)}


def test_a_leftover_ann_of_another_model_is_not_used(tmp_path, model, other_model):
    db = tmp_path / "s.sqlite"
    with Catalogue(db) as cat:
        fill(cat, model, 40, seed=1)
        Searcher(cat, model).search_vector(queries(model)[0], 5)
        uuid = cat.uuid
    delete_catalogue(db)
    with Catalogue(db) as cat:
        fill(cat, other_model, 60, seed=3)
        # Even the same catalogue id (a restored copy re-indexed with another model): rebuilt.
        cat.db.execute("UPDATE meta SET value = ? WHERE key = 'catalogue_uuid'", (uuid,))
        searcher = Searcher(cat, other_model)
        q = queries(other_model)[0]
        assert_same(found(searcher, q, 10), brute_force(cat, q, 10))


def test_a_copy_that_went_its_own_way_does_not_reuse_the_other_copys_ann(tmp_path, model):
    db = tmp_path / "s.sqlite"
    with Catalogue(db) as cat:
        fill(cat, model, 100, seed=1)
    backup = tmp_path / "backup.sqlite"
    shutil.copy(db, backup)  # closed: the WAL was checkpointed into the file
    with Catalogue(db) as cat:
        fill(cat, model, 50, seed=2)  # generation 2, segments up to 150
        Searcher(cat, model).search_vector(queries(model)[0], 5)
    delete_catalogue(db)
    shutil.copy(backup, db)  # the same uuid, generation 1 again
    with Catalogue(db) as cat:
        fill(cat, model, 60, seed=3)  # generation 2 again, other segments up to 160
        searcher = Searcher(cat, model)
        for q in queries(model):
            assert_same(found(searcher, q, 10), brute_force(cat, q, 10))


def test_the_cache_is_still_reused_and_extended_for_its_own_catalogue(tmp_path, model, monkeypatch):
    db = tmp_path / "s.sqlite"
    with Catalogue(db) as cat:
        fill(cat, model, 100, seed=1)
        Searcher(cat, model).search_vector(queries(model)[0], 5)
        fill(cat, model, 20, seed=2)
    reads = []
    original = Catalogue.vectors

    def counted(self, since_segment_id=0):
        reads.append(since_segment_id)
        return original(self, since_segment_id)

    monkeypatch.setattr(Catalogue, "vectors", counted)
    with Catalogue(db, readonly=True) as cat:
        searcher = Searcher(cat, model)
        q = queries(model)[0]
        assert_same(found(searcher, q, 10), brute_force(cat, q, 10))
        assert reads[0] == 100  # extended from its last segment, not rebuilt
    with Catalogue(db, readonly=True) as cat:
        reads.clear()
        Searcher(cat, model).search_vector(q, 5)
        assert reads == []  # current: loaded as it is


def _downgrade_to_v2(db: Path) -> None:
    """What an earlier earshot wrote: schema 2, no catalogue uuid (nor schema 4's metadata:
    no `files.meta`, a 3-column keyword table)."""
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM meta WHERE key = 'catalogue_uuid'")
        conn.execute("UPDATE meta SET value = 2 WHERE key = 'schema_version'")
        conn.execute("DROP TRIGGER files_fts_delete")
        conn.execute("CREATE VIRTUAL TABLE f2 USING fts5 (name, folder, tags, "
                     "tokenize = 'unicode61 remove_diacritics 2')")  # fmt: skip
        conn.execute("INSERT INTO f2 (rowid, name, folder, tags) "
                     "SELECT rowid, name, folder, tags FROM files_fts")  # fmt: skip
        conn.execute("DROP TABLE files_fts")
        conn.execute("ALTER TABLE f2 RENAME TO files_fts")
        conn.execute("CREATE TRIGGER files_fts_delete AFTER DELETE ON files BEGIN "
                     "DELETE FROM files_fts WHERE rowid = old.id; END")  # fmt: skip
        conn.execute("ALTER TABLE files DROP COLUMN meta")
    sqlite3.connect(db).close()


def test_an_older_catalogue_gets_a_uuid_when_opened_writable_and_loses_nothing(tmp_path, model):
    db = tmp_path / "old.sqlite"
    with Catalogue(db) as cat:
        vectors = fill(cat, model, 30, seed=1)
        before = (cat.generation, cat.removals, cat.stats()["segments"], cat.vectors()[0].tolist())
    _downgrade_to_v2(db)
    with Catalogue(db, readonly=True) as ro:  # read-only: read as it is, nothing written
        assert ro.uuid is None and ro.stats()["schema_version"] == 2
        searcher = Searcher(ro, model)
        q = queries(model)[0]
        assert_same(found(searcher, q, 5), brute_force(ro, q, 5))
        assert annfile.read(ann_path_for(ro))[0]["identity"]["catalogue"] is None
    with Catalogue(db) as cat:
        assert cat.stats()["schema_version"] == schema.SCHEMA_VERSION == 5
        uuid = cat.uuid
        assert uuid and len(uuid) == 32 and int(uuid, 16) >= 0
        after = (cat.generation, cat.removals, cat.stats()["segments"], cat.vectors()[0].tolist())
        assert after == before and cat.check() == []
        np.testing.assert_allclose(cat.vectors()[1].astype(np.float32), vectors, atol=1e-3)
        # The file made while it had no uuid names no catalogue: rebuilt, now stamped.
        assert_same(found(Searcher(cat, model), q, 5), brute_force(cat, q, 5))
        assert annfile.read(ann_path_for(cat))[0]["identity"]["catalogue"] == uuid
    with Catalogue(db) as cat:
        assert cat.uuid == uuid  # made once


def test_every_new_catalogue_has_its_own_uuid(tmp_path):
    uuids = set()
    for name in ("a", "b"):
        with Catalogue(tmp_path / f"{name}.sqlite") as cat:
            uuids.add(cat.uuid)
    assert len(uuids) == 2 and None not in uuids


# --- 2. a cache that cannot be written: search goes on in memory, with one warning line -------


def test_an_ann_path_that_is_a_folder_searches_in_memory_with_one_warning(tmp_path, model, capsys):
    db = tmp_path / "s.sqlite"
    with Catalogue(db) as cat:
        fill(cat, model, 50, seed=1)
        ann_path_for(cat).mkdir()
        for _ in range(2):  # a second searcher (another run) warns no more in this process
            searcher = Searcher(cat, model)
            for q in queries(model):
                assert_same(found(searcher, q, 10), brute_force(cat, q, 10))
        fill(cat, model, 5, seed=2)  # a new generation: rebuilt in memory, still one warning
        assert_same(found(searcher, q, 10), brute_force(cat, q, 10))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("earshot: warning: cannot write the search")
    assert "in memory" in err and str(ann_path_for(cat)) in err
    assert ann_path_for(cat).is_dir() and list(tmp_path.glob(".*.tmp")) == []


class _FullDisk:
    """A file that takes `room` bytes and then fails as a full disk does."""

    def __init__(self, f, room: int):
        self.f, self.room = f, room

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def test_a_full_disk_searches_in_memory_with_one_warning(tmp_path, model, capsys, monkeypatch):
    # The cache is written through fsutil's atomic writer: its file fills after 4 KiB.
    monkeypatch.setattr(
        fsutil,
        "open",
        lambda path, mode, **kw: _FullDisk(open(path, mode, **kw), 4096),  # noqa: SIM115
        raising=False,
    )
    db = tmp_path / "s.sqlite"
    with Catalogue(db) as cat:
        fill(cat, model, 300, seed=1)
        searcher = Searcher(cat, model)
        q = queries(model)[0]
        assert_same(found(searcher, q, 10), brute_force(cat, q, 10))
        assert_same(found(Searcher(cat, model), q, 10), brute_force(cat, q, 10))
    err = capsys.readouterr().err
    assert err == (
        f"earshot: warning: cannot write the search cache '{ann_path_for(cat)}' (No space left "
        "on device); searching with an index built in memory, again by each process\n"
    )
    assert not ann_path_for(cat).exists() and list(tmp_path.glob(".*.tmp")) == []


# --- 3. temporary files of a killed search ---------------------------------------------------

_SLOW_WRITER = """
import os, sys, time
import numpy as np
from earshot.index import ann, annfile
annfile.os.fsync = lambda fd: time.sleep(60)  # killed while its temporary file is written
ids = np.arange(1, 101)
v = np.random.default_rng(0).standard_normal((100, 12)).astype(np.float16)
ann.build(ids, v, 1, 0).save(sys.argv[1])
"""


def test_a_killed_writes_temporary_file_is_removed_by_the_next_write(tmp_path, model):
    db = tmp_path / "s.sqlite"
    path = tmp_path / "s.sqlite.ann"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    writer = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(path)], env=env)
    deadline = time.monotonic() + 30
    while not list(tmp_path.glob(".s.sqlite.ann.*.tmp")):
        assert writer.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    orphan = next(tmp_path.glob(".s.sqlite.ann.*.tmp"))
    assert orphan.name.startswith(f".s.sqlite.ann.{writer.pid}-")
    # A write in progress (this process's) and another file are left alone.
    live = tmp_path / f".s.sqlite.ann.{os.getpid()}-0123abcd.tmp"
    live.write_bytes(b"being written")
    unrelated = tmp_path / ".other.ann.1-0123abcd.tmp"
    unrelated.write_bytes(b"")
    with Catalogue(db) as cat:
        fill(cat, model, 20, seed=1)
        q = queries(model)[0]
        assert_same(found(Searcher(cat, model), q, 5), brute_force(cat, q, 5))
    assert not orphan.exists() and live.exists() and unrelated.exists()
    assert path.is_file()
    # One of a live pid is removed only once no one has touched it for a day.
    day_ago = time.time() - 25 * 3600
    os.utime(live, (day_ago, day_ago))
    assert annfile.remove_stale_temporaries(path) == [live]


# --- 2. a read-only catalogue is searched and served; indexing into it says it is read-only ---

_READ_ONLY_RUN = """
import contextlib, io, json, sys
from fastapi.testclient import TestClient
import earshot.model.io
from earshot.cli import build_parser, main
from earshot.commands.serve import build_app

db, model, audio = sys.argv[1:4]
loaded, load = {}, earshot.model.io.load_model
# Loaded once for all three commands, and without its text encoder: the searches below are
# by example, and a sentence encoder would only add seconds of imports.
earshot.model.io.load_model = lambda d, *a, **k: loaded.get(str(d)) or loaded.setdefault(
    str(d), load(d, with_text=False))
out = {}
for name, argv in {
    "search": ["search", "--like-id", "1", "--db", db, "--model", model, "--json", "-k", "3"],
    "index": ["index", audio, "--db", db, "--model", model],
}.items():
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(argv)
    out[name] = {"code": code, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()}
stderr = io.StringIO()
with contextlib.redirect_stderr(stderr):
    app = build_app(build_parser().parse_args(["serve", "--db", db, "--model", model]))
    client = TestClient(app, base_url="http://127.0.0.1:8000")
    answers = [client.get(route) for route in ("/api/similar/1?k=3", "/api/similar/2?k=3")]
out["serve"] = {"status": [r.status_code for r in answers], "hits": [len(r.json().get("hits", ()))
                for r in answers], "stderr": stderr.getvalue()}
print(json.dumps(out))
"""


_PR_CAPBSET_DROP, _CAP_DAC_OVERRIDE = 24, 1


def _drop_dac_override() -> None:
    """In the child, before exec: no CAP_DAC_OVERRIDE, so that root too meets file modes."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_CAPBSET_DROP, _CAP_DAC_OVERRIDE, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP, CAP_DAC_OVERRIDE)")


def _run_without_write_access(script: str, args: list[str], home: Path):
    """Run `script` in a fresh interpreter that cannot write where the catalogue is. Root
    writes any file, so as root the child runs without CAP_DAC_OVERRIDE (Linux)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "HOME": str(home),
           "HF_HUB_OFFLINE": "1", "EARSHOT_DEFAULT_MODEL": "compact"}  # fmt: skip
    preexec = None
    if os.geteuid() == 0:
        check = subprocess.run(
            [sys.executable, "-c", "import os, sys; sys.exit(os.access(sys.argv[1], os.W_OK))",
             str(args[0])],
            preexec_fn=_drop_dac_override,
            capture_output=True,
        )  # fmt: skip
        if check.returncode != 0:
            pytest.skip("running as root, and cannot drop CAP_DAC_OVERRIDE to meet file modes")
        preexec = _drop_dac_override

    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        preexec_fn=preexec,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=home,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def shared_dir():
    """A folder the unprivileged user can read (pytest's own tmp folder is the owner's only)."""
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="earshot-ro-"))
    base.chmod(0o755)
    yield base
    for p in [base, *base.rglob("*")]:
        if p.is_dir():
            p.chmod(0o755)
    shutil.rmtree(base)


def test_a_read_only_catalogue_is_searched_and_served_and_refuses_indexing(shared_dir):
    from earshot.model.io import save_model
    from earshot.testing.audio import write_tone

    model_dir = shared_dir / "model"
    loaded = tiny_model()
    save_model(loaded, model_dir)
    home = shared_dir / "home"
    home.mkdir(mode=0o777)
    home.chmod(0o777)
    audio = shared_dir / "audio"
    audio.mkdir()
    write_tone(audio / "new.wav", 1.0, 16000)
    folder = shared_dir / "catalogue"
    folder.mkdir()
    db = folder / "ro.sqlite"
    with Catalogue(db) as cat:
        fill(cat, loaded, 30, seed=1)
        assert not ann_path_for(cat).exists()  # never searched: the cache is to be made
    for p in [shared_dir, *shared_dir.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    home.chmod(0o777)
    db.chmod(0o444)
    folder.chmod(0o555)  # nor the folder: no -wal, -shm or .ann can be made there
    out = _run_without_write_access(_READ_ONLY_RUN, [str(db), str(model_dir), str(audio)], home)

    search = out["search"]
    assert search["code"] == 0, search["stderr"]
    assert len(json.loads(search["stdout"])["hits"]) == 3
    warning = search["stderr"].strip().splitlines()
    assert len(warning) == 1 and "cannot write the search cache" in warning[0]
    assert out["serve"]["status"] == [200, 200] and out["serve"]["hits"] == [3, 3]
    index = out["index"]
    assert index["code"] == 1
    assert index["stderr"].startswith(f"earshot: error: catalogue '{db}' is read-only")
    assert (
        "earlier write" not in index["stderr"]
        and "not an earshot catalogue" not in (index["stderr"])
    )
    assert sorted(p.name for p in folder.iterdir()) == ["ro.sqlite"]


# --- 9. a 0-byte catalogue file is refused, not silently made a new empty catalogue -----------


def test_a_zero_byte_catalogue_is_refused_until_deleted(tmp_path, capsys):
    from earshot.cli import main

    db = tmp_path / "cat.sqlite"
    db.touch()
    with pytest.raises(CatalogueError, match=r"is an empty \(0-byte\) file.*damaged") as error:
        Catalogue(db)
    assert str(db) in str(error.value) and "Delete it to start a new catalogue" in str(error.value)
    with pytest.raises(CatalogueError, match="empty database, not an earshot catalogue"):
        Catalogue(db, readonly=True)
    for argv in (["index", str(tmp_path), "--db", str(db)], ["search", "rain", "--db", str(db)]):
        assert main(argv) == 1
        assert "is an empty (0-byte) file" in capsys.readouterr().err
    assert db.stat().st_size == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["cat.sqlite"]
    db.unlink()  # asking for a new one
    with Catalogue(db) as cat:
        assert cat.stats()["files_ok"] == 0 and cat.uuid


# --- 8. the model-mismatch hint names what --model takes: a folder, or a shipped model's name --


def _compact_id() -> str:
    from earshot.model.io import packaged_model_dir

    return json.loads((packaged_model_dir("compact") / "heldout.json").read_text())["model_id"]


@pytest.mark.parametrize("bound", ["compact", "folder", "gone"])
def test_the_model_mismatch_hint_names_a_model_folder_or_name(tmp_path, model, bound):
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    bound_id, path, hint = {
        "compact": (_compact_id(), "/elsewhere/earshot/models/default", "(--model compact)"),
        "folder": ("0123456789abcdef", str(folder), f"(--model {folder})"),
        "gone": ("0123456789abcdef", "/gone/model", "(--model DIR, DIR being the folder of "
                 "model 0123456789abcdef, last at '/gone/model')"),
    }[bound]  # fmt: skip
    with Catalogue(tmp_path / "c.sqlite") as cat:
        cat.bind_model(bound_id, model.config.joint_dim, {"path": path})
        with pytest.raises(ModelMismatchError) as error:
            cat.bind_model(model_id(model), model.config.joint_dim)
        assert hint in str(error.value) and f"--model {bound_id}" not in str(error.value)
        with pytest.raises(SearchError) as error:
            Searcher(cat, model)
        assert hint in str(error.value)
