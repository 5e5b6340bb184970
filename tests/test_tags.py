"""Per-window sound tags: how they are stored, upgraded into old catalogues, copied, searched,
filtered by, and shown (CLI, Python API, HTTP API, page).

No tagging model ships yet, so a real tiny `JointModel` stands in: `tag_names` set and
`encode_audio_tagged` replaced by tags computed from the waveform itself ("Tone" for a sine,
"Noise" for noise, "Loud" from the RMS, "Bird" / "Dog" from a tone's pitch).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from earshot.cli import main
from earshot.filters import Filters
from earshot.hits import Hit
from earshot.index import schema, tag_blobs
from earshot.index.build import Indexer
from earshot.index.store import Catalogue, CatalogueError, FileRecord, ModelMismatchError
from earshot.index.tag_blobs import (
    CONFIDENT_TAG,
    MAX_TAGS,
    TAG_FLOOR,
    confident_tags,
    decode_tags,
    encode_tags,
    summarise_tags,
)
from earshot.model.dual import JointModel
from earshot.model.io import load_model, model_id, save_model
from earshot.search import Searcher, SearchError
from earshot.testing.audio import tone, write_noise, write_tone
from earshot.testing.models import tiny_model

TAG_NAMES = ("Tone", "Noise", "Loud", "Bird", "Dog", "Domestic animals, pets", "Rain", "Silence")
T = {name: i for i, name in enumerate(TAG_NAMES)}


# --- the test double ------------------------------------------------------------------------


def fake_tags(waves: np.ndarray, sample_rate: int) -> np.ndarray:
    """(n, samples) windows → (n, len(TAG_NAMES)) probabilities, from the sound itself."""
    x = np.asarray(waves, dtype=np.float64).reshape(len(waves), -1)
    out = np.zeros((len(x), len(TAG_NAMES)), dtype=np.float32)
    for i, w in enumerate(x):
        last = np.flatnonzero(np.abs(w) > 1e-6)
        w = w[: last[-1] + 1] if len(last) > 256 else w  # the zero padding is not the sound
        rms = float(np.sqrt(np.mean(w**2)))
        power = np.abs(np.fft.rfft(w)) ** 2 + 1e-12
        hz = np.fft.rfftfreq(len(w), 1 / sample_rate)
        band = power[(hz >= 100) & (hz <= 7000)]  # every test file was written at >= 16 kHz
        flatness = float(np.exp(np.mean(np.log(band))) / np.mean(band))
        peak_hz = float(hz[np.argmax(power)])
        tonal = flatness < 0.05
        out[i, T["Tone"]] = 0.95 if tonal else 0.02
        out[i, T["Noise"]] = 0.9 if flatness > 0.3 else 0.03
        out[i, T["Loud"]] = np.clip((rms - 0.05) * 3, 0, 1)
        out[i, T["Bird"]] = 0.8 if tonal and peak_hz > 2000 else 0.01
        out[i, T["Dog"]] = 0.7 if tonal and 300 <= peak_hz <= 1000 else 0.0
        out[i, T["Domestic animals, pets"]] = 0.4 if tonal and 300 <= peak_hz <= 1000 else 0.0
        out[i, T["Silence"]] = 0.99 if rms < 1e-3 else 0.0
    return out


def tagged(model: JointModel) -> JointModel:
    """`model`, tagging windows with `fake_tags` (its vectors stay the real ones)."""
    model.tag_names = TAG_NAMES

    def encode_audio_tagged(waveforms, batch_size=8, precision="fp32"):
        vectors = model.encode_audio(waveforms, batch_size, precision)
        x = torch.as_tensor(waveforms, dtype=torch.float32).numpy().reshape(len(vectors), -1)
        return vectors, torch.from_numpy(fake_tags(x, model.config.audio.sample_rate))

    model.encode_audio_tagged = encode_audio_tagged
    return model


def write_library(root) -> dict[str, str]:
    """Five recordings whose fake tags are known; name → path."""
    import soundfile as sf

    (root / "birds").mkdir(parents=True)
    (root / "street").mkdir()
    (root / "pets").mkdir()
    paths = {
        "robin": write_tone(root / "birds" / "robin.wav", 3.0, 22050, freq=3000.0),
        "traffic": write_noise(root / "street" / "traffic.wav", 4.0, 32000, seed=2, level=0.3),
        "hiss": write_noise(root / "street" / "hiss.flac", 3.0, 16000, seed=3, level=0.05),
        "dog": write_tone(root / "pets" / "dog.wav", 2.0, 44100, freq=600.0, amplitude=0.08),
    }
    # 23 s: a loud 600 Hz tone, then noise from 11.5 s: windows 0-10 tone, 10-20 and 15-23 noise.
    x = tone(23.0, 16000, freq=600.0, seed=4)[:, 0]
    half = len(x) // 2
    x[half:] = np.clip(0.3 * np.random.default_rng(4).standard_normal(len(x) - half), -1, 1)
    paths["mixed"] = root / "street" / "mixed.wav"
    sf.write(paths["mixed"], x, 16000, subtype="PCM_16")
    return {k: str(v) for k, v in paths.items()}


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_text_dir):
    base = tmp_path_factory.mktemp("tags")
    paths = write_library(base / "library")
    model_dir = base / "model"
    save_model(tiny_model(text_model=str(tiny_text_dir), text_dim=16), model_dir)
    model = tagged(load_model(model_dir))
    db = base / "tagged.sqlite"
    with Catalogue(db) as cat:
        Indexer(cat, model, workers=0, progress=False).run([str(base / "library")])
        assert cat.check() == []
    return base, paths, model_dir, model, db


@pytest.fixture
def searcher(setup):
    *_, model, db = setup
    with Catalogue(db, readonly=True) as cat:
        yield Searcher(cat, model)


def names_of(hits) -> set[str]:
    return {h.path.rsplit("/", 1)[-1].split(".")[0] for h in hits}


def window_tags(cat: Catalogue, path: str) -> list[dict[str, float]]:
    segs = cat.file_segments(cat.file_id_for_path(path))
    tags = cat.segment_tags([s.segment_id for s in segs])
    return [dict(tags.get(s.segment_id, [])) for s in segs]


# --- the stored form ------------------------------------------------------------------------


def test_window_tags_round_trip_compactly():
    rng = np.random.default_rng(0)
    for _ in range(50):
        p = rng.random(527).astype(np.float32) ** 4
        blob = encode_tags(p, 527)
        entries = decode_tags(blob)
        kept = np.sort(np.flatnonzero(p >= TAG_FLOOR)[np.argsort(-p[p >= TAG_FLOOR])][:MAX_TAGS])
        assert len(blob) == 3 * len(entries) <= 3 * MAX_TAGS
        assert sorted(entries["tag"].tolist()) == kept.tolist()  # the top k above the floor
        assert (np.diff(entries["q"].astype(int)) <= 0).all()  # best first
        np.testing.assert_allclose(entries["q"] / 255, p[entries["tag"]], atol=0.5 / 255 + 1e-6)
    assert encode_tags(np.full(527, 0.01), 527) == b""  # tagged, nothing sure enough
    assert decode_tags(None).shape == decode_tags(b"").shape == (0,)
    # Little-endian uint16 index, then the uint8 probability.
    assert encode_tags(np.eye(300)[258], 300) == bytes([2, 1, 255])
    for bad in (np.full(526, 0.5), np.full(527, np.nan), np.full(527, 1.5), np.full(527, -0.2)):
        with pytest.raises(ValueError):
            encode_tags(bad, 527)
    with pytest.raises(ValueError):
        decode_tags(b"\x01\x02")


def test_file_summary_is_each_tags_best_window():
    a = encode_tags(np.array([0.9, 0.2, 0.0, 0.5]), 4)
    b = encode_tags(np.array([0.1, 0.6, 0.0, 0.5]), 4)
    summary = decode_tags(summarise_tags([a, b]))
    assert summary["tag"].tolist() == [0, 1, 3]
    assert summary["q"].tolist() == [230, 153, 128]
    assert summarise_tags([]) is None and summarise_tags([a, None]) is None
    assert summarise_tags([b"", b""]) == b""
    assert confident_tags(summarise_tags([a, b]), ["Dog", "Bark", "Rain", "Wind"]) == [
        "Dog",
        "Bark",
        "Wind",
    ]


def _size(path) -> int:
    with sqlite3.connect(path) as db:
        db.execute("VACUUM")
        return (
            db.execute("PRAGMA page_count").fetchone()[0]
            * db.execute("PRAGMA page_size").fetchone()[0]
        )


@pytest.mark.parametrize("per_file", [6, pytest.param(1, marks=pytest.mark.slow)])  # 1: ~25 s
def test_tags_add_little_to_the_catalogue(tmp_path, per_file):
    """The benchmark figure (bench/bench_catalogue_size.py measures it on real files), on
    synthetic 300-d windows: 8 stored tags every window (the most a window keeps), a file's
    windows sharing their sounds (as real recordings do) — and the worst case, one-window
    clips whose 8 tags are all confident, different ones from clip to clip."""
    from earshot.testing.vectors import clustered_unit_vectors

    n = 3000
    vocabulary = [f"Sound number {i}" for i in range(527)]  # longer than AudioSet's names
    vectors = clustered_unit_vectors(n, seed=0)
    rng = np.random.default_rng(1)
    sizes = {}
    for kind in ("untagged", "tagged"):
        path = tmp_path / f"{kind}.sqlite"
        with Catalogue(path) as cat:
            cat.bind_model("m", 300, {}, tag_names=vocabulary if kind == "tagged" else ())
            with cat.batch():
                for f in range(0, n, per_file):
                    rec = FileRecord(
                        f"/home/me/Recordings/day {f // 300}/take_{f:05d}.wav",
                        10**6, 1, f"h{f}", 5.0 * per_file + 5, 32000, 1, "WAV", "PCM_16", {},
                    )  # fmt: skip
                    segs = [(5.0 * i, 5.0 * i + 10, vectors[f + i]) for i in range(per_file)]
                    p = rng.random((per_file, 527)) * 0.04
                    if per_file == 1:
                        p[0, rng.choice(527, MAX_TAGS, replace=False)] = rng.uniform(0.35, 0.99, 8)
                    else:
                        core = rng.choice(527, 5, replace=False)
                        others = np.setdiff1d(np.arange(527), core)
                        for w in range(per_file):
                            p[w, core] = rng.uniform(0.2, 0.95, 5)
                            p[w, rng.choice(others, 3, replace=False)] = rng.uniform(0.05, 0.2, 3)
                    cat.put_file(rec, segs, p if kind == "tagged" else None)
            assert cat.check() == []
            if kind == "tagged":
                blobs = [r[0] for r in cat.db.execute("SELECT tag_probs FROM segments")]
                assert {len(b) for b in blobs} == {3 * MAX_TAGS}
                one_window_summaries = cat.db.execute(
                    "SELECT count(*) FROM files WHERE tag_probs IS NOT NULL"
                ).fetchone()[0]
                assert one_window_summaries == (0 if per_file == 1 else n // per_file)
        sizes[kind] = _size(path)
    per_window = (sizes["tagged"] - sizes["untagged"]) / n
    share = per_window / (sizes["untagged"] / n)
    print(f"tags: +{per_window:.1f} B per window, +{100 * share:.2f} % of the catalogue")
    assert share <= 0.10  # issue #15's target (these names are longer than AudioSet's)
    # A window's own share: its blob (24 B at most) against the vector's 600 B.
    assert 3 * MAX_TAGS / 600 <= 0.04


def test_keyword_rows_hold_a_few_tag_names_a_window_filters_see_every_tag(cat):
    """A one-window file's keyword row names its 3 likeliest confident tags (its blob keeps
    all 8, for --tag and display); a longer file's up to 3 a window, 16 at most."""
    one = probs({"Tone": 0.9, "Noise": 0.8, "Loud": 0.7, "Bird": 0.6, "Dog": 0.5})
    with cat.batch():
        short = cat.put_file(store_record("/s/short.wav", "S"), unit(1, 0), one)
        long = cat.put_file(store_record("/s/long.wav", "L"), unit(2, 1), np.repeat(one, 2, 0))
    assert tag_blobs.keyword_tag_limit(1) == 3 and tag_blobs.keyword_tag_limit(2) == 6
    assert tag_blobs.keyword_tag_limit(100) == tag_blobs.KEYWORD_TAGS
    row = dict(cat.db.execute("SELECT rowid, tags FROM files_fts").fetchall())
    assert row[short] == "Tone Noise Loud" and row[long] == "Tone Noise Loud Bird Dog"
    assert {f for f, _ in cat.keyword_search("dog")} == {long}
    assert set(cat.files_with_tags([T["Dog"]])) == {short, long}  # the blob has every tag
    assert [n for n, _ in cat.file(short)["sound_tags"]] == ["Tone", "Noise", "Loud", "Bird", "Dog"]
    assert window_tags(cat, "/s/short.wav")[0].keys() == {"Tone", "Noise", "Loud", "Bird", "Dog"}
    # Schema v5: the one-window file's tags are stored once, in its window's blob.
    summaries = dict(cat.db.execute("SELECT id, tag_probs FROM files").fetchall())
    assert summaries[short] is None and summaries[long] is not None
    with cat.batch():  # moved: the copy gets the same tags and keyword names
        moved = cat.copy_segments(short, store_record("/t/short.wav", "S"))
    assert window_tags(cat, "/t/short.wav") == window_tags(cat, "/s/short.wav")
    assert cat.file(moved)["sound_tags"] == cat.file(short)["sound_tags"]
    assert {f for f, _ in cat.keyword_search("loud")} == {short, long, moved}
    assert cat.check() == []


