"""Search and the page over shards (issue #17): `earshot search --shards` / `serve --shards`
give what `earshot search` / `serve` give over a catalogue of the same files.

The shard indexes run in this process (`ShardSearcher(address=None)`: the same `ShardIndex`
objects a Ray actor holds, without Ray); tests/test_scale.py runs them as actors on a real
two-node cluster over moto's S3. The library has byte-identical copies (duplicate grouping),
embedded descriptions (hybrid search, `meta`), several folders, formats, rates and channel
counts, a file that changes halfway (spans) and a broken one; the model tags its windows.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyarrow", reason="earshot[ray] is not installed (pyarrow)")

from earshot.cli import main
from earshot.filters import Filters
from earshot.index.store import Catalogue
from earshot.model.io import load_model, save_model
from earshot.scale import shards as sh
from earshot.scale.storage import Location
from earshot.search import Searcher
from earshot.testing.audio import write_tone
from earshot.testing.metadata import add_bext

IDS = ("file_id", "segment_id")


def test_a_filtered_ann_search_takes_sparse_shard_ids():
    """Shard segment ids are file_id << 20 | window: a filter's bitmap up to the largest id
    would not fit, so the index filters by a batch of ids (index/ann)."""
    from earshot.index.ann import build

    rng = np.random.default_rng(0)
    ids = np.array([(f << 20) | w for f in (3, 90_000, 4_000_000) for w in range(4)], np.int64)
    vectors = rng.standard_normal((len(ids), 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ann = build(ids, vectors.astype(np.float16), 0, 0)
    allowed = ids[4:8]
    scores, got = ann.search(vectors[:1], 3, allowed)
    assert set(got[0].tolist()) <= set(allowed.tolist()) and (got[0] >= 0).all()
    assert np.allclose(scores[0], np.sort(vectors[4:8] @ vectors[0])[::-1][:3], atol=2e-3)
    _, none = ann.search(vectors[:1], 3, np.array([5], np.int64))
    assert (none == -1).all()


def write_described_library(root: Path) -> list[Path]:
    from test_scale import write_library

    paths = write_library(root)
    (root / "copies").mkdir()
    copy = root / "copies" / "robin-copy.wav"  # the same bytes as birds/robin.wav
    shutil.copyfile(root / "birds" / "robin.wav", copy)
    (root / "foley").mkdir()
    door = write_tone(root / "foley" / "door.wav", 3.0, 22050, freq=700.0, seed=8)
    add_bext(door, "a wooden door creaks open slowly", "earshot tests")
    rain = write_tone(root / "foley" / "tin.wav", 2.5, 22050, freq=1800.0, seed=9)
    add_bext(rain, "rain drumming on a tin roof", "earshot tests")
    return [*paths, copy, door, rain]


def test_a_dead_index_process_folder_is_swept(tmp_path):
    import subprocess
    import sys

    from earshot.scale.shard_index import FOLDER_PREFIX, sweep_dead_folders

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    dead = tmp_path / f"{FOLDER_PREFIX}{gone}-abc"
    alive = tmp_path / f"{FOLDER_PREFIX}{os.getppid()}-abc"
    for f in (dead, alive):
        (f / "x").mkdir(parents=True)
    sweep_dead_folders(str(tmp_path))
    assert not dead.exists() and alive.exists()


def test_a_bucket_folder_filter_is_its_components():
    from earshot.errors import SearchError
    from earshot.filters import folder_form

    assert folder_form("s3://rec/lib/birds/") == (None, "rec/lib/birds")
    with pytest.raises(SearchError, match="names no bucket"):
        folder_form("s3://")


class _VectorModel:  # what a search by vector asks of a model
    model_id = "synthetic"


def test_vector_searches_over_synthetic_shards_are_the_merged_catalogues(tmp_path):
    """Fast: random vectors in three shards (no model, no audio), two of them copies, over two
    indexes against `merge-shards` of the same shards: filters, spans, paging, sorts."""
    from earshot.scale.merge import merge_shards
    from earshot.scale.search import ShardSearcher

    rng = np.random.default_rng(7)
    loc = Location(tmp_path / "s")
    manifest = sh.Manifest("synthetic", 16, {}, [], 31)
    vectors = {f: rng.standard_normal((1 + f % 4, 16)).astype(np.float32) for f in range(1, 31)}
    for v in vectors.values():
        v /= np.linalg.norm(v, axis=1, keepdims=True)
    vectors[12] = vectors[2]  # file 12 is a copy of file 2: the same bytes, the same vectors
    fid = 1
    for s in range(3):
        files, rows = [], []
        for _ in range(10):
            v = vectors[fid]
            n = len(v)
            digest = "h2" if fid == 12 else f"h{fid}"
            folder = ("a", "b/c", "d")[fid % 3]
            fmt = ("WAV", "FLAC")[fid % 2]
            files.append(
                sh.ShardFile(fid, f"/lib/{folder}/f{fid}.x", f"{fid}:{fid}", digest,
                             2.0 * n, 16000 * (1 + fid % 2), 1 + fid % 2, fmt, "PCM_16")
            )  # fmt: skip
            rows += [(fid, w, 2.0 * w, 2.0 * w + 2, v[w], None) for w in range(n)]
            fid += 1
        name = f"shard-{s}.parquet"
        loc.write_bytes(name, sh.encode_shard("synthetic", 16, files, rows))
        manifest.shards[name] = {"files": 10}
    sh.save_manifest(loc, manifest)
    merge_shards(loc.uri, tmp_path / "m.sqlite")
    with Catalogue(tmp_path / "m.sqlite", readonly=True) as cat:
        searcher = Searcher(cat, _VectorModel())
        shards = ShardSearcher(loc.uri, _VectorModel(), address=None, actors=2)
        try:
            for q in rng.standard_normal((4, 16)).astype(np.float32):
                q /= np.linalg.norm(q)
                for k, filters, page in (
                    (5, None, {}),
                    (3, None, {"spans": 3, "offset": 2}),
                    (4, Filters(folder_parts=("c",)), {"sort": "name"}),
                    (6, Filters(min_duration=4.0, formats=("flac",)), {"sort": "duration"}),
                    (3, Filters(channels=(2, 2), sample_rate=(32000, None)), {"spans": 2}),
                ):
                    want = view(searcher.search_vector(q, k, filters, **page))
                    assert want["hits"]
                    assert view(shards.search_vector(q, k, filters, **page)) == want
            # An empty answer says the same filter is why, over shards as over the catalogue.
            for filters in (Filters(formats=("mp3",), folder_parts=("c",)),
                            Filters(min_duration=19.0, formats=("flac",))):  # fmt: skip
                empty = shards.search_vector(q, 3, filters)
                assert empty == [] and searcher.search_vector(q, 3, filters) == []
                said = shards.why_empty(empty, filters)
                assert said and said == searcher.why_empty(empty, filters), said
            copies = [h for h in shards.search_vector(vectors[2][0], 30) if h.also_at]
            assert [h.also_at for h in copies] == [("/lib/a/f12.x",)]
        finally:
            shards.close()


# Each test below compares over one library indexed twice (~30 s on 2 busy cores): slow.
slow = pytest.mark.slow


@pytest.fixture(scope="module")
def library(tmp_path_factory, tiny_text_dir):
    """A tagging model, the library, its catalogue (earshot index, batch 1) and its shards
    (the shard writer, batch 1; files in listing order, in three shards)."""
    from earshot.testing.models import tiny_model
    from earshot.testing.scale import catalogue_and_shards
    from test_tags import tagged as tagging

    base = tmp_path_factory.mktemp("scale-search")
    save_model(tiny_model(text_model=str(tiny_text_dir), text_dim=16), base / "model")
    model = tagging(load_model(base / "model"))
    paths = write_described_library(base / "lib")
    db, loc = catalogue_and_shards(base, model, base / "lib", cuts=(4, 8))
    return base, model, paths, db, loc


@pytest.fixture(scope="module")
def searchers(library):
    """The catalogue's Searcher and ShardSearchers over one and over two indexes."""
    from earshot.scale.search import ShardSearcher

    _base, model, _paths, db, loc = library
    cat = Catalogue(db, readonly=True)
    shards = {n: ShardSearcher(loc.uri, model, address=None, actors=n) for n in (1, 2)}
    yield Searcher(cat, model), shards
    for s in shards.values():
        s.close()
    cat.close()


