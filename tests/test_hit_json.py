"""One JSON shape for a hit (`Hit.as_dict`): `earshot search --json`, the HTTP API and the page;
the package's light top-level names; the version written once."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import earshot
from earshot.hits import Hit

HIT_KEYS = {
    "rank", "file_id", "segment_id", "name", "folder", "path", "start", "end", "duration",
    "score", "format", "tags", "meta", "confidence", "band", "spans", "more_spans", "also_at",
    "sample_rate", "channels", "similarity", "by_name", "matched_tags",
}  # fmt: skip
ROOT = Path(__file__).resolve().parents[1]


def test_hit_as_dict():
    hit = Hit(1, "/s/rain/roof.wav", 1.23456, 3.5, 0.123456789, 7, 42, 61.23456, "WAV",
              (("Rain", 0.91234),))  # fmt: skip
    d = hit.as_dict()
    assert set(d) == HIT_KEYS and json.loads(json.dumps(d)) == d
    assert (d["folder"], d["name"], d["path"]) == ("/s/rain", "roof.wav", "/s/rain/roof.wav")
    assert (d["start"], d["end"], d["duration"], d["score"]) == (1.235, 3.5, 61.235, 0.123457)
    assert d["tags"] == [{"name": "Rain", "p": 0.912}]


def test_cli_and_http_give_the_same_hits(tmp_path, capsys, tiny_text_dir):
    from fastapi.testclient import TestClient

    from earshot.api import Index
    from earshot.cli import main
    from earshot.model.io import save_model
    from earshot.serve.app import Settings, create_app
    from earshot.testing.audio import write_noise, write_tone
    from earshot.testing.models import tiny_model

    model_dir = tmp_path / "model"
    save_model(tiny_model(text_model=str(tiny_text_dir), text_dim=16), model_dir)
    (tmp_path / "lib").mkdir()
    write_tone(tmp_path / "lib" / "tone.wav", 3.0, 16000)
    write_noise(tmp_path / "lib" / "hiss.flac", 2.0, 16000)
    db = tmp_path / "c.sqlite"
    with Index(db, model=str(model_dir)) as idx:
        idx.add(tmp_path / "lib")
        python = [h.as_dict() for h in idx.search("a steady whistle", k=5)]
        app = create_app(idx.catalogue, idx.model, Settings(allowed_hosts=None))
        with TestClient(app) as client:
            http = client.get("/api/search", params={"q": "a steady whistle", "k": 5}).json()[
                "hits"
            ]
    assert main(["search", "a steady whistle", "-k", "5", "--db", str(db), "--json",
                 "--model", str(model_dir)]) == 0  # fmt: skip
    cli = json.loads(capsys.readouterr().out)["hits"]
    # (words in no file's name: not hybrid by default, so both files are listed)
    assert len(cli) == 2 and set(cli[0]) == HIT_KEYS
    assert cli == http == python


def test_import_earshot_is_light_and_exports_lazily():
    code = (
        "import sys, earshot; heavy = [m for m in ('torch', 'numpy', 'faiss', 'fastapi') "
        "if m in sys.modules]; assert not heavy, heavy; "
        "from earshot import Hit, Filters; assert 'torch' not in sys.modules; "
        "print(sorted(earshot.__all__))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    names = set(json.loads(out.stdout.replace("'", '"')))
    assert {"Index", "load_model", "embed_file", "Hit", "Filters", "__version__"} <= names
    from earshot.embed import embed_file
    from earshot.model.io import load_model

    assert earshot.load_model is load_model and earshot.embed_file is embed_file
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        earshot.nope  # noqa: B018


def test_version_is_written_once():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    attr = project["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "earshot.__version__" and earshot.__version__.count(".") == 2