def test_a_v4_catalogue_upgrades_to_one_copy_of_a_one_window_files_tags(tmp_path):
    """What schema 4 wrote (a one-window file's summary beside its window's blob) reads as it is
    read-only and is upgraded in place on a writable open: the same tags everywhere."""
    tags = [probs({"Dog": 0.9, "Loud": 0.4}), probs({"Noise": 0.8}, {"Rain": 0.5, "Dog": 0.2})]
    path = tmp_path / "v4.sqlite"
    paths = ("/s/one.wav", "/s/two.wav", "/s/plain.wav")

    def state(c):
        return {p: (window_tags(c, p), c.file(c.file_id_for_path(p))["sound_tags"]) for p in paths}

    with Catalogue(path) as cat:
        cat.bind_model("model-a", DIM, {}, tag_names=TAG_NAMES)
        with cat.batch():
            one = cat.put_file(store_record(paths[0], "A"), unit(1, 0), tags[0])
            two = cat.put_file(store_record(paths[1], "B"), unit(2, 1), tags[1])
            plain = cat.put_file(store_record(paths[2], "C"), unit(1, 2))
        seen = state(cat)
        cat.db.execute(  # back to schema 4's layout
            "UPDATE files SET tag_probs = (SELECT tag_probs FROM segments "
            "WHERE file_id = files.id) WHERE id = ?",
            (one,),
        )
        cat.db.execute("UPDATE meta SET value = 4 WHERE key = 'schema_version'")

    with Catalogue(path, readonly=True) as ro:
        assert ro.stats()["schema_version"] == 4 and ro.check() == []
        assert state(ro) == seen
        assert set(ro.files_with_tags([T["Dog"]], tag_min=0.1)) == {one, two}
    with Catalogue(path) as up:
        assert up.stats()["schema_version"] == 5 and up.check() == []
        assert state(up) == seen
        assert set(up.files_with_tags([T["Dog"]], tag_min=0.1)) == {one, two}
        assert up.tag_file_counts() == [("Dog", 1), ("Loud", 1), ("Noise", 1), ("Rain", 1)]
        summaries = dict(up.db.execute("SELECT id, tag_probs FROM files").fetchall())
        assert summaries[one] is None and summaries[plain] is None and summaries[two]
        # A second copy of a one-window file's tags is a broken invariant from now on.
        up.db.execute(
            "UPDATE files SET tag_probs = (SELECT tag_probs FROM segments "
            "WHERE file_id = files.id) WHERE id = ?",
            (one,),
        )
        assert any("second copy" in p for p in up.check())


