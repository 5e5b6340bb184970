"""The web page's server side, without a browser: its ES modules are served as JavaScript under
the CSP, and the routes only the page uses (example searches, format menus) answer from the
catalogue."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient

from earshot.index.store import Catalogue
from earshot.model.io import load_model
from earshot.serve import Settings, create_app
from earshot.serve.app import STATIC_DIR, STATIC_FILES
from earshot.serve.examples import examples, name_words
from earshot.testing.serve import build_library

BASE = "http://127.0.0.1:8000"
IMPORT = re.compile(r"""^import\s[^;]*?from\s+"\./([\w-]+\.js)";""", re.M | re.S)


@pytest.fixture(scope="module")
def client(tmp_path_factory, tiny_text_dir):
    lib = build_library(tmp_path_factory.mktemp("serve-page"), tiny_text_dir)
    cat = Catalogue(lib.db, readonly=True)
    with TestClient(create_app(cat, load_model(lib.model_dir), Settings()), base_url=BASE) as c:
        yield c
    cat.close()


def test_every_module_the_page_imports_is_served_as_javascript(client):
    page = client.get("/").text
    entry = re.findall(r'<script type="module" src="/static/([\w-]+\.js)"></script>', page)
    assert entry == ["app.js"]
    seen, todo = set(), list(entry)
    while todo:  # follow the imports from app.js: every module the browser will ask for
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        r = client.get(f"/static/{name}")
        # Browsers refuse a module script whose type is not JavaScript.
        assert r.status_code == 200, name
        assert r.headers["content-type"] == "text/javascript; charset=utf-8", name
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        todo += IMPORT.findall(r.text)
    assert {"api.js", "search.js", "results.js", "player.js", "filters.js", "util.js"} <= seen
    # Nothing in static/ that the page does not use, and only fixed names are served.
    on_disk = {p.name for p in STATIC_DIR.glob("*.js")}
    assert seen | {"docs.js"} == on_disk == {n for n in STATIC_FILES if n.endswith(".js")}
    assert client.get("/static/index.html").status_code == 404


def test_examples_come_from_the_catalogue(client):
    body = client.get("/api/examples").json()
    # The tiny library's files: robin_song, owl, traffic, long_hum, market, wren.
    assert body["source"] == "names"
    assert len(body["examples"]) == 6
    assert set(body["examples"]) <= {
        "robin",
        "song",
        "owl",
        "traffic",
        "long",
        "hum",
        "market",
        "wren",
    }


def test_examples_prefer_the_models_tags_then_the_files_metadata():
    menu = [("Dog", 9), ("Rain", 5), ("Speech", 2)]
    assert examples(menu, ["x.wav"]) == {"source": "tags", "examples": ["dog", "rain", "speech"]}
    assert examples([], []) == {"source": "none", "examples": []}
    records = [
        {"keywords": ["Door", "creak"], "category": "DOORS"},
        {"keywords": ["door", "hinge"], "ucs": {"category": "DOOR", "subcategory": "Wood"}},
    ]
    got = examples([], ["rain_on_tin.wav"], records, n=6)
    assert got["source"] == "metadata"
    assert got["examples"][0] == "door"  # in both files
    assert set(got["examples"]) == {"door", "creak", "doors", "hinge", "rain", "tin"}


def test_name_words_split_library_names():
    names = [
        "DOORWood_Creak Slam_01.wav",
        "door_wood_close-02.wav",
        "RainOnTin roof.flac",
        "mix_final_take3.wav",
    ]
    words = name_words(names, 4)
    assert words[:2] == ["door", "wood"]  # in two files each
    assert set(words[2:]) <= {"creak", "slam", "close", "rain", "tin", "roof"}
    assert "final" not in name_words(names, 20) and "take" not in name_words(names, 20)


def test_facets_count_formats_rates_and_channels(client):
    body = client.get("/api/facets").json()
    formats = {f["value"]: f["files"] for f in body["formats"]}
    assert formats == {"wav": 4, "flac": 1, "ogg": 1}
    assert {r["value"]: r["files"] for r in body["sample_rates"]} == {
        16000: 2,
        22050: 2,
        32000: 1,
        44100: 1,
    }
    assert {c["value"]: c["files"] for c in body["channels"]} == {1: 5, 2: 1}
