"""`earshot serve`'s HTTP API through FastAPI's test client, over a small indexed library."""

from __future__ import annotations

import io
import os
import re
import tempfile

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient

from earshot.cli import build_parser
from earshot.filters import Filters
from earshot.index.store import Catalogue
from earshot.model.io import load_model
from earshot.search import Searcher
from earshot.serve import Settings, create_app
from earshot.testing.serve import build_library

BASE = "http://127.0.0.1:8000"


@pytest.fixture(scope="module")
def lib(tmp_path_factory, tiny_text_dir):
    return build_library(tmp_path_factory.mktemp("serve-api"), tiny_text_dir)


@pytest.fixture(scope="module")
def model(lib):
    return load_model(lib.model_dir)


@pytest.fixture(scope="module")
def app(lib, model):
    cat = Catalogue(lib.db, readonly=True)
    yield create_app(cat, model, Settings())
    cat.close()


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app, base_url=BASE) as c:
        yield c


@pytest.fixture(scope="module")
def searcher(lib, model):
    cat = Catalogue(lib.db, readonly=True)
    yield Searcher(cat, model)
    cat.close()


def file_id(client, name: str) -> int:
    hits = client.get("/api/search", params={"q": "anything", "k": 100}).json()["hits"]
    return next(h["file_id"] for h in hits if h["name"] == name)


def test_search_returns_what_the_searcher_returns(client, searcher, lib):
    r = client.get("/api/search", params={"q": "a bird sings at dawn", "k": 3})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    expected = searcher.search_text("a bird sings at dawn", 3)
    assert [h["file_id"] for h in body["hits"]] == [h.file_id for h in expected]
    assert [h["score"] for h in body["hits"]] == pytest.approx(
        [h.score for h in expected], abs=1e-4
    )
    first, hit = body["hits"][0], expected[0]
    assert first["rank"] == 1 and first["segment_id"] == hit.segment_id
    assert os.path.join(first["folder"], first["name"]) == hit.path == first["path"]
    assert (first["start"], first["end"]) == (hit.start_s, hit.end_s)
    assert first["duration"] == pytest.approx(hit.duration_s, abs=1e-3)
    assert body["query"] == {"text": "a bird sings at dawn", "k": 3, "offset": 0, "sort": "score"}
    assert body["took_ms"] >= 0


def test_search_is_hybrid_by_default_where_a_name_holds_a_query_word(client, searcher):
    # "owl" is in one name of six (owl.flac); "bird" in the folder of three (birds/); no name
    # or folder holds "cat", "purrs" or "dawn"
    cases = (
        ("an owl hooting", True),
        ("a bird sings at dawn", True),
        ("a cat purrs at dawn", False),
    )
    for q, hybrid in cases:
        body = client.get("/api/search", params={"q": q, "k": 3}).json()
        assert body["hybrid"] is hybrid, q  # the page says what its scores are
        expected = searcher.search_text(q, 3, hybrid=hybrid)
        assert [h["file_id"] for h in body["hits"]] == [h.file_id for h in expected], q
        assert [h["score"] for h in body["hits"]] == pytest.approx(
            [h.score for h in expected], abs=1e-4
        ), q


def test_search_filters(client, lib, searcher):
    birds = str(lib.root / "birds")
    r = client.get("/api/search", params={"q": "song", "k": 10, "folder": birds})
    names = {h["name"] for h in r.json()["hits"]}
    assert names == {"robin_song.wav", "owl.flac", "wren.wav"}
    assert r.json()["filters"] == {"folder": birds}
    short = client.get("/api/search", params={"q": "song", "k": 10, "max_duration": 5}).json()
    assert {h["name"] for h in short["hits"]} == {"robin_song.wav", "owl.flac", "traffic.ogg"}
    expected = searcher.search_text("song", 10, Filters(min_duration=10, max_duration=25))
    long = client.get(
        "/api/search", params={"q": "song", "k": 10, "min_duration": 10, "max_duration": 25}
    ).json()
    assert [h["file_id"] for h in long["hits"]] == [h.file_id for h in expected]
    assert {h["name"] for h in long["hits"]} == {"long_hum.wav", "wren.wav"}
    flac = client.get("/api/search", params={"q": "song", "format": "flac"}).json()
    assert [h["name"] for h in flac["hits"]] == ["owl.flac"] and flac["empty_reason"] is None
    # Nothing left: the response says which filter no file passes.
    empty = client.get("/api/search", params={"q": "song ext:mp3", "folder": birds}).json()
    why = "no file passes ext:mp3"
    assert empty["hits"] == [] and empty["empty_reason"] == why
    assert empty["message"] == f'no match for "song ext:mp3": {why}'
    fid = file_id(client, "owl.flac")
    like = client.get(f"/api/similar/{fid}", params={"q": "dur:>9999"}).json()
    assert like["hits"] == []
    assert like["empty_reason"] == "no file passes dur:>=9999"