# --- schema versions --------------------------------------------------------------------------

# The layout of schema version 1 exactly as earshot wrote it before tags existed.
V1_DDL = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value NOT NULL) WITHOUT ROWID",
    """CREATE TABLE files (
        id INTEGER PRIMARY KEY,
        path TEXT UNIQUE NOT NULL,
        folder TEXT NOT NULL,
        name TEXT NOT NULL,
        ext TEXT NOT NULL,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        content_hash TEXT,
        duration_s REAL,
        sample_rate INTEGER,
        channels INTEGER,
        format TEXT,
        subtype TEXT,
        tags TEXT NOT NULL DEFAULT '{}',
        status TEXT NOT NULL CHECK (status IN ('ok', 'skipped')),
        skip_reason TEXT,
        indexed_at REAL NOT NULL
    )""",
    "CREATE INDEX files_hash ON files (content_hash) WHERE status = 'ok'",
    "CREATE INDEX files_folder ON files (folder)",
    """CREATE TABLE segments (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        file_id INTEGER NOT NULL REFERENCES files (id) ON DELETE CASCADE,
        start_s REAL NOT NULL,
        end_s REAL NOT NULL,
        vector BLOB NOT NULL
    )""",
    "CREATE INDEX segments_file ON segments (file_id)",
    """CREATE VIRTUAL TABLE files_fts USING fts5 (
        name, folder, tags, tokenize = 'unicode61 remove_diacritics 2'
    )""",
    """CREATE TRIGGER files_fts_delete AFTER DELETE ON files BEGIN
        DELETE FROM files_fts WHERE rowid = old.id;
    END""",
)


def write_v1_catalogue(path, model, files: dict[str, int]) -> None:
    """A schema-1 catalogue bound to `model`, with `files` (path → windows) of random vectors."""
    dim = model.config.joint_dim
    rng = np.random.default_rng(0)
    with sqlite3.connect(path, isolation_level=None) as db:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("BEGIN")
        db.execute(f"PRAGMA application_id = {schema.APPLICATION_ID}")
        for statement in V1_DDL:
            db.execute(statement)
        meta = {"schema_version": 1, "generation": 1, "removed_generation": 0, "removals": 0,
                "model_id": model_id(model), "dim": dim, "model_info": "{}"}  # fmt: skip
        db.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
        for fid, (file_path, windows) in enumerate(files.items(), 1):
            folder, name = file_path.rsplit("/", 1)
            db.execute(
                "INSERT INTO files (id, path, folder, name, ext, size, mtime_ns, content_hash, "
                "duration_s, sample_rate, channels, format, subtype, status, indexed_at) VALUES "
                "(?, ?, ?, ?, 'wav', 100, 1, ?, ?, 32000, 1, 'WAV', 'PCM_16', 'ok', 0)",
                (fid, file_path, folder, name, f"h{fid}", 5.0 * windows + 5),
            )
            db.execute(
                "INSERT INTO files_fts (rowid, name, folder, tags) VALUES (?, ?, ?, '')",
                (fid, name, folder),
            )
            v = rng.standard_normal((windows, dim)).astype(np.float32)
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            for i in range(windows):
                db.execute(
                    "INSERT INTO segments (file_id, start_s, end_s, vector) VALUES (?, ?, ?, ?)",
                    (fid, 5.0 * i, 5.0 * i + 10, v[i].astype("<f2").tobytes()),
                )
        db.execute("COMMIT")