def view(results) -> dict:
    """Everything a search answers (as `earshot search --json` prints it) but the ids, which
    are a catalogue's or the shards'."""
    from earshot.commands.search import _summary

    hits = [{k: v for k, v in h.as_dict().items() if k not in IDS} for h in results]
    return {"hits": hits, **_summary(results, None)}


TEXT_SEARCHES = [
    ("a high tone", {}),
    ("noise", {"k": 3}),
    ("a low hum", {"k": 1}),
    ("a high tone", {"k": 4, "spans": 3}),
    ("noise", {"k": 2, "offset": 2}),
    ("tone", {"k": 5, "sort": "name"}),
    ("tone", {"k": 5, "sort": "duration", "offset": 1}),
    ("tone", {"k": 5, "sort": "date"}),
    ("a high tone", {"filters": Filters(folder_parts=("street",))}),
    ("a high tone", {"filters": Filters(min_duration=3.0, max_duration=6.5)}),
    ("noise", {"filters": Filters(formats=("flac",))}),
    ("noise", {"filters": Filters(tags=("Tone",))}),
    ("noise", {"filters": Filters(tags=("tone",), tag_min=0.9)}),
    ("tone sr:16000..22050", {}),
    ("tone ch:2", {}),
    ("tone dur:>3", {}),
    ("tone ext:wav -hum", {}),
    ("tone folder:birds", {}),
    ('tone "door"', {}),
    ("tone tag:Noise", {}),
    ("a high tone, no noise", {}),
    ("tag:Tone", {}),
    ('"wooden door"', {}),
]


