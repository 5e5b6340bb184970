"""Skipped files stay visible (issue #19): `earshot skipped`, the page's count, `/api/skipped`.

A file the catalogue could not index is listed, with its reason, across runs, until it is
indexed (fixed) or removed (gone from disk); a name that is not UTF-8 cannot be stored, so only
the `earshot index` run that finds it lists it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from earshot.cli import main
from earshot.index.store import Catalogue
from earshot.model.io import load_model
from earshot.testing.audio import write_tone, write_truncated

HTML = b"<!DOCTYPE html><html><body>404 Not Found</body></html>"


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir):
    return tiny_model_dir


@pytest.fixture
def library(tmp_path):
    root = tmp_path / "lib"
    root.mkdir()
    write_tone(root / "good.wav", 1.0, 16000)
    (root / "page.wav").write_bytes(HTML)
    write_truncated(
        write_tone(tmp_path / "whole.wav", 2.0, 16000, freq=600.0), root / "cut.wav", 0.5
    )
    return root


def index(root, db, model_dir, capsys) -> dict:
    assert main(["index", str(root), "--db", str(db), "--model", str(model_dir), "--json",
                 "--workers", "1"]) == 0  # fmt: skip
    return json.loads(capsys.readouterr().out)


def skipped(db, capsys, *flags) -> tuple[int, str]:
    code = main(["skipped", "--db", str(db), *flags])
    return code, capsys.readouterr().out


def listed(db, capsys) -> dict[str, str]:
    code, out = skipped(db, capsys, "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["count"] == len(doc["skipped"]) and doc["db"] == str(db)
    return {item["path"]: item["reason"] for item in doc["skipped"]}


def test_skipped_lists_every_file_across_runs_until_indexed_or_removed(
    tmp_path, library, model_dir, capsys
):
    db = tmp_path / "c.sqlite"
    first = index(library, db, model_dir, capsys)
    assert first["added"] == 1 and len(first["skipped"]) == 2
    page, cut = str(library / "page.wav"), str(library / "cut.wav")
    reasons = listed(db, capsys)
    assert set(reasons) == {page, cut}
    assert "not an audio file" in reasons[page] and "truncated" in reasons[cut]

    code, out = skipped(db, capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"{db}: 2 files could not be indexed"
    assert lines[1:] == [f"  {cut}: {reasons[cut]}", f"  {page}: {reasons[page]}"]

    # A second run retries nothing unchanged and lists nothing itself; the catalogue still does.
    again = index(library, db, model_dir, capsys)
    assert again["skipped"] == [] and again["unchanged"] == 3
    assert set(listed(db, capsys)) == {page, cut}

    write_tone(library / "page.wav", 1.0, 16000, freq=900.0)  # fixed: indexed, no longer listed
    assert index(library, db, model_dir, capsys)["added"] == 1
    assert set(listed(db, capsys)) == {cut}

    os.unlink(cut)  # gone: removed with the next run over its folder
    assert index(library, db, model_dir, capsys)["removed"] == 1
    assert listed(db, capsys) == {}
    code, out = skipped(db, capsys)
    assert code == 0 and out == f"{db}: no skipped files (every file found so far was indexed)\n"


def test_skipped_json_fields(tmp_path, library, model_dir, capsys):
    db = tmp_path / "c.sqlite"
    index(library, db, model_dir, capsys)
    code, out = skipped(db, capsys, "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["count"] == 2
    page = next(item for item in doc["skipped"] if item["path"].endswith("page.wav"))
    st = (library / "page.wav").stat()
    assert page["size"] == st.st_size and page["mtime"] == pytest.approx(st.st_mtime, abs=1e-6)
    assert isinstance(page["id"], int) and page["recorded_at"] >= st.st_mtime - 1
    assert set(page) == {"id", "path", "reason", "size", "mtime", "recorded_at"}


def test_a_pipe_and_broken_links_are_listed_until_they_are_gone(
    tmp_path, library, model_dir, capsys
):
    db = tmp_path / "c.sqlite"
    os.mkfifo(library / "pipe.wav")
    (library / "zero.wav").symlink_to("/dev/zero")
    (library / "dangling.flac").symlink_to(tmp_path / "nothing.flac")
    (library / "loop_a.wav").symlink_to(library / "loop_b.wav")
    (library / "loop_b.wav").symlink_to(library / "loop_a.wav")
    first = index(library, db, model_dir, capsys)
    assert len(first["skipped"]) == 7
    reasons = listed(db, capsys)
    assert "not a regular file" in reasons[str(library / "pipe.wav")]
    assert "not a regular file" in reasons[str(library / "zero.wav")]
    assert "symbolic link to nothing" in reasons[str(library / "dangling.flac")]
    assert "symbolic link to nothing" in reasons[str(library / "loop_a.wav")]
    again = index(library, db, model_dir, capsys)  # unchanged: neither listed again nor lost
    assert again["skipped"] == [] and again["unchanged"] == 8 and len(listed(db, capsys)) == 7
    for name in ("pipe.wav", "zero.wav", "dangling.flac", "loop_a.wav", "loop_b.wav"):
        os.unlink(library / name)
    assert index(library, db, model_dir, capsys)["removed"] == 5
    assert len(listed(db, capsys)) == 2


def test_a_name_that_is_not_utf8_is_listed_by_the_run_only(tmp_path, library, model_dir, capsys):
    db = tmp_path / "c.sqlite"
    bad = os.path.join(os.fsencode(library), b"caf\xe9.wav")
    shutil.copy(library / "good.wav", bad)
    run = index(library, db, model_dir, capsys)
    assert str(library / "caf\\xe9.wav") in {item["path"] for item in run["skipped"]}
    assert set(listed(db, capsys)) == {str(library / "page.wav"), str(library / "cut.wav")}


def test_skipped_needs_a_catalogue_and_creates_none(tmp_path, capsys):
    db = tmp_path / "none.sqlite"
    assert main(["skipped", "--db", str(db)]) == 1
    assert "no catalogue at" in capsys.readouterr().err
    assert not db.exists()


def test_skipped_prints_control_characters_in_names_escaped(tmp_path, model_dir, capsys):
    root = tmp_path / "lib"
    root.mkdir()
    (root / "evil\x1b[2J.wav").write_bytes(HTML)
    db = tmp_path / "c.sqlite"
    index(root, db, model_dir, capsys)
    code, out = skipped(db, capsys)
    assert code == 0 and "\x1b" not in out and "evil\\x1b[2J.wav" in out


# --- the server ---------------------------------------------------------------------------------


@pytest.fixture
def client(tmp_path, library, model_dir, capsys):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from earshot.serve import Settings, create_app

    db = tmp_path / "c.sqlite"
    index(library, db, model_dir, capsys)
    cat = Catalogue(db, readonly=True)
    app = create_app(cat, load_model(model_dir), Settings())
    with TestClient(app, base_url="http://127.0.0.1:8000") as c:
        yield c
    cat.close()


def test_api_stats_count_and_the_skipped_list(client, library):
    assert client.get("/api/stats").json()["catalogue"]["files_skipped"] == 2
    doc = client.get("/api/skipped").json()
    assert doc["count"] == 2 and (doc["limit"], doc["offset"]) == (1000, 0)
    assert [s["path"] for s in doc["skipped"]] == [
        str(library / "cut.wav"),
        str(library / "page.wav"),
    ]
    assert "not an audio file" in doc["skipped"][1]["reason"]
    # A skipped file's id is a file the API knows, with its reason.
    info = client.get(f"/api/files/{doc['skipped'][1]['id']}").json()
    assert info["status"] == "skipped" and info["skip_reason"] == doc["skipped"][1]["reason"]
    page = client.get("/api/skipped", params={"limit": 1, "offset": 1}).json()
    assert page["count"] == 2 and [s["path"] for s in page["skipped"]] == [
        str(library / "page.wav")
    ]
    assert client.get("/api/skipped", params={"offset": 5}).json()["skipped"] == []
    for bad in ({"limit": 0}, {"limit": 10**6}, {"offset": -1}, {"offset": 2**70}, {"limit": "x"}):
        r = client.get("/api/skipped", params=bad)
        assert r.status_code in (400, 422) and "error" in r.json(), bad
    assert "/api/skipped" in client.get("/openapi.json").json()["paths"]


def test_api_skipped_needs_the_token_when_there_is_one(tmp_path, library, model_dir, capsys):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from earshot.serve import Settings, create_app

    db = tmp_path / "c.sqlite"
    index(library, db, model_dir, capsys)
    with Catalogue(db, readonly=True) as cat:
        app = create_app(cat, load_model(model_dir), Settings(token="t0ken-9"))
        client = TestClient(app, base_url="http://127.0.0.1:8000")
        assert client.get("/api/skipped").status_code == 401
        r = client.get("/api/skipped", headers={"Authorization": "Bearer t0ken-9"})
        assert r.status_code == 200 and r.json()["count"] == 2


def _browser():
    """A headless Chromium, or a skip saying what is missing (as tests/test_serve_browser.py)."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.service import Service

    binaries = {}
    for name, package in (("chromium", "chromium"), ("chromedriver", "chromium-driver")):
        binaries[name] = shutil.which(name) or shutil.which(f"/usr/bin/{name}")
        if not binaries[name]:
            pytest.skip(f"{name} not found: install the Debian package '{package}'")
    options = webdriver.ChromeOptions()
    options.binary_location = binaries["chromium"]
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(binaries["chromedriver"]), options=options)