def columns(db, table: str) -> list[str]:
    return [row[1] for row in db.execute(f"PRAGMA table_info({table})")]


def test_a_v1_catalogue_reads_as_it_is_and_upgrades_on_a_writable_open(setup, tmp_path):
    base, paths, _, model, _ = setup
    path = tmp_path / "old.sqlite"
    write_v1_catalogue(path, model, {"/old/a.wav": 3, "/old/b.wav": 1})

    # Read-only (as `earshot serve` opens it): readable, untagged, untouched.
    with Catalogue(path, readonly=True) as ro:
        assert ro.stats()["schema_version"] == 1 and ro.tag_names == ()
        assert ro.check() == []
        assert "tag_probs" not in columns(ro.db, "segments")
        hits = Searcher(ro, model).search_vector(ro.segment_vector(1), k=2)
        assert [h.tags for h in hits] == [(), ()] and ro.file(1)["sound_tags"] == []
        with pytest.raises(SearchError, match="no sound tags"):
            Searcher(ro, model).search_vector(ro.segment_vector(1), 2, Filters(tags=("Tone",)))

    # Writable: upgraded in place, nothing lost.
    with Catalogue(path) as cat:
        assert cat.stats()["schema_version"] == schema.SCHEMA_VERSION == 5
        assert "tag_probs" in columns(cat.db, "segments") + columns(cat.db, "files")
        assert "tag_probs" in columns(cat.db, "files")
        assert cat.generation == 1 and cat.segment_count() == 4 and cat.check() == []
        # Indexing with a tagging model now: new files tagged, the old ones stay as they were.
        Indexer(cat, model, workers=0, progress=False).run([str(base / "library" / "birds")])
        assert cat.tag_names == TAG_NAMES and cat.check() == []
        assert window_tags(cat, paths["robin"])[0].keys() >= {"Tone", "Bird", "Loud"}
        assert window_tags(cat, "/old/a.wav") == [{}, {}, {}]
    with Catalogue(path) as cat:  # reopening an upgraded catalogue changes nothing
        assert cat.stats()["schema_version"] == 5 and cat.check() == []


def test_an_upgrade_that_fails_leaves_the_v1_catalogue_as_it_was(setup, tmp_path, monkeypatch):
    model = setup[3]
    path = tmp_path / "old.sqlite"
    write_v1_catalogue(path, model, {"/old/a.wav": 2})
    monkeypatch.setitem(
        schema._MIGRATIONS, 2, (*schema._MIGRATIONS[2], "ALTER TABLE nowhere ADD COLUMN x")
    )
    with pytest.raises(CatalogueError, match=r"upgrade the catalogue to schema 5.*old\.sqlite"):
        Catalogue(path)
    monkeypatch.undo()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (1,)
        assert "tag_probs" not in columns(db, "segments") + columns(db, "files")
    with Catalogue(path) as cat:  # and the next open upgrades it
        assert cat.stats()["schema_version"] == 5 and cat.check() == []


def test_new_and_upgraded_catalogues_have_one_layout(setup, tmp_path):
    write_v1_catalogue(tmp_path / "old.sqlite", setup[3], {})
    Catalogue(tmp_path / "old.sqlite").close()
    Catalogue(tmp_path / "new.sqlite").close()
    layouts = []
    for name in ("old", "new"):
        with sqlite3.connect(tmp_path / f"{name}.sqlite") as db:
            layouts.append({t: columns(db, t) for t in ("files", "segments", "meta")})
    assert layouts[0] == layouts[1]


# --- writing --------------------------------------------------------------------------------


DIM = 8


def store_record(path: str, content_hash: str) -> FileRecord:
    return FileRecord(path, 1000, 1, content_hash, 20.0, 32000, 1, "WAV", "PCM_16", {})


def unit(n: int, seed: int) -> list:
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return [(5.0 * i, 5.0 * i + 10, v[i]) for i in range(n)]


@pytest.fixture
def cat(tmp_path):
    with Catalogue(tmp_path / "cat.sqlite") as c:
        c.bind_model("model-a", DIM, {}, tag_names=TAG_NAMES)
        yield c


def probs(*rows: dict[str, float]) -> np.ndarray:
    out = np.zeros((len(rows), len(TAG_NAMES)), dtype=np.float32)
    for i, row in enumerate(rows):
        for name, p in row.items():
            out[i, T[name]] = p
    return out


def test_put_file_stores_window_tags_a_file_summary_and_keywords(cat):
    tags = probs({"Dog": 0.93, "Loud": 0.5, "Rain": 0.1}, {"Noise": 0.8, "Dog": 0.2}, {})
    with cat.batch():
        fid = cat.put_file(store_record("/s/walk.wav", "H"), unit(3, 0), tags)
        plain = cat.put_file(store_record("/s/plain.wav", "P"), unit(2, 1))  # tags=None
    got = window_tags(cat, "/s/walk.wav")
    assert [list(w) for w in got] == [["Dog", "Loud", "Rain"], ["Noise", "Dog"], []]
    assert got[0]["Dog"] == pytest.approx(0.93, abs=0.002)
    sound = cat.file(fid)["sound_tags"]
    assert [n for n, _ in sound] == ["Dog", "Noise", "Loud", "Rain"]
    assert cat.file(plain)["sound_tags"] == [] and window_tags(cat, "/s/plain.wav") == [{}, {}]
    # The keyword side: names at >= 0.3 in some window ("Rain" at 0.1 is not).
    assert [f for f, _ in cat.keyword_search("dog")] == [fid]
    assert [f for f, _ in cat.keyword_search("noise")] == [fid]
    assert cat.keyword_search("rain") == []
    assert cat.files_with_tags([T["Dog"]]) == {fid: pytest.approx(0.93, abs=0.002)}
    assert cat.files_with_tags([T["Dog"]], tag_min=0.95) == {}
    assert cat.files_with_tags([T["Dog"], T["Noise"]]) == {fid: pytest.approx(0.8, abs=0.002)}
    assert cat.tag_file_counts() == [("Dog", 1), ("Loud", 1), ("Noise", 1)]
    assert cat.check() == []


