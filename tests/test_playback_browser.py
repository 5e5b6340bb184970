"""Formats Chromium cannot decode (AIFF, CAF, WMA, 64-bit float WAV) play from `/api/audio` in
headless Chromium, transcoded on the fly, and seek; and the clip route downloads a span.

Needs the Debian packages `chromium` and `chromium-driver` and the `selenium` package; skipped,
saying which is missing, where they are absent (as tests/test_serve_browser.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from earshot.testing.browser import chromium_driver, skip_without_chromium

pytest.importorskip("fastapi")
skip_without_chromium()

from earshot.index.store import Catalogue  # noqa: E402
from earshot.model.io import load_model  # noqa: E402
from earshot.serve import Settings, create_app  # noqa: E402
from earshot.testing.playback import UNPLAYABLE, write_unplayable  # noqa: E402
from earshot.testing.serve import ServerThread, build_library  # noqa: E402

pytestmark = pytest.mark.slow  # a library, a server and a browser: ~15 s on 2 busy cores


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_text_dir):
    """(server, {name: file id}, [Range headers the audio route received])."""
    base = tmp_path_factory.mktemp("playback-browser")
    write_unplayable(base)
    lib = build_library(base, tiny_text_dir)
    cat = Catalogue(lib.db, readonly=True)
    ids = {Path(f["path"]).name: f["id"] for f in _files(cat)}
    app = create_app(cat, load_model(lib.model_dir), Settings())
    ranges: list[str | None] = []

    async def recording(scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/api/audio/"):
            ranges.append(dict(scope["headers"]).get(b"range", b"").decode() or None)
        await app(scope, receive, send)

    with ServerThread(recording) as running:
        yield running, ids, ranges
    cat.close()


def _files(cat) -> list[dict]:
    with cat._use("list files") as conn:
        return [{"id": i, "path": p} for i, p in conn.execute("SELECT id, path FROM files")]


@pytest.fixture(scope="module")
def browser():
    with chromium_driver() as driver:
        yield driver


# Load, check, seek to 1.5 s, play from there: what the page's player does with a hit.
PLAY_AND_SEEK = """
const [src, done] = arguments;
const a = new Audio();
a.muted = true;
const fail = (why) => done({ok: false, why, error: a.error && a.error.message,
                            state: a.readyState});
a.onerror = () => fail('error');
setTimeout(() => fail('timeout'), 20000);
a.addEventListener('canplay', () => {
  const loaded = {duration: a.duration, state: a.readyState};
  a.onseeked = () => {
    const seeked = {time: a.currentTime, state: a.readyState};
    a.play().then(() => {
      const t0 = a.currentTime;
      const tick = () => {
        if (a.currentTime > t0 + 0.1) {
          a.pause();
          done({ok: true, loaded, seeked, played: a.currentTime});
        } else setTimeout(tick, 20);
      };
      tick();
    }, (e) => fail('play: ' + e));
  };
  a.currentTime = 1.5;
}, {once: true});
a.src = src;
"""


@pytest.mark.parametrize("name", ["gull é.aiff", "tern.aif", "heron.caf", "crane.wma", "stork.wav"])
def test_formats_chromium_cannot_decode_play_and_seek(browser, served, name):
    server, ids, ranges = served
    browser.get(server.url + "/api/health")  # same origin as the audio: the page's CSP holds
    before = len(ranges)
    result = browser.execute_async_script(PLAY_AND_SEEK, f"/api/audio/{ids[name]}")
    assert result["ok"], result
    seconds = UNPLAYABLE[name][0]
    assert abs(result["loaded"]["duration"] - seconds) < 0.05 and result["loaded"]["state"] >= 2
    assert abs(result["seeked"]["time"] - 1.5) < 0.01 and result["seeked"]["state"] >= 1
    assert 1.5 < result["played"] <= seconds
    asked = ranges[before:]
    assert asked and all(r is not None and r.startswith("bytes=") for r in asked), asked


def test_a_span_downloads_from_the_page_origin(browser, served):
    """What the page's 'download span' does: fetch /api/clip and read the attachment's name."""
    server, ids, _ = served
    browser.get(server.url + "/api/health")
    result = browser.execute_async_script(
        """
        const [url, done] = arguments;
        fetch(url).then(async (r) => done({status: r.status,
            disposition: r.headers.get('content-disposition'),
            type: r.headers.get('content-type'), size: (await r.arrayBuffer()).byteLength}));
        """,
        f"/api/clip/{ids['gull é.aiff']}?start=1&end=2&format=source",
    )
    assert result["status"] == 200 and result["type"] == "audio/aiff"
    assert "filename*=UTF-8''gull%20%C3%A9_1-2.aiff" in result["disposition"]
    assert result["size"] > 48000 * 2 * 3


def test_an_aiff_hit_plays_from_the_page(browser, served):
    """The page's own player: search, press the AIFF hit's play button, hear it (muted)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    server, _, _ = served
    d = browser
    d.get(server.url + "/")
    wait = WebDriverWait(d, 20)
    wait.until(lambda d: d.execute_script("return !!window.earshot"), "the page's script")
    box = d.find_element(By.ID, "q")
    box.clear()
    box.send_keys("a gull calls")
    names_js = "return (window.earshot.state.hits || []).map(h => h.name);"
    wait.until(lambda d: "gull é.aiff" in d.execute_script(names_js), "the AIFF among the hits")
    names = d.execute_script(names_js)
    cards = d.find_elements(By.CSS_SELECTOR, "#results .hit")
    card = cards[names.index("gull é.aiff")]
    card.find_element(By.CSS_SELECTOR, ".play").click()
    state_js = (
        "const p = document.getElementById('player');"
        "return {time: p.currentTime, paused: p.paused, src: p.getAttribute('src'),"
        " error: p.error && p.error.message, state: p.readyState, duration: p.duration};"
    )
    wait.until(lambda d: d.execute_script(state_js)["time"] > 0.2, "the AIFF playing")
    state = d.execute_script(state_js)
    assert state["error"] is None and not state["paused"] and state["state"] >= 2, state
    assert abs(state["duration"] - 3.0) < 0.05