@slow
def test_text_searches_over_shards_are_the_catalogues(searchers):
    searcher, shards = searchers
    for text, kw in TEXT_SEARCHES:
        kw = {"hybrid": False, **kw}
        k, filters = kw.pop("k", 10), kw.pop("filters", None)
        want = view(searcher.search_text(text, k, filters, **kw))
        assert want["hits"] or text == "tone folder:birds"
        for n, s in shards.items():
            assert view(s.search_text(text, k, filters, **kw)) == want, (text, kw, n)


@slow
def test_each_search_kind_over_shards_is_the_catalogues(searchers, library):
    _base, _model, paths, _db, _loc = library
    searcher, shards = searchers
    robin = str(paths[0])

    def seg_of(cat, path, nth):
        return cat.file_segments(cat.file_id_for_path(path))[nth].segment_id

    wren = str(paths[2])
    market = str(paths[6])
    for n, s in shards.items():
        cases = [
            (lambda x: x.search_tags(("Tone",), 5)),
            (lambda x: x.search_tags(("Noise", "Loud"), 5, spans=2)),
            (lambda x: x.search_tags(("Tone",), 3, Filters(folder_parts=("birds",)), sort="name")),
            (lambda x: x.search_like(robin, 5)),
            (lambda x: x.search_like(market, 4, start=6.0, end=12.0, spans=2)),
            (lambda x: x.search_like(wren, 5, filters=Filters(formats=("wav",)))),
            (lambda x: x.search_like_segment(seg_of(x.cat, market, 1), 5)),
            (lambda x: x.search_vector(x.sample()[3], 6, spans=2)),
        ]
        for i, case in enumerate(cases):
            assert view(case(s)) == view(case(searcher)), (n, i)
    # Copies are one hit, grouped across shards, the first-indexed one shown.
    hits = shards[2].search_like(wren, 10)
    robins = [h for h in hits if h.path.endswith("robin.wav") or "copy" in h.path]
    assert len(robins) == 1 and robins[0].also_at
    # Embedded metadata reaches the hits; descriptions make hybrid search the default.
    assert shards[2].cat.has_described_files()
    door = shards[2].search_text('"wooden door"', 3)
    assert door[0].meta["description"] == "a wooden door creaks open slowly"