def test_copy_segments_copies_window_tags_and_keywords(cat):
    tags = probs({"Dog": 0.9}, {"Noise": 0.7})
    with cat.batch():
        src = cat.put_file(store_record("/s/a.wav", "H"), unit(2, 0), tags)
    with cat.batch():
        copy = cat.copy_segments(src, store_record("/t/copy.wav", "H"))
    assert window_tags(cat, "/t/copy.wav") == window_tags(cat, "/s/a.wav")
    assert cat.file(copy)["sound_tags"] == cat.file(src)["sound_tags"]
    assert {f for f, _ in cat.keyword_search("dog")} == {src, copy}
    with cat.batch():  # touched in place: tags stay with the kept segments
        cat.copy_segments(src, store_record("/s/a.wav", "H"))
    assert window_tags(cat, "/s/a.wav")[0] == {"Dog": pytest.approx(0.9, abs=0.002)}
    assert cat.check() == []


def test_bad_tags_are_refused_before_the_batch_is_touched(cat, tmp_path):
    with cat.batch():
        with pytest.raises(CatalogueError, match="2 windows of tags, 3 windows"):
            cat.put_file(store_record("/s/a.wav", "H"), unit(3, 0), probs({}, {}))
        with pytest.raises(CatalogueError, match="within"):
            cat.put_file(store_record("/s/a.wav", "H"), unit(1, 0), probs({"Dog": 2.0}))
        with pytest.raises(CatalogueError, match="tag probabilities, not"):
            cat.put_file(store_record("/s/a.wav", "H"), unit(1, 0), np.zeros((1, 3)))
    assert cat.segment_count() == 0
    with Catalogue(tmp_path / "untagged.sqlite") as plain:
        plain.bind_model("model-b", DIM)
        with pytest.raises(CatalogueError, match="no tag vocabulary"), plain.batch():
            plain.put_file(store_record("/s/a.wav", "H"), unit(1, 0), probs({"Dog": 0.5}))
    with pytest.raises(ModelMismatchError, match="vocabulary"):
        cat.bind_model("model-a", DIM, {}, tag_names=("Cat", "Dog"))


def test_a_batch_that_rolls_back_leaves_no_tags_or_vocabulary(tmp_path):
    with Catalogue(tmp_path / "cat.sqlite") as c:
        with pytest.raises(RuntimeError), c.batch():
            c.bind_model("model-a", DIM, {}, tag_names=TAG_NAMES)
            c.put_file(store_record("/s/a.wav", "H"), unit(1, 0), probs({"Dog": 0.9}))
            raise RuntimeError("killed")
        assert c.tag_names == () and c.model_id is None and c.segment_count() == 0
        assert c.check() == []


def test_check_finds_damaged_tags(cat):
    with cat.batch():
        fid = cat.put_file(store_record("/s/a.wav", "H"), unit(2, 0), probs({"Dog": 0.9}, {}))
    db = cat.db
    db.execute("UPDATE files SET tag_probs = ? WHERE id = ?", (bytes([1, 0, 200]), fid))
    assert any("not their windows' best" in p for p in cat.check())
    db.execute("UPDATE files SET tag_probs = NULL WHERE id = ?", (fid,))
    assert any("windows tagged unlike their file's summary" in p for p in cat.check())
    db.execute("UPDATE segments SET tag_probs = x'0102' WHERE file_id = ?", (fid,))
    assert any("window tags of a malformed size" in p for p in cat.check())


def kill_probs(n: int, j: int) -> np.ndarray:
    return np.random.default_rng([n, j]).random((3, len(TAG_NAMES))).astype(np.float32) ** 3


def kill_child(db: str) -> None:
    """Runs in a child process: tagged batches (puts, a copy, removals) until it is killed."""
    cat = Catalogue(db)
    cat.db.execute("PRAGMA wal_autocheckpoint = 20")  # kills land in checkpoints too
    cat.bind_model("kill-model", DIM, {}, tag_names=TAG_NAMES)
    n = cat.generation
    print("ready", flush=True)
    while True:
        n += 1
        with cat.batch():
            for j in range(20):
                record = store_record(f"/k/{n}-{j}.wav", f"h{n}-{j}")
                cat.put_file(record, unit(3, n * 100 + j), kill_probs(n, j))
            source = cat.file_id_for_path(f"/k/{n}-0.wav")
            cat.copy_segments(source, store_record(f"/k/copy-{n}.wav", f"h{n}-0"))
            cat.remove_paths([f"/k/{n - 1}-{j}.wav" for j in range(5)])
        print("committed", n, flush=True)


@pytest.mark.slow  # 13 s of subprocesses killed and rerun; make test-all and CI run it
def test_kill_9_mid_batch_leaves_tags_consistent(tmp_path):
    db = tmp_path / "killed.sqlite"
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
        f"import test_tags; test_tags.kill_child({str(db)!r})"
    )
    rng = random.Random(3)
    committed = 0
    for delay in [0.0] + [rng.uniform(0.02, 0.3) for _ in range(4)]:
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "ready"
        time.sleep(delay)
        os.kill(child.pid, signal.SIGKILL)
        lines = child.communicate()[0].split()
        committed = max([committed] + [int(w) for w in lines if w.isdigit()])
        with Catalogue(db) as cat:
            assert cat.check() == []  # tag sizes, summaries = their windows' best, vocabulary
            g = cat.generation
            assert g in (committed, committed + 1)
            expected = {}
            for n in range(1, g + 1):
                expected |= {f"/k/{n}-{j}.wav": kill_probs(n, j) for j in range(20)}
                expected[f"/k/copy-{n}.wav"] = kill_probs(n, 0)
                for j in range(5):
                    expected.pop(f"/k/{n - 1}-{j}.wav", None)
            assert set(cat.file_states()) == set(expected)
            for path in rng.sample(sorted(expected), min(30, len(expected))):
                want = [decode_tags(encode_tags(p, len(TAG_NAMES))) for p in expected[path]]
                have = window_tags(cat, path)
                assert [list(w) for w in have] == [[TAG_NAMES[t] for t in e["tag"]] for e in want]
            committed = g
    assert committed >= 2


# --- indexing ---------------------------------------------------------------------------------


def expected_window_tags(path: str, model) -> list[dict[str, float]]:
    """What the indexer must have stored for `path`: fake_tags of its windows, encoded."""
    from earshot.audio.windows import window_file

    waves = np.stack([w.samples for w in window_file(path, model.config.audio)])
    out = []
    for p in fake_tags(waves, model.config.audio.sample_rate):
        entries = decode_tags(encode_tags(p, len(TAG_NAMES)))
        pairs = zip(entries["tag"], entries["q"], strict=True)
        out.append({TAG_NAMES[t]: q / 255 for t, q in pairs})
    return out