@pytest.mark.parametrize(
    ("params", "status", "words"),
    [
        ({"q": "   "}, 400, "empty query"),
        ({}, 400, "empty query"),  # no text and no tag
        ({"q": "dog", "k": 0}, 422, "k: Input should be greater than or equal to 1"),
        ({"q": "dog", "k": 101}, 422, "k: Input should be less than or equal to 100"),
        ({"q": "dog", "folder": "../up"}, 400, "leads out of every folder"),
        ({"q": "dog dur:<abc"}, 400, "cannot read 'dur:<abc'"),
        ({"q": "dog", "sort": "size"}, 422, "sort: String should match"),
        ({"q": "dog", "min_duration": 9, "max_duration": 2}, 400, "min_duration is larger"),
        ({"q": "dog", "max_duration": "long"}, 422, "max_duration: Input should be a valid"),
    ],
)
def test_bad_search_requests_get_clear_json_errors(client, params, status, words):
    r = client.get("/api/search", params=params)
    assert r.status_code == status
    body = r.json()
    assert body["status"] == status and words in body["error"]


def test_similar_by_segment_and_by_file(client, searcher, lib):
    fid = file_id(client, "long_hum.wav")
    segments = client.get(f"/api/files/{fid}").json()["segments"]
    third = segments[2]["segment_id"]
    r = client.get(f"/api/similar/{fid}", params={"segment": third, "k": 3})
    assert r.status_code == 200
    body = r.json()
    expected = searcher.search_like_segment(third, 3)
    assert [h["file_id"] for h in body["hits"]] == [h.file_id for h in expected]
    assert fid not in [h["file_id"] for h in body["hits"]]
    assert body["query"]["start"] == segments[2]["start"]
    assert body["query"]["name"] == "long_hum.wav"

    whole = client.get(f"/api/similar/{fid}", params={"k": 10}).json()["hits"]
    assert len(whole) == 5 and fid not in [h["file_id"] for h in whole]
    # The whole file's query is the mean of its windows, as search-by-example would embed it.
    cat = searcher.cat
    mean = np.mean([cat.segment_vector(s["segment_id"]) for s in segments], axis=0)
    expected = searcher.search_vector(mean / np.linalg.norm(mean), 10, exclude_file=fid)
    assert [h["file_id"] for h in whole] == [h.file_id for h in expected]


def test_searches_by_example_take_query_syntax_filters(client, searcher, lib, tmp_path):
    fid = file_id(client, "long_hum.wav")
    whole = client.get(f"/api/similar/{fid}", params={"k": 10}).json()["hits"]
    r = client.get(f"/api/similar/{fid}", params={"k": 10, "q": "ext:flac,ogg -traffic"})
    assert r.status_code == 200, r.text
    body = r.json()
    names = [h["path"].split("/")[-1] for h in body["hits"]]
    assert names and all(n.endswith((".flac", ".ogg")) and "traffic" not in n for n in names)
    assert names == [  # the same ranking, narrowed
        h["path"].split("/")[-1]
        for h in whole
        if h["path"].endswith((".flac", ".ogg")) and "traffic" not in h["path"]
    ]
    assert body["query"]["q"] == "ext:flac,ogg -traffic"
    assert body["filters"]["exclude"] == ["traffic"]  # what applied, as the response says
    bad = client.get(f"/api/similar/{fid}", params={"q": "a dog barks"})
    assert bad.status_code == 400 and "filters only" in bad.json()["error"]
    # an upload: refused before it is read when the query is a description
    path = lib.root / "street" / "traffic.ogg"
    upload = {"file": ("t.ogg", path.read_bytes(), "audio/ogg")}
    r = client.post("/api/search/like", params={"k": 10, "q": "ext:wav"}, files=upload)
    assert r.status_code == 200, r.text
    assert r.json()["hits"] and all(h["path"].endswith(".wav") for h in r.json()["hits"])
    r = client.post("/api/search/like", params={"q": "rain"}, files=upload)
    assert r.status_code == 400 and "'rain'" in r.json()["error"]