@slow
def test_hybrid_search_over_one_index_is_the_catalogues(searchers):
    """Keyword scores (BM25) are each index's own; over one index they are the catalogue's,
    so hybrid search (the default, with described files) gives the catalogue's hits."""
    searcher, shards = searchers
    for text in ("a door creaks", "rain on a roof", "noise", "tone -robin"):
        for kw in ({}, {"k": 3, "spans": 2}, {"k": 2, "offset": 1}):
            want = view(searcher.search_text(text, kw.get("k", 10), **kw_rest(kw)))
            assert view(shards[1].search_text(text, kw.get("k", 10), **kw_rest(kw))) == want
        got = shards[2].search_text(text, 5)  # over two: each index's BM25, fused on the driver
        assert got and all(h.band for h in got)
    assert shards[2].search_text("a door creaks", 3)[0].path.endswith("door.wav")


@slow
def test_path_word_counts_over_shards_are_the_catalogues(searchers):
    """What turns hybrid on by default without descriptions (a query word in some names),
    summed over the indexes: the catalogue's counts."""
    searcher, shards = searchers
    for text in ("a wooden door", "robins singing", "noise and a tone", "nothing here"):
        want = searcher.cat.path_word_counts(text)
        for n in (1, 2):
            assert shards[n].cat.path_word_counts(text) == want, (n, text)
            assert shards[n].cat.ok_file_count() == searcher.cat.ok_file_count()
    assert searcher.cat.path_word_counts("robins")["robins"] >= 1  # robin.wav, by its stem


def kw_rest(kw: dict) -> dict:
    return {k: v for k, v in kw.items() if k != "k"}


@slow
def test_bad_searches_over_shards_say_what_is_wrong(searchers):
    from earshot.errors import SearchError

    _searcher, shards = searchers
    s = shards[2]
    with pytest.raises(SearchError, match="no sound tag named 'Dgo'.*'Dog'"):
        s.search_text("tone", 3, Filters(tags=("Dgo",)))
    with pytest.raises(SearchError, match="empty query"):
        s.search_text("  ", 3)
    with pytest.raises(SearchError, match="only filters"):
        s.search_text("dur:>3", 3)
    with pytest.raises(SearchError, match="no segment"):
        s.search_like_segment(12345, 3)
    assert s.search_text("tone", 3, Filters(folder_parts=("nowhere",))) == []


@slow
def test_the_cli_over_shards_prints_the_catalogues_answer(library, capsys):
    base, _model, paths, db, loc = library
    model = ["--model", str(base / "model"), "--json"]
    runs = [
        ["tone", "-k", "4", "--folder", "birds", "--spans", "2"],
        ["noise", "--format", "flac", "--min-duration", "1"],
        ["tone ch:1 dur:<5", "-k", "3", "--all"],
        ["--like", str(paths[2]), "-k", "3"],
    ]
    for argv in runs:
        assert main(["search", *argv, "--db", str(db), *model]) == 0
        want = json.loads(capsys.readouterr().out)
        assert main(["search", *argv, "--shards", loc.uri, "--ray", "none", *model]) == 0
        got = json.loads(capsys.readouterr().out)
        for doc in (want, got):
            for h in doc["hits"]:
                for key in IDS:
                    h.pop(key)
        assert got == want, argv


# --- the page and API over shards --------------------------------------------------------


@pytest.fixture(scope="module")
def clients(library, searchers):
    from fastapi.testclient import TestClient

    from earshot.scale.serve import create_shard_app
    from earshot.serve.app import Settings, create_app

    _base, model, _paths, _db, _loc = library
    searcher, shards = searchers
    settings = Settings()
    mine = create_app(searcher.cat, model, settings)
    theirs = create_shard_app(shards[2], settings, model=model)
    yield (
        TestClient(mine, base_url="http://127.0.0.1"),
        TestClient(theirs, base_url="http://127.0.0.1"),
    )
    theirs.state.service.copies.close()