def test_indexing_stores_each_windows_tags(setup):
    *_, paths, _, model, db = setup
    with Catalogue(db, readonly=True) as cat:
        for path in paths.values():
            assert window_tags(cat, path) == expected_window_tags(path, model)
        robin, dog, mixed = (window_tags(cat, paths[k]) for k in ("robin", "dog", "mixed"))
        assert robin[0].keys() == {"Tone", "Bird", "Loud"}
        assert dog[0].keys() == {"Tone", "Dog", "Domestic animals, pets"}
        assert "Tone" in mixed[0] and "Noise" not in mixed[0]
        assert "Noise" in mixed[-1] and "Tone" not in mixed[-1]
        assert cat.stats()["tag_names"] == len(TAG_NAMES)


def test_long_files_streamed_get_the_same_tags(setup, tmp_path, monkeypatch):
    import earshot.index.build as build

    base, paths, _, model, db = setup
    monkeypatch.setattr(build, "_probably_long", lambda entry: True)  # every file streamed
    with Catalogue(tmp_path / "streamed.sqlite") as streamed, Catalogue(db, readonly=True) as cat:
        Indexer(streamed, model, workers=0, progress=False, batch_size=3).run(
            [str(base / "library")]
        )
        for path in paths.values():
            assert window_tags(streamed, path) == window_tags(cat, path)
        assert streamed.check() == []


def test_reuse_by_content_hash_copies_tags(setup, tmp_path):
    base, paths, _, model, _ = setup
    lib = tmp_path / "lib"
    shutil.copytree(base / "library" / "street", lib / "street")
    with Catalogue(tmp_path / "c.sqlite") as cat:
        Indexer(cat, model, workers=0, progress=False).run([str(lib)])
        shutil.copy(lib / "street" / "mixed.wav", lib / "street" / "mixed copy.wav")
        summary = Indexer(cat, model, workers=0, progress=False).run([str(lib)])
        assert summary.reused == 1 and summary.segments == 0
        original = window_tags(cat, str(lib / "street" / "mixed.wav"))
        assert window_tags(cat, str(lib / "street" / "mixed copy.wav")) == original
        assert original == expected_window_tags(paths["mixed"], model)
        assert len(cat.keyword_search("noise")) == 4  # traffic, hiss, mixed and its copy
        assert cat.check() == []


def test_an_untagged_model_stores_nothing_extra(setup, tmp_path):
    base, _, model_dir, _, _ = setup
    plain = load_model(model_dir)
    assert plain.tag_names == ()
    with Catalogue(tmp_path / "plain.sqlite") as cat:
        Indexer(cat, plain, workers=0, progress=False).run([str(base / "library")])
        assert cat.tag_names == () and cat.stats()["tag_names"] == 0
        assert cat.db.execute(
            "SELECT count(*) FROM segments WHERE tag_probs IS NOT NULL"
        ).fetchone() == (0,)
        vocabulary = cat.db.execute("SELECT count(*) FROM meta WHERE key = 'tag_names'")
        assert vocabulary.fetchone() == (0,)
        searcher = Searcher(cat, plain)
        hits = searcher.search_text("a bird", k=5)
        assert len(hits) == 5 and all(h.tags == () for h in hits)
        assert all(h.as_dict()["tags"] == [] for h in hits)
        with pytest.raises(SearchError, match="no sound tags"):
            searcher.search_text("a bird", 5, Filters(tags=("Tone",)))
        assert cat.check() == []


# --- searching --------------------------------------------------------------------------------


def files_with(cat, *tags: str, p: float = CONFIDENT_TAG) -> set[str]:
    """Brute force: the files some window of which has each tag at >= p."""
    out = set()
    for path in cat.file_states():
        windows = window_tags(cat, path)
        if all(any(w.get(t, 0) >= p for w in windows) for t in tags):
            out.add(path.rsplit("/", 1)[-1].split(".")[0])
    return out


def test_hits_carry_their_windows_tags(searcher):
    cat = searcher.cat
    hits = searcher.search_text("a bird sings", k=5)
    assert len(hits) == 5
    for h in hits:
        stored = cat.segment_tags([h.segment_id])[h.segment_id]
        assert list(h.tags) == stored and h.tags
        assert [t[1] for t in h.tags] == sorted((t[1] for t in h.tags), reverse=True)
        assert h.as_dict()["tags"] == [{"name": n, "p": round(p, 3)} for n, p in stored]
    # Hybrid (fused) hits and search by example carry them too.
    assert all(h.tags for h in searcher.search_text("tone", k=5, hybrid=True))
    sid = hits[0].segment_id
    assert all(h.tags for h in searcher.search_like_segment(sid, k=3))


@pytest.mark.parametrize(
    ("tags", "tag_min"),
    [
        (("Tone",), None),
        (("noise",), None),
        (("TONE", "loud"), None),
        (("Loud",), 0.8),
        (("Dog", "Noise"), None),
        (("Silence",), None),
        (("Tone",), 0.99),
    ],
)
def test_tag_filters_keep_exactly_the_files_that_have_the_tags(searcher, tags, tag_min):
    cat = searcher.cat
    canonical = [next(n for n in TAG_NAMES if n.lower() == t.lower()) for t in tags]
    expected = files_with(cat, *canonical, p=CONFIDENT_TAG if tag_min is None else tag_min)
    filters = Filters(tags=tags, tag_min=tag_min)
    q = np.ones(12, dtype=np.float32) / np.sqrt(12)
    assert names_of(searcher.search_vector(q, 10, filters)) == expected  # the FAISS path
    assert names_of(searcher.search_text("anything", 10, filters)) == expected
    assert names_of(searcher.search_text("anything", 10, filters, hybrid=True)) == expected
    assert names_of(searcher.search_tags(tags, 10, Filters(tag_min=tag_min))) == expected


def test_expected_tags_of_the_library(searcher):
    cat = searcher.cat
    assert files_with(cat, "Tone") == {"robin", "dog", "mixed"}
    assert files_with(cat, "Noise") == {"traffic", "hiss", "mixed"}
    assert files_with(cat, "Tone", "Loud") == {"robin", "mixed"}
    assert files_with(cat, "Dog", "Noise") == {"mixed"}