def test_similar_errors(client):
    fid = file_id(client, "long_hum.wav")
    other = file_id(client, "owl.flac")
    other_segment = client.get(f"/api/files/{other}").json()["segments"][0]["segment_id"]
    r = client.get(f"/api/similar/{fid}", params={"segment": other_segment})
    assert r.status_code == 404 and f"has no segment {other_segment}" in r.json()["error"]
    r = client.get("/api/similar/987654")
    assert r.status_code == 404 and r.json() == {
        "error": "no file with id 987654 in the catalogue",
        "status": 404,
    }


def test_file_metadata_and_segments(client, searcher):
    fid = file_id(client, "market.wav")
    r = client.get(f"/api/files/{fid}")
    assert r.status_code == 200
    info = r.json()
    assert info["name"] == "market.wav" and info["status"] == "ok"
    assert info["duration_s"] == pytest.approx(30.0) and info["sample_rate"] == 16000
    assert info["format"] == "WAV" and info["channels"] == 1
    expected = searcher.cat.file_segments(fid)
    assert [(s["segment_id"], s["start"], s["end"]) for s in info["segments"]] == [
        (s.segment_id, s.start_s, s.end_s) for s in expected
    ]
    assert "content_hash" not in info  # what the page needs, not the catalogue's internals


@pytest.mark.parametrize("raw", ["987654", "abc", "1.5", "-1", "0x10"])
def test_unknown_ids_are_404_json(client, raw):
    for route in ("files", "audio", "peaks", "similar"):
        r = client.get(f"/api/{route}/{raw}")
        assert r.status_code == 404, (route, raw)
        assert r.headers["content-type"] == "application/json"
        assert r.json()["status"] == 404 and "no file with id" in r.json()["error"]