def test_the_page_shows_the_skipped_count_with_a_link_to_the_list(
    tmp_path, library, model_dir, capsys
):
    pytest.importorskip("fastapi")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from earshot.serve import Settings, create_app
    from earshot.testing.serve import ServerThread

    driver = _browser()
    db = tmp_path / "c.sqlite"
    index(library, db, model_dir, capsys)
    cat = Catalogue(db, readonly=True)
    try:
        with ServerThread(create_app(cat, load_model(model_dir), Settings())) as server:
            driver.get(server.url + "/")
            link = WebDriverWait(driver, 20).until(
                lambda d: d.find_elements(By.ID, "skipped-count"), message="the skipped count"
            )[0]
            assert link.text == "2 files could not be indexed"
            summary = driver.find_element(By.ID, "catalogue-summary").text
            assert summary.startswith("Searching 1 recording") and summary.endswith("indexed.")
            link.click()
            WebDriverWait(driver, 20).until(lambda d: "/api/skipped" in d.current_url)
            assert '"count":2' in driver.find_element(By.TAG_NAME, "body").text.replace(" ", "")
    finally:
        driver.quit()
        cat.close()


def test_the_page_shows_no_skipped_count_when_there_is_none(tmp_path, model_dir, capsys):
    pytest.importorskip("fastapi")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from earshot.serve import Settings, create_app
    from earshot.testing.serve import ServerThread

    driver = _browser()
    root = tmp_path / "lib"
    root.mkdir()
    write_tone(root / "good.wav", 1.0, 16000)
    db = tmp_path / "c.sqlite"
    index(root, db, model_dir, capsys)
    cat = Catalogue(db, readonly=True)
    try:
        with ServerThread(create_app(cat, load_model(model_dir), Settings())) as server:
            driver.get(server.url + "/")
            summary = WebDriverWait(driver, 20).until(
                lambda d: d.find_element(By.ID, "catalogue-summary").text, message="the summary"
            )
            assert summary.startswith("Searching 1 recording")
            assert not driver.find_elements(By.ID, "skipped-count")
    finally:
        driver.quit()
        cat.close()


def test_skipped_is_a_documented_command():
    from earshot.cli import build_parser

    parser = build_parser()
    choices = parser._subparsers._group_actions[0].choices
    text = choices["skipped"].format_help()
    assert "not" in text and "UTF-8" in text and "--json" in text and "--db" in text
    assert Path(__file__).parents[1].joinpath("README.md").read_text().count("earshot skipped") >= 1