def test_tag_filters_combine_with_the_other_filters(searcher, setup):
    street = str(setup[0] / "library" / "street")
    q = np.ones(12, dtype=np.float32) / np.sqrt(12)
    hits = searcher.search_vector(q, 10, Filters(folder=street, tags=("Tone",)))
    assert names_of(hits) == {"mixed"}
    hits = searcher.search_tags(["Noise"], 10, Filters(formats=("flac",)))
    assert names_of(hits) == {"hiss"}
    # A tag search has no cosine: what is shown is its score, the tag's probability.
    assert [(h.similarity, h.shown_score) for h in hits] == [(None, hits[0].score)]
    assert searcher.search_tags(["Noise"], 10, Filters(max_duration=1)) == []
    # An empty answer names the tag (or other filter) no file passes, and the threshold.
    for filters, said in [
        (Filters(tags=("Noise",), max_duration=1), "no file passes dur:<=1"),
        (Filters(tags=("Silence",)), "no file passes tag:Silence (a tag counts from 0.30 "
                                     "in some window)"),
        (Filters(tags=("Domestic animals, pets",), tag_min=0.5),
         'no file passes tag:"Domestic animals, pets" (a tag counts from 0.50 in some window)'),
    ]:  # fmt: skip
        empty = searcher.search_tags((), 10, filters)
        assert empty == [] and searcher.why_empty(empty, filters) == said


def test_tags_without_text_list_the_files_likeliest_first(searcher):
    cat = searcher.cat
    hits = searcher.search_tags(["loud"], k=10)
    best = {}
    for path in cat.file_states():
        windows = window_tags(cat, path)
        best[path] = max(w.get("Loud", 0.0) for w in windows)
    expected = sorted((p for p in best if best[p] >= CONFIDENT_TAG), key=lambda p: -best[p])
    assert [h.path for h in hits] == expected
    for h in hits:
        assert h.score == pytest.approx(best[h.path])
        assert dict(h.tags)["Loud"] == pytest.approx(best[h.path])  # its loudest window
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
    two = searcher.search_tags(["Dog", "Noise"], k=10)
    assert names_of(two) == {"mixed"} and two[0].score == pytest.approx(0.7, abs=0.01)
    assert len(searcher.search_tags(["Tone"], k=1)) == 1
    with pytest.raises(SearchError, match="no tag given"):
        searcher.search_tags([], k=3)


def test_unknown_tags_and_bad_thresholds_are_clear_errors(searcher):
    q = np.ones(12, dtype=np.float32) / np.sqrt(12)
    with pytest.raises(SearchError, match=r"no sound tag named 'Tonne'.*did you mean 'Tone'"):
        searcher.search_vector(q, 5, Filters(tags=("Tonne",)))
    with pytest.raises(SearchError, match="'Domestic animals, pets'"):
        searcher.search_tags(["pets"])
    with pytest.raises(SearchError, match=r"among the catalogue's 8 tags"):
        searcher.search_tags(["Xylophone"])
    with pytest.raises(SearchError, match="within 0-1"):
        searcher.search_vector(q, 5, Filters(tags=("Tone",), tag_min=1.5))


def test_hybrid_keyword_side_matches_tag_names(searcher):
    cat = searcher.cat
    ids = {cat.file(f)["name"] for f, _ in cat.keyword_search("tone")}
    assert ids == {"robin.wav", "dog.wav", "mixed.wav"}  # no name or folder says "tone"
    assert {cat.file(f)["name"] for f, _ in cat.keyword_search("pets")} == {"dog.wav", "mixed.wav"}
    assert "dog" in names_of(searcher.search_text("domestic animals", k=2, hybrid=True))
    # each hit names the tags the query's words matched, among its own; a search by sound alone
    # matched none
    hits = searcher.search_text("domestic animals", k=8, hybrid=True)
    dog = next(h for h in hits if h.path.endswith("dog.wav"))
    assert dog.matched_tags == ("Domestic animals, pets",), dog.tags
    assert dog.as_dict()["matched_tags"] == ["Domestic animals, pets"]
    for h in hits:
        assert set(h.matched_tags) <= {n for n, _ in h.tags}
        assert set(h.matched_tags) <= {"Domestic animals, pets", "Animal"}
    alone = searcher.search_text("domestic animals", 8, hybrid=False)
    assert alone and not any(h.matched_tags for h in alone)


# --- the command line and the Python API ------------------------------------------------------