def test_audio_streams_the_original_with_ranges(client, lib):
    path = lib.root / "street" / "market.wav"
    data = path.read_bytes()
    fid = file_id(client, "market.wav")
    whole = client.get(f"/api/audio/{fid}")
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["content-type"] == "audio/wav"
    assert whole.headers["accept-ranges"] == "bytes"
    part = client.get(f"/api/audio/{fid}", headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206
    assert part.content == data[1000:2000]
    assert part.headers["content-range"] == f"bytes 1000-1999/{len(data)}"
    assert part.headers["content-length"] == "1000"
    tail = client.get(f"/api/audio/{fid}", headers={"Range": "bytes=-100"})
    assert tail.status_code == 206 and tail.content == data[-100:]
    open_ended = client.get(f"/api/audio/{fid}", headers={"Range": f"bytes={len(data) - 10}-"})
    assert open_ended.status_code == 206 and open_ended.content == data[-10:]
    beyond = client.get(f"/api/audio/{fid}", headers={"Range": f"bytes={len(data) + 5}-"})
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{len(data)}"
    flac = client.get(f"/api/audio/{file_id(client, 'owl.flac')}")
    assert flac.headers["content-type"] == "audio/flac"
    assert flac.content == (lib.root / "birds" / "owl.flac").read_bytes()


def test_audio_of_a_file_gone_from_disk_says_so(client, lib, tmp_path):
    fid = file_id(client, "robin_song.wav")
    path = lib.root / "birds" / "robin_song.wav"
    moved = tmp_path / "robin.wav"
    path.rename(moved)
    try:
        r = client.get(f"/api/audio/{fid}")
        assert r.status_code == 404
        assert "no longer on disk" in r.json()["error"] and "earshot index" in r.json()["error"]
    finally:
        moved.rename(path)
    assert client.get(f"/api/audio/{fid}").status_code == 200


def test_peaks_follow_the_waveform_and_are_cached(client, app):
    fid = file_id(client, "market.wav")  # a tone at 0.5, then noise at 0.3 sd (clipped)
    cache = app.state.service.peaks
    misses = cache.misses
    r = client.get(f"/api/peaks/{fid}", params={"n": 50})
    assert r.status_code == 200
    body = r.json()
    peaks = body["peaks"]
    assert len(peaks) == 50 and body["duration"] == pytest.approx(30.0, abs=0.01)
    assert all(0.0 <= p <= 1.0 for p in peaks)
    assert all(0.45 <= p <= 0.56 for p in peaks[:24])  # the tone: amplitude 0.5 + a little noise
    assert all(p >= 0.8 for p in peaks[26:])  # noise with sd 0.3 peaks near its clip
    assert cache.misses == misses + 1
    assert client.get(f"/api/peaks/{fid}", params={"n": 50}).json() == body
    assert cache.misses == misses + 1 and cache.hits >= 1
    assert client.get(f"/api/peaks/{fid}", params={"n": 4}).status_code == 422


def test_health_stats_folders(client, lib, model):
    from earshot.model.io import model_id

    health = client.get("/api/health").json()
    assert health["status"] == "ok" and health["model_id"] == model_id(model)
    stats = client.get("/api/stats").json()
    assert stats["catalogue"]["files_ok"] == 6
    assert stats["model"]["id"] == model_id(model) and stats["model"]["untrained"] is False
    limits = {"max_k": 100, "max_upload_mb": 20.0, "max_upload_s": 60.0, "max_clip_s": 600.0}
    assert stats["server"]["limits"] == limits
    assert stats["server"]["token_required"] is False
    folders = client.get("/api/folders").json()["folders"]
    assert folders == [
        {"folder": str(lib.root / "birds"), "files": 3},
        {"folder": str(lib.root / "street"), "files": 3},
    ]


def test_search_by_example_upload(client, searcher, lib, monkeypatch, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # to see that uploads are removed
    path = lib.root / "street" / "traffic.ogg"
    expected = searcher.search_vector(searcher.embed_example(path, None, None), 3)
    r = client.post(
        "/api/search/like",
        params={"k": 3},
        files={"file": ("my traffic.ogg", path.read_bytes(), "audio/ogg")},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["query"] == {"upload": "my traffic.ogg", "duration": 4.0, "k": 3}
    assert [h["file_id"] for h in body["hits"]] == [h.file_id for h in expected]
    raw = client.post(
        "/api/search/like",
        params={"k": 3, "start": 1.0, "end": 3.0},
        content=path.read_bytes(),
        headers={"content-type": "application/octet-stream", "x-filename": "../../x.ogg"},
    )
    assert raw.status_code == 200 and raw.json()["query"]["upload"] == "x.ogg"
    span = searcher.search_vector(searcher.embed_example(path, 1.0, 3.0), 3)
    assert [h["file_id"] for h in raw.json()["hits"]] == [h.file_id for h in span]
    assert list(tmp_path.iterdir()) == []


def test_a_phone_recording_is_a_query_and_plays(client, searcher, model, monkeypatch, tmp_path):
    """An M4A example (AAC in MP4; PyAV decodes it, with no suffix on the upload's temp file),
    and an M4A in the library served as audio/mp4."""
    from earshot.testing.audio import write_av

    memo = write_av(tmp_path / "memo.m4a", 3.0, 44100, freq=600.0)
    expected = searcher.search_vector(searcher.embed_example(memo, None, None), 3)
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(uploads))
    r = client.post(
        "/api/search/like",
        params={"k": 3},
        files={"file": ("memo.m4a", memo.read_bytes(), "audio/mp4")},
    )
    assert r.status_code == 200, r.text
    assert r.json()["query"]["duration"] == pytest.approx(3.0, abs=0.1)
    assert [h["file_id"] for h in r.json()["hits"]] == [h.file_id for h in expected]
    assert list(uploads.iterdir()) == []
    # In a library: served as audio/mp4 (which browsers play), with its waveform.
    from earshot.index.build import Indexer

    with Catalogue(tmp_path / "phone.sqlite") as cat:
        Indexer(cat, model, workers=0, progress=False).run([str(memo)])
    cat = Catalogue(tmp_path / "phone.sqlite", readonly=True)
    try:
        with TestClient(create_app(cat, model, Settings()), base_url=BASE) as phone:
            fid = phone.get("/api/search", params={"q": "memo"}).json()["hits"][0]["file_id"]
            audio = phone.get(f"/api/audio/{fid}")
            assert audio.headers["content-type"] == "audio/mp4"
            assert audio.content == memo.read_bytes()
            peaks = phone.get(f"/api/peaks/{fid}")
            assert peaks.status_code == 200, peaks.text
            assert peaks.json()["duration"] == pytest.approx(3.0, abs=0.1)
            assert max(peaks.json()["peaks"]) > 0.3  # the tone, at amplitude 0.5
    finally:
        cat.close()


@pytest.mark.parametrize(
    ("kwargs", "status", "words"),
    [
        (
            {"files": {"file": ("notes.wav", b"shopping list: eggs", "audio/wav")}},
            422,
            "not a sound",
        ),
        ({"files": {"other": ("a.wav", b"RIFF", "audio/wav")}}, 400, "field named 'file'"),
        ({"content": b"", "headers": {"content-type": "audio/wav"}}, 400, "empty"),
        (
            {"content": b"--x\r\nbroken", "headers": {"content-type": "multipart/form-data"}},
            400,
            "not a valid multipart form",
        ),
    ],
)
def test_bad_uploads_get_clear_errors(client, kwargs, status, words, monkeypatch, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    r = client.post("/api/search/like", **kwargs)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]
    assert list(tmp_path.iterdir()) == []


def test_example_span_without_audio_is_a_400_naming_the_upload(client, lib):
    data = (lib.root / "birds" / "owl.flac").read_bytes()
    r = client.post(
        "/api/search/like",
        params={"start": 30, "end": 31},
        files={"file": ("owl.flac", io.BytesIO(data), "audio/flac")},
    )
    assert r.status_code == 400
    assert "holds no audio" in r.json()["error"] and "'owl.flac'" in r.json()["error"]
    assert "earshot-upload" not in r.json()["error"]


def test_unknown_routes_and_methods_are_json(client):
    r = client.get("/api/nothing-here")
    assert r.status_code == 404 and "no such page or endpoint" in r.json()["error"]
    r = client.delete("/api/search")
    assert r.status_code == 405 and r.json()["error"] == "DELETE is not allowed on /api/search"


def test_page_docs_and_schema_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="q"' in page.text and "/static/app.js" in page.text
    # Everything the page loads comes from this server: users may be offline.
    links = re.findall(r'(?:src|href)="([^"]*)"', page.text)
    assert links and all(link.startswith(("/", "#")) for link in links), links
    for name in ("app.js", "style.css", "docs.js", "favicon.svg"):
        assert client.get(f"/static/{name}").status_code == 200
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/static/docs.js" in docs.text
    schema = client.get("/openapi.json").json()
    assert {
        "/api/search",
        "/api/search/like",
        "/api/similar/{file_id}",
        "/api/files/{file_id}",
        "/api/audio/{file_id}",
        "/api/peaks/{file_id}",
        "/api/health",
        "/api/stats",
    } <= set(schema["paths"])
    # Every search route documents the filters and the page it takes, each with its words.
    narrowing = {"folder", "min_duration", "max_duration", "format", "tag", "tag_min", "offset",
                 "sort", "spans", "show_weak"}  # fmt: skip
    for path, method, own in [
        ("/api/search", "get", {"q", "k", "hybrid"}),
        ("/api/similar/{file_id}", "get", {"file_id", "segment", "k", "q"}),
        ("/api/search/like", "post", {"k", "start", "end", "q"}),
    ]:
        params = schema["paths"][path][method]["parameters"]
        assert {p["name"] for p in params} == narrowing | own, path
        assert all(p.get("description") for p in params if p["name"] in narrowing)


def test_models_load_once_at_start_up(lib, monkeypatch):
    import earshot.encoders.text as text_mod
    import earshot.model.io as model_io
    from earshot.commands.serve import build_app

    loads = {"model": 0, "text": 0}
    real_model, real_text = model_io.load_model, text_mod.load_query_text_encoder

    def count_model(*a, **kw):
        loads["model"] += 1
        return real_model(*a, **kw)

    def count_text(*a, **kw):
        loads["text"] += 1
        return real_text(*a, **kw)

    monkeypatch.setattr(model_io, "load_model", count_model)
    monkeypatch.setattr(text_mod, "load_query_text_encoder", count_text)
    monkeypatch.setattr(text_mod, "load_text_encoder", None)  # sentence-transformers: never
    # No --model: the catalogue names the folder that indexed it.
    args = build_parser().parse_args(["serve", "--db", str(lib.db)])
    app = build_app(args)
    assert loads == {"model": 1, "text": 1}
    # The lean encoder (NumPy): the server never imports sentence-transformers.
    assert type(app.state.service.model.text_encoder).__name__ == "LeanTextEncoder"
    with TestClient(app, base_url=BASE) as c:
        for q in ("rain", "a dog", "rain", "an owl hoots"):
            assert c.get("/api/search", params={"q": q}).status_code == 200
        fid = c.get("/api/search", params={"q": "x"}).json()["hits"][0]["file_id"]
        assert c.get(f"/api/similar/{fid}").status_code == 200
        data = (lib.root / "birds" / "owl.flac").read_bytes()
        assert c.post("/api/search/like", files={"file": ("o.flac", data)}).status_code == 200
    assert loads == {"model": 1, "text": 1}
    app.state.service.cat.close()


def test_create_app_takes_an_index(lib):
    import earshot

    with earshot.Index(lib.db, model=lib.model_dir) as idx:
        app = create_app(idx)
        with TestClient(app, base_url=BASE) as c:
            assert c.get("/api/search", params={"q": "hum"}).json()["hits"]


def test_concurrent_queries_share_one_encoder_call_and_get_their_own_answers():
    import threading
    import time

    from earshot.serve.batch import QueryBatcher

    sizes: list[int] = []
    gate = threading.Event()

    def run_batch(items):
        sizes.append(len(items))
        if len(sizes) == 1:
            gate.wait(10)  # hold the first batch until the others queue behind it
        return [ValueError(f"bad {i}") if i == 5 else i * 10 for i in items]

    batcher = QueryBatcher(run_batch, max_batch=4)
    results: dict[int, object] = {}

    def ask(i: int) -> None:
        try:
            results[i] = batcher.submit(i)
        except ValueError as e:
            results[i] = str(e)

    first = threading.Thread(target=ask, args=(0,))
    first.start()
    while not sizes:
        time.sleep(0.001)
    others = [threading.Thread(target=ask, args=(i,)) for i in range(1, 8)]
    for t in others:
        t.start()
    while len(batcher._pending) < 7:
        time.sleep(0.001)
    gate.set()
    for t in [first, *others]:
        t.join(10)
    assert results == {0: 0, 1: 10, 2: 20, 3: 30, 4: 40, 5: "bad 5", 6: 60, 7: 70}
    assert sizes == [1, 4, 3]  # 7 waiting, at most 4 per call
    assert (batcher.batches, batcher.items) == (3, 8)


def test_concurrent_http_searches_each_get_their_own_results(app, searcher):
    import threading

    from earshot.testing.serve import ServerThread

    texts = [f"query number {i} about {w}" for i, w in enumerate("abcdefghijkl")]
    expected = {t: [h.file_id for h in searcher.search_text(t, 3)] for t in texts}
    got: dict[str, list[int]] = {}
    with ServerThread(app) as server:
        import httpx

        def ask(text: str) -> None:
            r = httpx.get(f"{server.url}/api/search", params={"q": text, "k": 3}, timeout=30)
            got[text] = [h["file_id"] for h in r.json()["hits"]]

        threads = [threading.Thread(target=ask, args=(t,)) for t in texts]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert got == expected


# -- confidence, query syntax, spans, paging and sort (issue #18) ---------------------------


def test_a_weak_search_by_example_does_not_suggest_searching_by_example(client, monkeypatch):
    """The message's hint: a text search suggests an example; one by example, other words."""
    from earshot.hits import EXAMPLE_HINT, Results

    hints = []
    original = Results.message

    def message(self, query, *hint, reason=None):
        hints.append(hint)
        return original(self, query, *hint, reason=reason)

    fid = file_id(client, "long_hum.wav")
    monkeypatch.setattr(Results, "message", message)
    assert client.get(f"/api/similar/{fid}", params={"k": 3}).status_code == 200
    assert client.get("/api/search", params={"q": "a hum", "k": 3}).status_code == 200
    assert hints == [(EXAMPLE_HINT,), ()]


def test_search_answers_band_message_and_paging(client):
    body = client.get("/api/search", params={"q": "a bird sings", "k": 2}).json()
    assert body["band"] in ("good", "weak", "none")
    assert body["message"] is None or body["message"].startswith('no good match for "a bird')
    assert (body["offset"], body["more"]) == (0, True) and body["total_estimate"] >= 3
    for h in body["hits"]:
        assert {"confidence", "band", "spans", "more_spans", "also_at", "sample_rate",
                "channels"} <= set(h)  # fmt: skip
    page2 = client.get("/api/search", params={"q": "a bird sings", "k": 2, "offset": 2}).json()
    every = client.get("/api/search", params={"q": "a bird sings", "k": 4}).json()
    assert [h["file_id"] for h in body["hits"] + page2["hits"]] == [
        h["file_id"] for h in every["hits"]
    ]
    assert [h["rank"] for h in page2["hits"]] == [3, 4]


def test_search_sort_spans_and_syntax(client):
    by_name = client.get("/api/search", params={"q": "sound", "sort": "name"}).json()
    names = [h["name"] for h in by_name["hits"]]
    assert names == sorted(names, key=str.casefold) and by_name["query"]["sort"] == "name"
    spans = client.get("/api/search", params={"q": "sound", "spans": 3}).json()
    market = next(h for h in spans["hits"] if h["name"] == "market.wav")
    assert 1 < len(market["spans"]) <= 3
    assert market["spans"][0] == {k: market[k] for k in ("start", "end", "score")}
    wav = client.get("/api/search", params={"q": "sound ext:wav -robin folder:street"}).json()
    assert {h["name"] for h in wav["hits"]} == {"long_hum.wav", "market.wav"}
    stereo = client.get("/api/search", params={"q": "sound ch:2 sr:>=44.1k"}).json()
    assert [h["name"] for h in stereo["hits"]] == ["owl.flac"]
    assert [h["channels"] for h in stereo["hits"]] == [2]


def test_folder_filter_takes_the_forms_hits_show(client, lib):
    for folder in ("birds", "library/birds", "./birds/", str(lib.root / "birds")):
        body = client.get("/api/search", params={"q": "sound", "folder": folder}).json()
        assert {h["name"] for h in body["hits"]} == {"robin_song.wav", "owl.flac", "wren.wav"}
    home = os.path.expanduser("~")
    if str(lib.root).startswith(home + os.sep):
        short = "~" + str(lib.root / "birds")[len(home) :]
        body = client.get("/api/search", params={"q": "sound", "folder": short}).json()
        assert len(body["hits"]) == 3


def test_show_weak_false_keeps_only_good_hits_when_some_are(client, app):
    from earshot.confidence import Calibration

    searcher = app.state.service.searcher
    saved = searcher.calibrations
    scores = [h["score"] for h in client.get("/api/search", params={"q": "sound"}).json()["hits"]]
    middle = float(np.median(scores))
    # Good from the median cosine up: a mixed result list.
    searcher.calibrations = {k: Calibration(1e4, 0.0, -1e4 * middle) for k in ("text", "example")}
    try:
        every = client.get("/api/search", params={"q": "sound", "k": 10}).json()
        bands = [h["band"] for h in every["hits"]]
        trimmed = client.get(
            "/api/search", params={"q": "sound", "k": 10, "show_weak": "false"}
        ).json()
    finally:
        searcher.calibrations = saved
    assert "good" in bands
    assert [h["band"] for h in trimmed["hits"]] == ["good"] * bands.count("good")
    assert trimmed["weak_hidden"] == len(bands) - bands.count("good")


def test_semantic_negation_through_the_batched_path(client, searcher):
    body = client.get("/api/search", params={"q": "a bird sings, no traffic", "k": 3}).json()
    expected = searcher.search_text("a bird sings, no traffic", 3)
    assert searcher.plan_text("a bird sings, no traffic").negative == "traffic"
    assert [h["file_id"] for h in body["hits"]] == [h.file_id for h in expected]
    scores = [h.score for h in expected]
    assert [h["score"] for h in body["hits"]] == pytest.approx(scores, abs=1e-4)
