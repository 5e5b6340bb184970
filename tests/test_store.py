"""The catalogue: round trips, filters, keyword search, model binding, and what survives failures
(kill -9 mid-batch, a full disk, damaged or foreign files, concurrent readers)."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from earshot.errors import EarshotError
from earshot.index import store
from earshot.index.keyword_text import fts_query, stem, words
from earshot.index.store import (
    Catalogue,
    CatalogueError,
    FileRecord,
    ModelMismatchError,
    default_db_path,
)

DIM = 8
MODEL = "model-a"


def record(path: str, content_hash: str | None = None, **changes) -> FileRecord:
    fields = dict(
        path=path,
        size=1000,
        mtime_ns=123,
        content_hash=content_hash or f"hash-of-{path}",
        duration_s=10.0,
        sample_rate=32000,
        channels=1,
        format="WAV",
        subtype="PCM_16",
        tags={},
    )
    return FileRecord(**(fields | changes))


def segs(n: int, seed: int, dim: int = DIM) -> list[tuple[float, float, np.ndarray]]:
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return [(5.0 * i, 5.0 * i + 10.0, v[i]) for i in range(n)]


def stacked(segments) -> np.ndarray:
    return np.stack([v for _, _, v in segments])


@pytest.fixture
def cat(tmp_path):
    with Catalogue(tmp_path / "cat.sqlite") as c:
        c.bind_model(MODEL, DIM, {"encoder": "tiny"})
        yield c


def assert_sound(c: Catalogue) -> None:
    assert c.check() == []


# --- opening -------------------------------------------------------------------------------


def test_new_catalogue_is_wal_with_schema_and_folders_made(tmp_path):
    path = tmp_path / "deep" / "er" / "cat.sqlite"
    with Catalogue(path) as c:
        assert c.path == path and path.is_file()
        assert c.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert c.db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert c.db.execute("PRAGMA busy_timeout").fetchone()[0] > 0
        assert (c.generation, c.model_id, c.dim, c.segment_count()) == (0, None, None, 0)
        assert c.vectors()[1].shape == (0, 0)
        assert_sound(c)
    with Catalogue(path) as c:  # reopening an existing catalogue changes nothing
        assert c.generation == 0


def test_a_text_file_is_not_a_catalogue_and_is_left_alone(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("shopping list: eggs, milk, a new microphone\n" * 50)
    before = path.read_bytes()
    with pytest.raises(CatalogueError, match=r"notes\.txt.*not an earshot catalogue"):
        Catalogue(path)
    assert path.read_bytes() == before


def test_another_programs_database_is_not_a_catalogue(tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE stuff (x)")
    with pytest.raises(CatalogueError, match=r"other\.db.*not an earshot catalogue"):
        Catalogue(path)


def test_readonly_open_of_a_missing_file_creates_nothing(tmp_path):
    path = tmp_path / "missing.sqlite"
    with pytest.raises(CatalogueError, match=r"missing\.sqlite"):
        Catalogue(path, readonly=True)
    assert not path.exists()


def test_a_folder_is_not_a_catalogue(tmp_path):
    with pytest.raises(CatalogueError, match="folder"):
        Catalogue(tmp_path)


def test_newer_schema_version_is_refused_clearly(tmp_path):
    path = tmp_path / "cat.sqlite"
    Catalogue(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = 99 WHERE key = 'schema_version'")
    with pytest.raises(CatalogueError, match=r"cat\.sqlite.*schema version 99, newer"):
        Catalogue(path)


def test_readonly_reads_but_refuses_writes(cat, tmp_path):
    with cat.batch():
        cat.put_file(record("/s/a.wav"), segs(2, 0))
    with Catalogue(cat.path, readonly=True) as ro:
        assert ro.segment_count() == 2 and ro.model_id == MODEL
        ro.bind_model(MODEL, DIM)  # checking the bound model writes nothing: allowed
        with pytest.raises(CatalogueError, match="read-only"), ro.batch():
            pass
        with pytest.raises(CatalogueError, match="read-only"):
            ro.put_file(record("/s/b.wav"), segs(1, 1))


def test_closed_catalogue_says_so(tmp_path):
    c = Catalogue(tmp_path / "cat.sqlite")
    c.close()
    c.close()  # twice is fine
    with pytest.raises(CatalogueError, match="closed"):
        c.file_states()


def test_default_db_path(monkeypatch, tmp_path):
    monkeypatch.setenv("EARSHOT_DB", str(tmp_path / "x.sqlite"))
    assert default_db_path() == tmp_path / "x.sqlite"
    monkeypatch.delenv("EARSHOT_DB")
    path = default_db_path()
    assert path.name == "catalogue.sqlite" and path.parent.name == "earshot"


# --- model binding ---------------------------------------------------------------------------


def test_binding_persists_and_refuses_another_model(cat):
    cat.bind_model(MODEL, DIM)  # the same model again: fine
    assert (cat.model_id, cat.dim, cat.model_info) == (MODEL, DIM, {"encoder": "tiny"})
    with pytest.raises(ModelMismatchError) as err:
        cat.bind_model("model-b", DIM)
    message = str(err.value)
    assert str(cat.path) in message and "holds vectors of model model-a" in message
    assert "this is model model-b" in message and "--model model-a" not in message
    assert "(--model DIR, DIR being the folder of model model-a)" in message
    assert isinstance(err.value, CatalogueError) and isinstance(err.value, EarshotError)
    with pytest.raises(CatalogueError, match="16-d"):
        cat.bind_model(MODEL, 16)
    cat.close()
    with Catalogue(cat.path) as again, pytest.raises(ModelMismatchError):
        again.bind_model("model-b", DIM)


def test_binding_inside_a_batch_commits_with_it(tmp_path):
    with Catalogue(tmp_path / "c.sqlite") as c:
        with pytest.raises(RuntimeError), c.batch():
            c.bind_model(MODEL, DIM)
            raise RuntimeError("interrupted")
        assert c.model_id is None
        with c.batch():
            c.bind_model(MODEL, DIM)
            c.put_file(record("/s/a.wav"), segs(1, 0))
        assert c.model_id == MODEL and c.generation == 1


def test_writes_need_a_model_and_vectors_of_its_dim(tmp_path):
    with Catalogue(tmp_path / "c.sqlite") as c:
        with pytest.raises(CatalogueError, match="no model"), c.batch():
            c.put_file(record("/s/a.wav"), segs(1, 0))
        c.bind_model(MODEL, DIM)
        with pytest.raises(CatalogueError, match=r"a\.wav.*7 dimensions, not 8"), c.batch():
            c.put_file(record("/s/a.wav"), segs(1, 0, dim=7))
        assert c.segment_count() == 0


# --- writing and reading back ------------------------------------------------------------------


def test_put_replace_remove_round_trip(cat):
    a, b = segs(3, 1), segs(2, 2)
    with cat.batch():
        id_a = cat.put_file(record("/s/a.wav", tags={"title": "A"}), a)
        id_b = cat.put_file(record("/s/b.flac", format="FLAC"), b)
    assert cat.generation == 1  # one bump per batch, however many writes
    states = cat.file_states()
    assert set(states) == {"/s/a.wav", "/s/b.flac"}
    assert states["/s/a.wav"].file_id == id_a and states["/s/a.wav"].status == "ok"
    assert states["/s/a.wav"].content_hash == "hash-of-/s/a.wav"
    rows = cat.file_segments(id_a)
    assert [(r.start_s, r.end_s) for r in rows] == [(0, 10), (5, 15), (10, 20)]
    assert rows[0].path == "/s/a.wav" and rows[0].format == "WAV" and rows[0].duration_s == 10
    np.testing.assert_allclose(cat.segment_vector(rows[1].segment_id), a[1][2], atol=1e-3)
    old_ids = {r.segment_id for r in rows}

    new_a = segs(1, 3)
    with cat.batch():
        id_a2 = cat.put_file(record("/s/a.wav", content_hash="changed", size=5), new_a)
    assert cat.generation == 2
    assert cat.file_states()["/s/a.wav"] == store.FileState(id_a2, 5, 123, "changed", "ok")
    assert min(r.segment_id for r in cat.file_segments(id_a2)) > max(old_ids)
    assert not set(cat.segments(sorted(old_ids)))  # the old segments are gone
    assert cat.segment_count() == 3

    with cat.batch():
        assert cat.remove_paths(["/s/a.wav", "/s/never-seen.wav"]) == 1
    assert set(cat.file_states()) == {"/s/b.flac"} and cat.file_segments(id_a2) == []
    assert cat.file(id_a2) is None and cat.file_id_for_path("/s/a.wav") is None
    assert cat.file_id_for_path("/s/b.flac") == id_b
    assert cat.segment_count() == 2 and cat.generation == 3

    with cat.batch():  # a batch that changes nothing keeps the generation
        cat.remove_paths(["/s/never-seen.wav"])
    assert cat.generation == 3
    assert_sound(cat)


def test_file_details(cat):
    tags = {"title": "Rain on a tin roof", "artist": "me"}
    with cat.batch():
        fid = cat.put_file(record("/s/rain/Roof.WAV", tags=tags, duration_s=42.5), segs(4, 0))
    info = cat.file(fid)
    assert info["path"] == "/s/rain/Roof.WAV" and info["folder"] == "/s/rain"
    assert info["name"] == "Roof.WAV" and info["ext"] == "wav" and info["tags"] == tags
    assert info["duration_s"] == 42.5 and info["segments"] == 4 and info["status"] == "ok"
    assert info["sample_rate"] == 32000 and info["subtype"] == "PCM_16"
    assert cat.file(fid + 100) is None


def test_vectors_read_in_chunks_equal_what_was_put(cat, monkeypatch):
    monkeypatch.setattr(store, "_FETCH_ROWS", 3)  # many chunks, and one partial
    put = {}
    with cat.batch():
        for i in range(5):
            put[f"/v/{i}.wav"] = segs(i + 1, seed=i)
            cat.put_file(record(f"/v/{i}.wav"), put[f"/v/{i}.wav"])
    ids, vectors = cat.vectors()
    assert ids.dtype == np.int64 and vectors.dtype == np.float16
    assert vectors.shape == (15, DIM) and np.all(np.diff(ids) > 0)
    expected = np.concatenate([stacked(put[f"/v/{i}.wav"]) for i in range(5)])
    np.testing.assert_allclose(vectors.astype(np.float32), expected, atol=1e-3)
    assert cat.max_segment_id() == ids[-1] and cat.segment_count() == 15

    since_ids, since_vectors = cat.vectors(since_segment_id=int(ids[9]))
    np.testing.assert_array_equal(since_ids, ids[10:])
    np.testing.assert_array_equal(since_vectors, vectors[10:])
    empty_ids, empty = cat.vectors(since_segment_id=int(ids[-1]))
    assert empty_ids.shape == (0,) and empty.shape == (0, DIM)


def test_segment_ids_are_never_reused_and_removals_are_visible(cat):
    with cat.batch():
        cat.put_file(record("/s/a.wav"), segs(3, 0))
    built_at, top = cat.generation, cat.max_segment_id()
    assert not cat.deleted_since(built_at)
    with cat.batch():
        cat.put_file(record("/s/b.wav"), segs(1, 1))
    assert not cat.deleted_since(built_at) and cat.removals == 0  # additions only: extend
    with cat.batch():
        cat.remove_paths(["/s/a.wav", "/s/b.wav"])
    with cat.batch():
        cat.put_file(record("/s/a.wav"), segs(3, 0))
    assert cat.deleted_since(built_at) and cat.removals == 4
    assert cat.vectors()[0].min() > top + 1
    assert not cat.deleted_since(cat.generation)


def test_segments_lookup_handles_many_and_missing_ids(cat):
    with cat.batch():
        fid = cat.put_file(record("/s/long.wav", duration_s=6000.0), segs(1000, 0))
    ids = cat.vectors()[0]
    found = cat.segments([*ids.tolist(), 10**9])
    assert len(found) == 1000 and 10**9 not in found
    row = found[int(ids[500])]
    assert (row.file_id, row.path, row.start_s, row.duration_s) == (fid, "/s/long.wav", 2500, 6000)
    with pytest.raises(CatalogueError, match="no segment"):
        cat.segment_vector(10**9)


def test_copy_segments_reuses_vectors_of_the_same_bytes(cat):
    original = segs(3, 7)
    with cat.batch():
        src = cat.put_file(record("/s/a.wav", content_hash="H"), original)
        cat.put_skipped("/s/bad.wav", 10, 1, "not audio")
    assert cat.find_by_hash("H") == src and cat.find_by_hash("nope") is None
    src_ids = [r.segment_id for r in cat.file_segments(src)]

    with cat.batch():
        copy = cat.copy_segments(src, record("/t/copy of a.wav", content_hash="H"))
    rows = cat.file_segments(copy)
    assert copy != src and [(r.start_s, r.end_s) for r in rows] == [(0, 10), (5, 15), (10, 20)]
    got = np.stack([cat.segment_vector(r.segment_id) for r in rows])
    np.testing.assert_allclose(got, stacked(original), atol=1e-3)
    assert not set(src_ids) & {r.segment_id for r in rows}
    assert hits(cat, "copy") == [copy]

    built_at = cat.generation
    with cat.batch():  # the same bytes touched in place: segments (and their ids) stay
        same = cat.copy_segments(src, record("/s/a.wav", content_hash="H", mtime_ns=999))
    assert same == src and [r.segment_id for r in cat.file_segments(src)] == src_ids
    assert cat.file_states()["/s/a.wav"].mtime_ns == 999 and not cat.deleted_since(built_at)

    with pytest.raises(CatalogueError, match="content differs"), cat.batch():
        cat.copy_segments(src, record("/t/other.wav", content_hash="G"))
    with pytest.raises(CatalogueError, match="no indexed file"), cat.batch():
        cat.copy_segments(cat.file_id_for_path("/s/bad.wav"), record("/t/x.wav"))
    assert_sound(cat)


def test_skipped_files_are_listed_and_replace_indexed_ones(cat):
    with cat.batch():
        fid = cat.put_file(record("/s/a.wav", content_hash="H"), segs(2, 0))
        cat.put_skipped("/s/z.mp3", 10, 5, "cannot decode: not an audio file")
    with cat.batch():
        cat.put_skipped("/s/a.wav", 11, 6, "truncated")
    assert cat.skipped() == [
        ("/s/a.wav", "truncated"),
        ("/s/z.mp3", "cannot decode: not an audio file"),
    ]
    state = cat.file_states()["/s/a.wav"]
    assert (state.status, state.content_hash, state.size, state.mtime_ns) == ("skipped", "", 11, 6)
    assert cat.segment_count() == 0 and cat.file_segments(fid) == []
    assert cat.find_by_hash("H") is None and cat.keyword_search("a") == []
    with cat.batch():
        cat.put_file(record("/s/a.wav"), segs(1, 1))
    assert cat.skipped() == [("/s/z.mp3", "cannot decode: not an audio file")]
    assert_sound(cat)


def test_bad_writes_are_refused_before_touching_the_batch(cat):
    with cat.batch():
        for bad_record, bad_segments, reason in [
            (record("relative/a.wav"), segs(1, 0), "absolute"),
            (record("/s/a.wav"), [], "no segments"),
            (record("/s/a.wav"), [(0.0, 1.0, np.full(DIM, np.nan))], "NaN"),
            (record("/s/a.wav"), [(0.0, 1.0, np.full(DIM, 1e6))], "float16"),
            (record("/s/a.wav"), [(3.0, 1.0, np.ones(DIM))], "span"),
            (record("/s/a.wav"), [(0.0, 1.0)], "not \\(start_s, end_s, vector\\)"),
        ]:
            with pytest.raises(CatalogueError, match=reason):
                cat.put_file(bad_record, bad_segments)
        cat.put_file(record("/s/ok.wav"), segs(1, 0))  # the batch goes on
    assert set(cat.file_states()) == {"/s/ok.wav"}


def test_writes_need_a_batch_and_batches_do_not_nest(cat):
    with pytest.raises(CatalogueError, match="batch"):
        cat.put_file(record("/s/a.wav"), segs(1, 0))
    with pytest.raises(CatalogueError, match="nest"), cat.batch(), cat.batch():
        pass


def test_an_exception_in_a_batch_rolls_all_of_it_back(cat):
    with cat.batch():
        cat.put_file(record("/s/keep.wav"), segs(1, 0))
    with pytest.raises(KeyError), cat.batch():
        cat.put_file(record("/s/new.wav"), segs(2, 1))
        cat.remove_paths(["/s/keep.wav"])
        raise KeyError("boom")
    assert set(cat.file_states()) == {"/s/keep.wav"}
    assert cat.generation == 1 and cat.segment_count() == 1
    assert_sound(cat)


# --- filters and keyword search ------------------------------------------------------------------


@pytest.fixture
def library(cat):
    files = {
        "/a/b/x.wav": dict(duration_s=5.0, format="WAV", subtype="PCM_16"),
        "/a/b/c/y.flac": dict(duration_s=60.0, format="FLAC", subtype="PCM_24"),
        "/a/bc/z.wav": dict(duration_s=30.0, format="WAV", subtype="FLOAT"),
        "/a/b.wav": dict(duration_s=1.0, format="WAV", subtype="PCM_16"),
        "/d/voice.ogg": dict(duration_s=30.0, format="OGG", subtype="OPUS"),
        "/d/song.m4a": dict(duration_s=200.0, format="MP4", subtype="AAC"),
    }
    ids = {}
    with cat.batch():
        for i, (path, info) in enumerate(files.items()):
            fid = cat.put_file(record(path, **info), segs(2, i))
            ids[path] = [r.segment_id for r in cat.file_segments(fid)]
        cat.put_skipped("/a/b/broken.wav", 1, 1, "bad")
    return cat, ids


def segment_ids_of(ids: dict, *paths: str) -> list[int]:
    return sorted(i for p in paths for i in ids[p])


def test_folder_filter_is_a_folder_prefix_not_a_string_prefix(library):
    cat, ids = library
    under_ab = segment_ids_of(ids, "/a/b/x.wav", "/a/b/c/y.flac")
    for folder in ["/a/b", "/a/b/", "/a/./b", Path("/a/b")]:
        got = cat.segment_ids_matching(folder=folder)
        assert got.dtype == np.int64 and got.tolist() == under_ab
    assert cat.segment_ids_matching(folder="/a").tolist() == segment_ids_of(
        ids, "/a/b/x.wav", "/a/b/c/y.flac", "/a/bc/z.wav", "/a/b.wav"
    )
    assert len(cat.segment_ids_matching(folder="/")) == 12 == len(cat.segment_ids_matching())
    assert cat.segment_ids_matching(folder="/nowhere").tolist() == []


def test_duration_and_format_filters(library):
    cat, ids = library
    got = cat.segment_ids_matching(min_duration=30, max_duration=60)
    assert got.tolist() == segment_ids_of(ids, "/a/b/c/y.flac", "/a/bc/z.wav", "/d/voice.ogg")
    assert cat.segment_ids_matching(formats=["wav"]).tolist() == segment_ids_of(
        ids, "/a/b/x.wav", "/a/bc/z.wav", "/a/b.wav"
    )
    assert cat.segment_ids_matching(formats=["FLAC", ".Ogg"]).tolist() == segment_ids_of(
        ids, "/a/b/c/y.flac", "/d/voice.ogg"
    )
    assert cat.segment_ids_matching(formats=["opus"]).tolist() == ids["/d/voice.ogg"]
    assert cat.segment_ids_matching(formats=["m4a"]).tolist() == ids["/d/song.m4a"]
    both = cat.segment_ids_matching(folder="/a", max_duration=10, formats=["wav"])
    assert both.tolist() == segment_ids_of(ids, "/a/b/x.wav", "/a/b.wav")
    assert len(cat.segment_ids_matching(formats=[])) == 12


@pytest.fixture
def named(cat):
    paths = {
        "dog": ("/lib/Animals/dog_bark-01.wav", {}),
        "camel": ("/lib/Weather/RainOnRoof.flac", {"comment": "recorded in Norwegian fjord"}),
        "thunder": ("/lib/misc/take 7.wav", {"title": "Distant thunder", "artist": "Åsa"}),
        "barking": ("/lib/misc/neighbours barking.wav", {}),
        "folder_only": ("/lib/dog/untitled.wav", {}),
    }
    with cat.batch():
        ids = {k: cat.put_file(record(p, tags=t), segs(1, i)) for i, (k, (p, t)) in
               enumerate(paths.items())}  # fmt: skip
    return cat, ids


def hits(cat, query: str, limit: int = 100) -> list[int]:
    return [file_id for file_id, _ in cat.keyword_search(query, limit)]


def test_keyword_search_over_names_folders_and_tags(named):
    cat, ids = named
    assert hits(cat, "roof") == [ids["camel"]]  # camelCase split
    assert hits(cat, "rainonroof") == [ids["camel"]]  # and as written
    assert hits(cat, "thunder") == [ids["thunder"]]  # tag value
    assert hits(cat, "asa") == [ids["thunder"]]  # diacritics folded
    assert hits(cat, "fjord") == [ids["camel"]]
    assert hits(cat, "animals") == [ids["dog"]]  # folder name
    assert hits(cat, "01") == [ids["dog"]]
    assert set(hits(cat, "bark")) == {ids["dog"], ids["barking"]}  # prefix
    ranked = cat.keyword_search("dog")  # in the name beats in a folder's name
    assert [f for f, _ in ranked] == [ids["dog"], ids["folder_only"]]
    assert ranked[0][1] > ranked[1][1]
    assert set(hits(cat, "a dog barks in the rain")[:2]) == {ids["dog"], ids["camel"]}
    assert len(hits(cat, "dog rain thunder", limit=2)) == 2
    assert hits(cat, "wav") == []  # the extension is not a word of the name
    with cat.batch():
        cat.remove_paths(["/lib/Animals/dog_bark-01.wav"])
    assert hits(cat, "animals") == []


HOSTILE = [
    'dog "bark',
    "AND",
    "OR",
    "NOT",
    "NEAR",
    "*",
    "**",
    '"',
    '""',
    "'",
    "(",
    ")",
    "((dog",
    "NEAR(dog bark, 2)",
    "name:dog",
    "tags : x",
    "^dog",
    "-dog",
    "+",
    "dog AND",
    "AND dog OR",
    "dog*",
    "{name folder}: dog",
    "",
    "   ",
    "\x00",
    "dog\x00bark",
    "ü",
    "🐕🐕",
    "日本語の音",
    "²³",
    "ǅ",
    "\u0301",
    "x" * 5000,
    "dog " * 500,
    "a the of",
    "%_",
    "\\",
    "dog;DROP TABLE files",
]


@pytest.mark.parametrize("query", HOSTILE)
def test_keyword_search_takes_any_text(named, query):
    cat, ids = named
    result = cat.keyword_search(query)
    assert isinstance(result, list)
    if "dog" in query.lower():
        assert ids["dog"] in [f for f, _ in result]


def test_keyword_search_survives_random_unicode(named):
    cat, _ = named
    rng = random.Random(0)
    alphabet = [chr(c) for c in range(1, 0x3000) if not 0xD800 <= c <= 0xDFFF] + ['"', "*"] * 50
    for _ in range(300):
        cat.keyword_search("".join(rng.choices(alphabet, k=rng.randint(1, 20))))


def test_fts_text_helpers():
    assert words("DogBark_02-loud") == "DogBark 02 loud Dog Bark"
    assert words("take 7") == "take 7"
    assert fts_query('a dog "barks" at') == '"dog"* OR "bark"*'  # finds "bark", "barks"
    # a query's other forms of a word find a name's: the plain English endings only
    for word, head in [
        ("barking", "bark"), ("slams", "slam"), ("footsteps", "footstep"), ("slammed", "slam"),
        ("dripping", "drip"), ("crashes", "crash"), ("glasses", "glass"), ("doors", "door"),
        ("buzzing", "buzz"), ("glass", "glass"), ("string", "string"), ("news", "news"),
        ("chorus", "chorus"), ("rain", "rain"), ("Birds", "bird"), ("boxes", "boxes"),
    ]:  # fmt: skip
        assert stem(word) == head, word
    assert fts_query("a the") == '"a" OR "the"*'  # only stopwords: keep them
    assert fts_query(' * "" () ') is None


def test_matching_tags_names_what_the_keyword_search_matches():
    from earshot.index.keyword_text import matching_tags

    names = ["Dog", "Bark", "Bow-wow", "Domestic animals, pets", "Rain on surface", "Raindrop"]
    names += ["Door", "Slam", "Sound effect", "Ox", "Oxygen", "Chirp, tweet", "Bird vocalization"]
    assert matching_tags("a dog barking", names) == ("Dog", "Bark")
    assert matching_tags("the sound of rain", names) == (
        "Rain on surface",
        "Raindrop",
        "Sound effect",
    )
    assert matching_tags("an ox", names) == ("Ox",)  # a word under 3 letters is matched whole
    assert matching_tags("", names) == () and matching_tags("rain", []) == ()
    # the same names as FTS5 finds for the query's MATCH expression, query by query
    db = sqlite3.connect(":memory:")
    db.execute(
        "CREATE VIRTUAL TABLE t USING fts5 (name, tokenize = 'unicode61 remove_diacritics 2')"
    )
    db.executemany("INSERT INTO t (rowid, name) VALUES (?, ?)", enumerate(names))
    for query in ["a dog barking", "rain drops", "door slams", "birds chirping", "an ox",
                  "pets and animals", "sounds", "x"]:  # fmt: skip
        found = {
            names[r]
            for (r,) in db.execute("SELECT rowid FROM t WHERE t MATCH ?", (fts_query(query),))
        }
        assert set(matching_tags(query, names)) == found, query


def test_stats(cat):
    with cat.batch():
        cat.put_file(record("/s/a.wav", duration_s=1800.0), segs(3, 0))
        cat.put_file(record("/s/b.wav", duration_s=5400.0), segs(2, 1))
        cat.put_skipped("/s/c.wav", 1, 1, "bad")
    s = cat.stats()
    assert (s["files_ok"], s["files_skipped"], s["segments"]) == (2, 1, 5)
    assert s["hours"] == pytest.approx(2.0) and s["model_id"] == MODEL and s["dim"] == DIM
    assert s["generation"] == 1 and s["db_bytes"] > 0 and s["path"] == str(cat.path)


# --- failures ------------------------------------------------------------------------------------


def test_full_disk_rolls_the_batch_back_and_leaves_a_usable_catalogue(cat):
    with cat.batch():
        cat.put_file(record("/s/a.wav"), segs(2, 0))
    before = (cat.file_states(), cat.generation, cat.vectors()[0].tolist())
    pages = cat.db.execute("PRAGMA page_count").fetchone()[0]
    cat.db.execute(f"PRAGMA max_page_count = {pages + 2}")
    too_big = segs(3000, 1)
    full = r"cat\.sqlite' is full \(the disk"
    with pytest.raises(CatalogueError, match=full) as err, cat.batch():
        cat.put_file(record("/s/b.wav"), segs(1, 2))
        cat.put_file(record("/s/c.wav"), too_big)
    assert "nothing of this batch was written" in str(err.value)
    assert (cat.file_states(), cat.generation, cat.vectors()[0].tolist()) == before

    # A caller that swallows the error cannot commit the half-written batch.
    with pytest.raises(CatalogueError, match="failed"), cat.batch():
        with pytest.raises(CatalogueError, match="full"):
            cat.put_file(record("/s/c.wav"), too_big)
        with pytest.raises(CatalogueError, match="earlier write"):
            cat.put_file(record("/s/d.wav"), segs(1, 3))
    assert (cat.file_states(), cat.generation, cat.vectors()[0].tolist()) == before
    assert_sound(cat)

    cat.db.execute("PRAGMA max_page_count = 1073741823")  # space again
    with cat.batch():
        cat.put_file(record("/s/c.wav"), too_big)
    assert cat.segment_count() == 3002 and cat.generation == before[1] + 1
    assert_sound(cat)


def test_a_reader_sees_a_batch_whole_or_not_at_all(cat):
    with cat.batch():
        cat.put_file(record("/s/a.wav"), segs(1, 0))
    with Catalogue(cat.path) as reader:
        with cat.batch():
            cat.put_file(record("/s/b.wav"), segs(2, 1))
            cat.remove_paths(["/s/a.wav"])
            assert set(reader.file_states()) == {"/s/a.wav"}
            assert reader.generation == 1 and reader.segment_count() == 1
        assert set(reader.file_states()) == {"/s/b.wav"}
        assert reader.generation == 2 and reader.segment_count() == 2


def test_concurrent_reader_never_sees_half_a_batch(cat):
    done = threading.Event()
    errors = []

    def write() -> None:
        try:
            for n in range(40):
                with cat.batch():  # each batch: two files of two segments, one removal
                    cat.put_file(record(f"/w/{n}a.wav"), segs(2, n))
                    cat.put_file(record(f"/w/{n}b.wav"), segs(2, n + 100))
                    if n:
                        cat.remove_paths([f"/w/{n - 1}a.wav"])
        except Exception as exc:  # surfaced in the main thread
            errors.append(exc)
        finally:
            done.set()

    seen = set()
    with Catalogue(cat.path, timeout=5) as reader:
        writer = threading.Thread(target=write)
        writer.start()
        while not done.is_set() or not seen:
            s = reader.stats()
            g = s["generation"]
            assert s["files_ok"] == (g + 1 if g else 0), s  # 2 per batch, less 1 removed
            assert s["segments"] == 2 * s["files_ok"], s
            ids, _ = reader.vectors()
            assert len(ids) % 2 == 0
            seen.add(g)
        writer.join()
    assert not errors and len(seen) > 1


def test_a_second_writer_gets_a_clear_locked_error(cat):
    with Catalogue(cat.path, timeout=0.05) as other, cat.batch():
        cat.put_file(record("/s/a.wav"), segs(1, 0))
        with pytest.raises(CatalogueError, match="locked by another process"), other.batch():
            pass


# kill -9: a child process writes batches in a loop and is killed at random moments. Each batch
# n applies the deterministic `kill_ops(n)`, so the state after generation g is known exactly.

KILL_DIM = 32


def kill_ops(n: int) -> list[tuple]:
    ops: list[tuple] = [("put", f"/k/{n}-{j}.wav", 3, n * 100 + j) for j in range(15)]
    if n % 2 == 0:
        ops.append(("remove", [f"/k/{n - 1}-{j}.wav" for j in range(5)]))
    if n % 3 == 0:
        ops.append(("skip", f"/k/{n - 1}-7.wav"))
        ops.append(("copy", f"/k/{n}-0.wav", f"/k/copy-{n}.wav"))
    if n % 5 == 0:
        ops.append(("put", f"/k/{n - 1}-9.wav", 2, -n))  # replaced with other content
    return ops


def kill_segments(count: int, seed: int) -> list:
    return segs(count, seed % 2**32, KILL_DIM)


def kill_expected(generation: int) -> dict[str, list | None]:
    """path → expected segments (None for a skipped file) after `generation` batches."""
    files: dict[str, list | None] = {}
    for n in range(1, generation + 1):
        for op in kill_ops(n):
            if op[0] == "put":
                files[op[1]] = kill_segments(op[2], op[3])
            elif op[0] == "remove":
                for path in op[1]:
                    files.pop(path, None)
            elif op[0] == "skip":
                files[op[1]] = None
            else:
                files[op[2]] = files[op[1]]
    return files


def kill_child(db: str) -> None:
    """Runs in the child process: batches forever, reporting each commit."""
    cat = Catalogue(db)
    cat.db.execute("PRAGMA wal_autocheckpoint = 20")  # kills land in checkpoints too
    cat.bind_model("kill-model", KILL_DIM)
    n = cat.generation
    print("ready", flush=True)
    while True:
        n += 1
        with cat.batch():
            for op in kill_ops(n):
                if op[0] == "put":
                    cat.put_file(record(op[1], content_hash=f"h{op[3]}"), kill_segments(*op[2:]))
                elif op[0] == "remove":
                    cat.remove_paths(op[1])
                elif op[0] == "skip":
                    cat.put_skipped(op[1], 1, 1, "killed test")
                else:
                    source = cat.file_id_for_path(op[1])
                    cat.copy_segments(source, record(op[2], content_hash=f"h{n * 100}"))
        print("committed", n, flush=True)


@pytest.mark.slow  # subprocesses or a training run: CI runs it (make test-all)
def test_kill_9_mid_batch_leaves_a_consistent_catalogue_that_lost_nothing(tmp_path):
    db = tmp_path / "killed.sqlite"
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
        f"import test_store; test_store.kill_child({str(db)!r})"
    )
    rng = random.Random(9)
    committed = 0
    for delay in [0.0, 0.005] + [rng.uniform(0.01, 0.25) for _ in range(5)]:
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "ready"
        time.sleep(delay)
        os.kill(child.pid, signal.SIGKILL)
        lines = child.communicate()[0].split()
        assert child.returncode == -signal.SIGKILL
        committed = max([committed] + [int(w) for w in lines if w.isdigit()])

        with Catalogue(db) as cat:
            assert_sound(cat)  # integrity_check, segments ↔ files, FTS in sync
            g = cat.generation
            assert g in (committed, committed + 1)  # +1: killed between commit and print
            expected = kill_expected(g)
            states = cat.file_states()
            assert set(states) == set(expected)
            assert {p for p, s in states.items() if s.status == "skipped"} == {
                p for p, want in expected.items() if want is None
            }
            ids, vectors = cat.vectors()
            rows = cat.segments(ids)
            got: dict[str, list] = {}
            for i, v in zip(ids.tolist(), vectors, strict=True):
                got.setdefault(rows[i].path, []).append((rows[i].start_s, rows[i].end_s, v))
            assert set(got) == {p for p, want in expected.items() if want is not None}
            for path, have in got.items():
                want = expected[path]
                assert [(s, e) for s, e, _ in have] == [(s, e) for s, e, _ in want]
                np.testing.assert_allclose(stacked(have), stacked(want), atol=1e-3)
            committed = g
    assert committed > 5  # the children did get work done