def test_cli_tag_filter_listing_output_and_errors(setup, capsys):
    *_, model_dir, _, db = setup
    args = ["--db", str(db), "--model", str(model_dir)]
    assert main(["search", "a sound", "--tag", "tone", "--json", *args]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["tags"] == ["tone"] and names_of_json(doc) == {"robin", "dog", "mixed"}
    for hit in doc["hits"]:
        assert hit["tags"] and all(set(t) == {"name", "p"} for t in hit["tags"])
    assert main(["search", "a sound", "--tag", "Tone", "--tag", "Loud", "--json", *args]) == 0
    assert names_of_json(json.loads(capsys.readouterr().out)) == {"robin", "mixed"}
    assert main(["search", "a sound", "--tag", "Loud", "--tag-min", "0.8", "--json", *args]) == 0
    assert names_of_json(json.loads(capsys.readouterr().out)) == {"robin", "mixed"}

    # Text output: one line of tags under each hit.
    assert main(["search", "a sound", "-k", "2", "--json", *args]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert main(["search", "a sound", "-k", "2", *args]) == 0
    lines = capsys.readouterr().out.splitlines()
    if lines[-1].startswith("no good match"):  # the hint when nothing is good (earshot.search)
        lines = lines[:-1]
    assert len(lines) == 4 and lines[0].lstrip().startswith("1.") and "2." in lines[2]
    for line, hit in zip(lines[1::2], hits, strict=True):
        assert line.strip() == " · ".join(f"{t['name']} {t['p']:.2f}" for t in hit["tags"][:5])
    # a hybrid search's tags line says which tags the words named
    assert main(["search", "domestic animals", "-k", "8", "--hybrid", "--all", *args]) == 0
    out = capsys.readouterr().out.splitlines()
    dog = next(i for i, line in enumerate(out) if "dog.wav" in line)
    assert out[dog + 1].endswith("  (your words name Domestic animals, pets)"), out[dog + 1]

    # --tag alone: the files having it, likeliest first.
    assert main(["search", "--tag", "Noise", *args]) == 0
    out = capsys.readouterr().out
    assert out.count("Noise 0.90") == 3 and "hiss.flac" in out and "robin" not in out
    assert main(["search", "--tag", "noise", "--json", *args]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["query"] is None and names_of_json(doc) == {"traffic", "hiss", "mixed"}

    assert main(["search", "--tag", "Tonne", *args]) == 1
    assert "did you mean 'Tone'" in capsys.readouterr().err
    assert main(["search", "x", "--tag", "Tone", "--tag-min", "2", *args]) == 1
    assert "within 0-1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["search", *args])  # neither text nor tags


def names_of_json(doc: dict) -> set[str]:
    return {h["path"].rsplit("/", 1)[-1].split(".")[0] for h in doc["hits"]}


def test_cli_tag_line_format():
    from earshot.commands.search import tag_line

    assert tag_line([("Dog", 0.934), ("Bark", 0.88)]) == "Dog 0.93 · Bark 0.88"
    assert tag_line([(f"T{i}", 0.5) for i in range(8)]).count("·") == 4  # five at most
    assert tag_line([("Dog", 0.46), ("Animal", 0.43)], named=("Dog",)) == (
        "Dog 0.46 · Animal 0.43  (your words name Dog)"
    )
    assert tag_line([("Dog", 0.46)], n=1, named=("Bark",)) == "Dog 0.46"  # only the shown ones


def test_python_api_takes_tags(setup, tmp_path):
    import earshot

    base, _, _, model, _ = setup
    with earshot.Index(tmp_path / "api.sqlite", model=model) as idx:
        idx.add(base / "library")
        assert names_of(idx.search("a sound", k=10, tags=["Tone"])) == {"robin", "dog", "mixed"}
        assert names_of(idx.search("a sound", tags="noise", formats="wav")) == {"traffic", "mixed"}
        assert names_of(idx.search(tags=["Dog"])) == {"dog", "mixed"}  # no text: a listing
        assert names_of(idx.search_tags(["Loud"], tag_min=0.8)) == {"robin", "mixed"}
        with pytest.raises(TypeError, match="tags, tag_min"):
            idx.search("x", colour="red")


def test_hit_tags_default_to_none_for_older_callers():
    hit = Hit(1, "/a.wav", 0.0, 10.0, 0.5, 1, 2, 10.0, "WAV")
    assert hit.tags == () and hit.as_dict()["tags"] == []


# --- the HTTP API and the page ------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(setup):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from earshot.serve import Settings, create_app

    *_, model, db = setup
    cat = Catalogue(db, readonly=True)
    with TestClient(create_app(cat, model, Settings()), base_url="http://127.0.0.1:8000") as c:
        yield c
    cat.close()


def api_names(r) -> set[str]:
    assert r.status_code == 200, r.text
    return {h["name"].split(".")[0] for h in r.json()["hits"]}


def test_api_tag_filter_and_hits_tags(client, searcher):
    r = client.get("/api/search", params={"q": "a sound", "k": 10, "tag": "tone"})
    assert api_names(r) == {"robin", "dog", "mixed"}
    assert r.json()["filters"] == {"tags": ["tone"]}
    expected = searcher.search_text("a sound", 10, Filters(tags=("tone",)))
    # Both serialisations of a hit give its tags alike.
    assert [h["tags"] for h in r.json()["hits"]] == [h.as_dict()["tags"] for h in expected]
    r = client.get("/api/search", params=[("q", "x"), ("tag", "Tone"), ("tag", "Loud")])
    assert api_names(r) == {"robin", "mixed"}
    r = client.get("/api/search", params={"q": "x", "tag": "Loud", "tag_min": 0.8})
    assert api_names(r) == {"robin", "mixed"}
    plain = client.get("/api/search", params={"q": "a sound", "k": 3}).json()["hits"]
    assert all(h["tags"] and set(h["tags"][0]) == {"name", "p"} for h in plain)


def test_api_tags_alone_list_the_files_having_them(client):
    r = client.get("/api/search", params={"tag": "Noise"})
    assert api_names(r) == {"traffic", "hiss", "mixed"}
    assert all(h["score"] == pytest.approx(0.9, abs=0.01) for h in r.json()["hits"])
    fid = next(h["file_id"] for h in r.json()["hits"] if h["name"] == "mixed.wav")
    similar = client.get(f"/api/similar/{fid}", params={"tag": "Tone"})
    assert api_names(similar) == {"robin", "dog"}
    info = client.get(f"/api/files/{fid}").json()
    assert [t["name"] for t in info["sound_tags"]][:3] == ["Tone", "Loud", "Noise"]  # by p


@pytest.mark.parametrize(
    ("params", "status", "words"),
    [
        ({"q": "x", "tag": "Tonne"}, 400, "did you mean 'Tone'"),
        ({}, 400, "empty query"),
        ({"q": "x", "tag": "Tone", "tag_min": 2}, 422, "tag_min: Input should be less than"),
    ],
)
def test_api_tag_errors(client, params, status, words):
    r = client.get("/api/search", params=params)
    assert r.status_code == status and words in r.json()["error"]


def test_api_tag_menu(client):
    body = client.get("/api/tags").json()
    assert body["vocabulary"] == len(TAG_NAMES)
    counts = {t["name"]: t["files"] for t in body["tags"]}
    assert counts["Tone"] == 3 and counts["Noise"] == 3 and "Rain" not in counts
    assert list(counts.values()) == sorted(counts.values(), reverse=True)


def test_page_has_the_tag_filter_and_chips(client):
    page = client.get("/").text
    assert 'id="tag"' in page and 'id="tag-chosen"' in page
    # The page's ES modules, as the browser fetches them.
    js = "\n".join(client.get(f"/static/{m}.js").text for m in ("app", "filters", "results"))
    assert "/api/tags" in js and "tag-chip" in js and 'p.append("tag", tag)' in js
    assert ".tag-chip" in client.get("/static/style.css").text


def test_tag_syntax_uses_sound_tags_and_their_probability_is_the_confidence(searcher):
    cat = searcher.cat
    q = np.ones(12, dtype=np.float32) / np.sqrt(12)
    # tag: in the query is the sound-tag filter where the catalogue has that tag...
    assert names_of(searcher.search_text("anything tag:noise", 10)) == files_with(cat, "Noise")
    assert names_of(searcher.search_vector(q, 10, Filters(tags=("Noise",)))) == files_with(
        cat, "Noise"
    )
    # ... and alone, the tag search, whose probability stands as each hit's confidence.
    hits = searcher.search_text("tag:loud", 10)
    assert names_of(hits) == files_with(cat, "Loud")
    for h in hits:
        assert h.confidence == pytest.approx(h.score)
        assert h.band == ("good" if h.score >= 0.5 else "weak" if h.score >= 0.2 else "none")