def _ids_out(doc):
    if isinstance(doc, dict):
        return {
            k: _ids_out(v)
            for k, v in doc.items()
            if k not in (*IDS, "took_ms", "id", "recorded_at")
        }
    if isinstance(doc, list):
        return [_ids_out(v) for v in doc]
    return doc


@slow
def test_the_api_over_shards_answers_as_over_the_catalogue(clients, library):
    _base, _model, paths, _db, _loc = library
    cat_client, shard_client = clients
    gets = [
        ("/api/search", {"q": "a high tone", "hybrid": "false"}),
        ("/api/search", {"q": "noise", "k": 3, "folder": "street", "spans": 2, "hybrid": "false"}),
        ("/api/search", {"q": "tone dur:>2", "k": 4, "sort": "name", "hybrid": "false"}),
        ("/api/search", {"q": "", "tag": "Tone", "k": 4}),
        ("/api/search", {"q": "tone", "format": "flac", "show_weak": "false", "hybrid": "false"}),
        ("/api/tags", {}),
        ("/api/folders", {}),
        ("/api/facets", {}),
        ("/api/skipped", {}),
        ("/api/examples", {}),
    ]
    for url, params in gets:
        want = cat_client.get(url, params=params)
        got = shard_client.get(url, params=params)
        assert got.status_code == want.status_code == 200, (url, got.text)
        assert _ids_out(got.json()) == _ids_out(want.json()), url
    page = shard_client.get("/")
    assert page.status_code == 200 and "<html" in page.text.lower()
    assert shard_client.get("/api/stats").json()["catalogue"]["shards"] == 3

    def file_id(client, path):
        hits = client.get("/api/search", params={"q": "tone", "k": 20, "hybrid": "false"}).json()
        return next(h["file_id"] for h in hits["hits"] if h["path"] == path)

    market = str(paths[6])
    mine, theirs = file_id(cat_client, market), file_id(shard_client, market)
    for suffix, params, headers in (
        ("files/{}", {}, {}),
        ("similar/{}", {"k": 4}, {}),
        ("peaks/{}", {"n": 64}, {}),
    ):
        want = cat_client.get("/api/" + suffix.format(mine), params=params, headers=headers)
        got = shard_client.get("/api/" + suffix.format(theirs), params=params, headers=headers)
        assert got.status_code == want.status_code == 200, (suffix, got.text)
        assert _ids_out(got.json()) == _ids_out(want.json()), suffix
    ranged = {"Range": "bytes=100-199"}
    want = cat_client.get(f"/api/audio/{mine}", headers=ranged)
    got = shard_client.get(f"/api/audio/{theirs}", headers=ranged)
    assert got.status_code == want.status_code == 206
    assert (
        got.content == want.content
        and got.headers["content-range"] == want.headers["content-range"]
    )
    clip = {"start": 1.0, "end": 2.5}
    want = cat_client.get(f"/api/clip/{mine}", params=clip)
    got = shard_client.get(f"/api/clip/{theirs}", params=clip)
    assert got.status_code == 200 and got.content == want.content
    upload = {"k": 4, "spans": 2, "format": "wav"}
    sound = {"file": ("wren.wav", Path(paths[2]).read_bytes(), "audio/wav")}
    want = cat_client.post("/api/search/like", params=upload, files=sound)
    got = shard_client.post("/api/search/like", params=upload, files=sound)
    assert got.status_code == want.status_code == 200, got.text
    assert _ids_out(got.json()) == _ids_out(want.json()) and got.json()["hits"]
    assert shard_client.get("/api/files/999999999").status_code == 404
    bad = shard_client.get("/api/search", params={"q": "tone", "tag": "Dgo"})
    assert bad.status_code == 400 and "no sound tag named" in bad.json()["error"]
