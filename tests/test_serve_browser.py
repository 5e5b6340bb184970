"""The web page as a person uses it, in headless Chromium: search, listen, more like this.

Needs the Debian packages `chromium` and `chromium-driver` (`.ci/run` installs them) and the
`selenium` package; skipped, saying which is missing, where they are absent. Screenshots go to
$EARSHOT_SCREENSHOTS when set, else to the test's temporary folder.
"""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path

import pytest

from earshot.testing.browser import chromium_driver, skip_without_chromium

pytest.importorskip("fastapi")
skip_without_chromium()

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.select import Select  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from earshot.index.store import Catalogue  # noqa: E402
from earshot.model.io import load_model  # noqa: E402
from earshot.serve import Settings, create_app  # noqa: E402
from earshot.testing.serve import ServerThread, build_library  # noqa: E402

WAIT_S = 20


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_text_dir):
    lib = build_library(tmp_path_factory.mktemp("serve-browser"), tiny_text_dir)
    cat = Catalogue(lib.db, readonly=True)
    app = create_app(cat, load_model(lib.model_dir), Settings())
    with ServerThread(app) as running:
        yield running
    cat.close()


@pytest.fixture(scope="module")
def browser():
    with chromium_driver() as driver:
        yield driver


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = os.environ.get("EARSHOT_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def wait(driver, condition, what: str):
    return WebDriverWait(driver, WAIT_S).until(condition, message=f"waited {WAIT_S} s for {what}")


_BAND_ORDER = {"good": 0, "weak": 1, "none": 2, None: 3}


def hits_on_screen(driver) -> list[dict]:
    return driver.execute_script(
        "return window.earshot.state.hits.map(h => ({file_id: h.file_id, name: h.name, "
        "start: h.start, end: h.end, score: h.score, band: h.band, duration: h.duration}));"
    )


def player(driver) -> dict:
    return driver.execute_script(
        "const p = document.getElementById('player');"
        "return {time: p.currentTime, paused: p.paused, src: p.getAttribute('src'),"
        " error: p.error && p.error.code};"
    )


def open_page(driver, server, width: int = 1280, height: int = 900, mobile: bool = False):
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
    )
    driver.get(server.url + "/")
    wait(driver, lambda d: d.execute_script("return !!window.earshot"), "the page's script")


def search(driver, text: str) -> list[dict]:
    box = driver.find_element(By.ID, "q")
    box.clear()
    box.send_keys(text)
    wait(
        driver,
        lambda d: (
            f"for “{text}”" in d.find_element(By.ID, "status").text
            and d.execute_script("const s = window.earshot.state; return !s.busy && !s.typing;")
        ),
        f"results for {text!r}",
    )
    return hits_on_screen(driver)


@pytest.mark.slow
def test_type_listen_and_find_more_like_it(browser, server, shots):
    d = browser
    open_page(d, server)
    assert d.switch_to.active_element.get_attribute("id") == "q"  # ready to type at once
    hits = search(d, "a bird sings")  # typed, not submitted: results arrive as you type
    cards = d.find_elements(By.CSS_SELECTOR, "#results .hit")
    assert len(cards) == len(hits) == 6
    first = cards[0]
    assert hits[0]["name"] in first.text and "match" in first.text
    assert first.find_element(By.CSS_SELECTOR, ".hit-score").text
    wait(
        d,
        lambda d: d.execute_script(
            "const c = document.querySelector('#results .hit canvas');"
            "const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            "return px.some((v, i) => i % 4 === 3 && v > 0);"
        ),
        "the first waveform to be drawn",
    )

    # Play the hit whose best window starts latest: playback must start there.
    i = max(range(len(hits)), key=lambda j: hits[j]["start"])
    start = hits[i]["start"]
    cards[i].find_element(By.CSS_SELECTOR, ".play").click()
    wait(d, lambda d: player(d)["time"] >= start + 0.3, f"playback past {start} s")
    state = player(d)
    assert not state["paused"] and state["error"] is None
    assert state["src"].startswith(f"/api/audio/{hits[i]['file_id']}")
    assert state["time"] >= start
    assert "is-active" in cards[i].get_attribute("class")
    d.save_screenshot(str(shots / "browser-results.png"))

    # More like this, on the first hit: other results, without that file.
    clicked = hits[0]
    cards[0].find_element(By.CSS_SELECTOR, ".more").click()
    wait(d, lambda d: "that sound like" in d.find_element(By.ID, "status").text, "similar")
    similar = hits_on_screen(d)
    assert similar and clicked["file_id"] not in [h["file_id"] for h in similar]
    assert [h["file_id"] for h in similar] != [h["file_id"] for h in hits]
    assert clicked["name"] in d.find_element(By.ID, "status").text
    assert "like=" in d.current_url
    d.save_screenshot(str(shots / "browser-similar.png"))

    # Back returns to the text results.
    d.find_element(By.ID, "back").click()
    wait(d, lambda d: "for “a bird sings”" in d.find_element(By.ID, "status").text, "back")
    assert [h["file_id"] for h in hits_on_screen(d)] == [h["file_id"] for h in hits]


@pytest.mark.slow
def test_keyboard_only(browser, server):
    d = browser
    open_page(d, server)
    body = d.find_element(By.TAG_NAME, "body")
    body.click()
    body.send_keys("/")
    assert d.switch_to.active_element.get_attribute("id") == "q"
    d.switch_to.active_element.send_keys("traffic noise", Keys.ENTER)
    wait(d, lambda d: "for “traffic noise”" in d.find_element(By.ID, "status").text, "results")
    hits = hits_on_screen(d)
    d.switch_to.active_element.send_keys(Keys.ARROW_DOWN)
    focused = d.switch_to.active_element
    assert "hit" in focused.get_attribute("class") and focused.get_attribute("data-index") == "0"
    focused.send_keys(Keys.ARROW_DOWN)
    focused = d.switch_to.active_element
    assert focused.get_attribute("data-index") == "1"
    focused.send_keys(Keys.SPACE)
    wait(d, lambda d: not player(d)["paused"] and player(d)["time"] > 0, "playback")
    assert player(d)["src"].startswith(f"/api/audio/{hits[1]['file_id']}")
    focused.send_keys(Keys.SPACE)
    wait(d, lambda d: player(d)["paused"], "pause")
    focused.send_keys("m")
    wait(d, lambda d: "that sound like" in d.find_element(By.ID, "status").text, "similar")
    assert hits[1]["file_id"] not in [h["file_id"] for h in hits_on_screen(d)]
    # Focus rings are visible: the focused hit gets an outline.
    outline = d.execute_script("return getComputedStyle(document.activeElement).outlineStyle;")
    assert outline != "none"


@pytest.mark.slow
def test_drop_a_sound_to_search_by_example(browser, server):
    d = browser
    open_page(d, server)
    hits = search(d, "wind")
    # What a drag from the desktop delivers: a File in a DataTransfer, dropped on the page.
    hidden_while_dragging = d.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(`/api/audio/${arguments[0]}`).then(r => r.blob()).then(blob => {"
        "  const file = new File([blob], 'my example.wav', {type: 'audio/wav'});"
        "  const dt = new DataTransfer(); dt.items.add(file);"
        "  const event = (type) => new DragEvent(type, {dataTransfer: dt, cancelable: true});"
        "  window.dispatchEvent(event('dragenter'));"
        "  done(document.getElementById('drop-overlay').hidden);"
        "  window.dispatchEvent(event('drop'));"
        "});",
        hits[0]["file_id"],
    )
    assert hidden_while_dragging is False  # the drop target showed while a file was over the page
    wait(d, lambda d: "“my example.wav”" in d.find_element(By.ID, "status").text, "upload")
    assert d.find_element(By.ID, "drop-overlay").get_attribute("hidden") is not None
    found = hits_on_screen(d)
    assert len(found) == 6
    itself = next(h for h in found if h["file_id"] == hits[0]["file_id"])
    assert itself["score"] == pytest.approx(max(h["score"] for h in found), abs=1e-3)


@pytest.mark.slow
def test_filters_and_errors_show(browser, server):
    d = browser
    open_page(d, server)
    search(d, "hum")
    Select(d.find_element(By.ID, "duration")).select_by_value("10-60")
    wait(d, lambda d: "(filtered)" in d.find_element(By.ID, "status").text, "filtered results")
    assert {h["name"] for h in hits_on_screen(d)} == {"long_hum.wav", "market.wav", "wren.wav"}
    assert "max_duration=60" in d.current_url
    folder = d.find_element(By.ID, "folder")
    folder.send_keys("no/such/folder", Keys.TAB)
    wait(d, lambda d: "No matches" in status(d), "no matches")
    # The status line names the filter that leaves nothing.
    assert "(filtered)" in status(d)
    assert status(d).endswith("No file passes folder:no/such/folder.")
    folder.clear()
    folder.send_keys(Keys.TAB)
    # A search the server refuses: the banner says why, and so does the status line.
    box = d.find_element(By.ID, "q")
    box.clear()
    box.send_keys("hum dur:<abc")
    wait(d, lambda d: "dur:<abc" in d.find_element(By.ID, "banner").text, "an error banner")
    assert "cannot read 'dur:<abc'" in d.find_element(By.ID, "banner").text
    assert status(d).startswith("Search failed: cannot read 'dur:<abc'")


@pytest.fixture(scope="module")
def tagged_server(tmp_path_factory, tiny_text_dir):
    """A catalogue indexed by test_tags' stand-in tagging model ("Tone", "Noise", ...)."""
    from earshot.index.build import Indexer
    from earshot.model.io import save_model
    from earshot.testing.models import tiny_model
    from test_tags import tagged, write_library

    base = tmp_path_factory.mktemp("serve-browser-tags")
    write_library(base / "library")
    save_model(tiny_model(text_model=str(tiny_text_dir), text_dim=16), base / "model")
    with Catalogue(base / "c.sqlite") as cat:
        model = tagged(load_model(base / "model"))
        Indexer(cat, model, workers=0, progress=False).run([str(base / "library")])
    cat = Catalogue(base / "c.sqlite", readonly=True)
    with ServerThread(create_app(cat, load_model(base / "model"), Settings())) as running:
        yield running
    cat.close()


@pytest.mark.slow
def test_tag_chips_filter_by_their_tag(browser, tagged_server, shots):
    d = browser
    open_page(d, tagged_server)
    wait(d, lambda d: d.find_element(By.ID, "tag-filter").is_displayed(), "the tag filter")
    search(d, "a sound")
    chips = d.find_elements(By.CSS_SELECTOR, "#results .hit .tag-chip")
    assert chips and all(c.is_displayed() for c in chips)
    d.save_screenshot(str(shots / "browser-tags.png"))
    noise = next(c for c in chips if c.get_attribute("data-tag") == "Noise")
    noise.click()
    wait(d, lambda d: "(filtered)" in d.find_element(By.ID, "status").text, "tag-filtered results")
    names = {h["name"] for h in hits_on_screen(d)}
    assert names == {"traffic.wav", "hiss.flac", "mixed.wav"}
    assert "tag=Noise" in d.current_url
    chosen = d.find_element(By.CSS_SELECTOR, "#tag-chosen .tag-chip")
    assert chosen.get_attribute("data-tag") == "Noise"

    # The filter box adds a second tag (all must match); with no text, the tags alone list.
    box = d.find_element(By.ID, "tag")
    box.send_keys("tone", Keys.ENTER)
    wait(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#tag-chosen .tag-chip")) == 2, "2 tags")
    wait(d, lambda d: {h["name"] for h in hits_on_screen(d)} == {"mixed.wav"}, "tone + noise")
    d.find_element(By.ID, "q").clear()
    d.find_element(By.ID, "q").send_keys(Keys.ENTER)
    wait(d, lambda d: "tagged “Noise” + “tone”" in d.find_element(By.ID, "status").text, "list")
    assert {h["name"] for h in hits_on_screen(d)} == {"mixed.wav"}

    # Clicking a chosen tag removes it.
    for _ in range(2):
        d.find_element(By.CSS_SELECTOR, "#tag-chosen .tag-chip").click()
    wait(d, lambda d: not d.find_element(By.ID, "tag-chosen").is_displayed(), "no tags left")

    # A search by words and tags (hybrid: "dog" names dog.wav) marks the tags its words name.
    search(d, "a dog")
    named = d.find_elements(By.CSS_SELECTOR, "#results .hit .tag-chip.is-named")
    assert named and {c.get_attribute("data-tag") for c in named} == {"Dog"}
    assert all("your words name it" in c.get_attribute("title") for c in named)
    others = d.find_elements(By.CSS_SELECTOR, "#results .hit .tag-chip:not(.is-named)")
    assert others and not any("your words" in c.get_attribute("title") for c in others)


@pytest.mark.slow
def test_narrow_screen_has_no_sideways_scroll(browser, server, shots):
    d = browser
    open_page(d, server, width=400, height=800, mobile=True)
    search(d, "a long recording of a market")
    d.find_elements(By.CSS_SELECTOR, "#results .hit .play")[0].click()
    wait(d, lambda d: not player(d)["paused"], "playback")
    widths = d.execute_script(
        "return [document.documentElement.scrollWidth, window.innerWidth,"
        " document.querySelector('#results .hit').getBoundingClientRect().right,"
        " document.getElementById('player').getBoundingClientRect().width];"
    )
    scroll, inner, card_right, player_width = widths
    assert scroll <= inner == 400 and card_right <= 400 and player_width > 300
    d.save_screenshot(str(shots / "browser-narrow.png"))
    d.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


# --- the page's tools: views, playback, hand-off, paging (issue #18) ---------------------------


def status(driver) -> str:
    return driver.find_element(By.ID, "status").text


def forget_settings(driver):
    """The page remembers views and playback settings in localStorage: start each test without."""
    driver.execute_script("window.localStorage.clear();")


@pytest.mark.slow
def test_examples_lengths_and_the_compact_list(browser, server, shots):
    d = browser
    open_page(d, server)
    forget_settings(d)
    # The example chips are what this catalogue knows (its names' words), not fixed strings.
    wanted = d.execute_async_script(
        "const done = arguments[0];"
        "fetch('/api/examples').then(r => r.json()).then(b => done(b.examples));"
    )
    wait(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#chips .chip")) == len(wanted), "chips")
    chips = d.find_elements(By.CSS_SELECTOR, "#chips .chip")
    assert [c.text for c in chips] == wanted and len(wanted) == 6
    d.save_screenshot(str(shots / "browser-welcome.png"))
    chips[0].click()
    wait(d, lambda d: f"for “{wanted[0]}”" in status(d), "the example's results")
    # a name holds the chip's word: a hybrid search, ranked by its fused score (~0.03); the
    # number shown is still the best part's cosine
    shown = d.find_element(By.CSS_SELECTOR, "#results .hit .hit-score")
    assert "ranked by sound and by the query's words" in shown.get_attribute("title")
    first = d.execute_script("return window.earshot.state.hits[0];")
    assert first["similarity"] != first["score"]
    assert abs(float(shown.text) - first["similarity"]) <= 0.005, (shown.text, first)

    # Lengths under a minute in seconds ("2.00 s"), never "0:02" or "0:00". (A chip's word is
    # in a name, which makes its search hybrid, listing only that file as good: these words
    # are in no name, so every file is listed.)
    search(d, "a sound of any kind")
    cards = d.find_elements(By.CSS_SELECTOR, "#results .hit")
    title = cards[0].find_element(By.CSS_SELECTOR, ".hit-score").get_attribute("title")
    assert "cosine" in title, title
    lengths = {
        c.find_element(By.CSS_SELECTOR, ".hit-name").text: c.find_element(
            By.CSS_SELECTOR, ".hit-length"
        ).text
        for c in cards
    }
    assert lengths["owl.flac"] == "2.00 s" and lengths["market.wav"] == "30.0 s"
    assert "0:0" not in d.find_element(By.ID, "results").text

    # The compact list: one line a hit, remembered across visits.
    tall = cards[0].size["height"]
    d.find_element(By.ID, "view").click()
    assert "is-compact" in d.find_element(By.ID, "results").get_attribute("class")
    short = d.find_elements(By.CSS_SELECTOR, "#results .hit")[0].size["height"]
    assert short < tall / 2
    d.save_screenshot(str(shots / "browser-compact.png"))
    d.refresh()
    wait(d, lambda d: d.execute_script("return !!window.earshot"), "the page again")
    assert "is-compact" in d.find_element(By.ID, "results").get_attribute("class")
    assert d.find_element(By.ID, "view").get_attribute("aria-pressed") == "true"
    d.find_element(By.ID, "view").click()
    assert "is-compact" not in d.find_element(By.ID, "results").get_attribute("class")
    forget_settings(d)


@pytest.mark.slow
def test_loop_volume_and_auto_preview(browser, server):
    d = browser
    open_page(d, server)
    forget_settings(d)
    hits = search(d, "a long market")
    i = next(j for j, h in enumerate(hits) if h["name"] == "market.wav")
    hit = hits[i]
    d.find_elements(By.CSS_SELECTOR, "#results .hit .play")[i].click()
    wait(d, lambda d: not player(d)["paused"], "playback")

    # Loop: past the span's end, playback goes back to its start and keeps playing.
    loop = d.find_element(By.ID, "loop")
    loop.click()
    assert loop.get_attribute("aria-pressed") == "true"
    d.execute_script(f"document.getElementById('player').currentTime = {hit['end'] - 0.3};")
    wait(
        d,
        lambda d: hit["start"] <= player(d)["time"] < hit["end"] - 0.5 and not player(d)["paused"],
        "the loop back to the span's start",
    )
    loop.click()
    assert loop.get_attribute("aria-pressed") == "false"

    # Volume: the slider sets it, and the next visit starts there.
    d.execute_script(
        "const v = document.getElementById('volume'); v.value = '0.3';"
        "v.dispatchEvent(new Event('input'));"
    )
    assert d.execute_script("return document.getElementById('player').volume") == pytest.approx(0.3)
    d.refresh()
    wait(d, lambda d: d.execute_script("return !!window.earshot"), "the page again")
    assert d.execute_script("return document.getElementById('player').volume") == pytest.approx(0.3)
    assert d.find_element(By.ID, "volume").get_attribute("value") == "0.3"

    # Auto-preview: moving with the arrow keys plays each hit it reaches.
    hits = search(d, "a long market")
    d.find_element(By.ID, "autoplay").click()
    d.find_element(By.ID, "q").send_keys(Keys.ARROW_DOWN)
    wait(d, lambda d: (player(d)["src"] or "").startswith(f"/api/audio/{hits[0]['file_id']}"), "0")
    wait(d, lambda d: not player(d)["paused"], "the first hit playing")
    d.switch_to.active_element.send_keys(Keys.ARROW_DOWN)
    wait(d, lambda d: (player(d)["src"] or "").startswith(f"/api/audio/{hits[1]['file_id']}"), "1")
    assert d.switch_to.active_element.get_attribute("data-index") == "1"
    d.execute_script("document.getElementById('player').pause();")
    forget_settings(d)


@pytest.mark.slow
def test_copy_path_and_drag_out(browser, server):
    d = browser
    open_page(d, server)
    d.execute_cdp_cmd(
        "Browser.grantPermissions",
        {"origin": server.url, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]},
    )
    hits = search(d, "owl")
    full = d.execute_script("return window.earshot.state.hits[0].path;")
    d.find_elements(By.CSS_SELECTOR, "#results .hit .copy")[0].click()
    wait(d, lambda d: "Copied the path" in status(d), "the copy")
    assert full in status(d)
    copied = d.execute_async_script(
        "const done = arguments[0]; navigator.clipboard.readText().then(done, e => done('!' + e));"
    )
    assert copied == full

    # Dragging a hit out hands the browser a file to save (DownloadURL: type:name:absolute url).
    dragged = d.execute_script(
        "const li = document.querySelector('#results .hit');"
        "const dt = new DataTransfer();"
        "li.dispatchEvent(new DragEvent('dragstart', {dataTransfer: dt, bubbles: true}));"
        "return [dt.getData('DownloadURL'), dt.getData('text/plain'), li.draggable];"
    )
    url, text, draggable = dragged
    assert draggable is True and text == full
    clip = d.execute_script("return window.earshot.state.offers.clip;")
    if clip:
        mime, name, where = url.split(":", 2)
        assert mime == "audio/wav" and name.endswith(".wav")
        assert where.startswith(f"{server.url}/api/clip/{hits[0]['file_id']}?start=")
    else:
        assert url == (
            f"application/octet-stream:{hits[0]['name']}:{server.url}/api/audio/{hits[0]['file_id']}"
        )

    # Download span: a link to the span as a WAV attachment, where the server cuts clips.
    links = d.find_elements(By.CSS_SELECTOR, "#results .hit .download")
    assert len(links) == (len(hits) if clip else 0)
    if clip:
        href = links[0].get_attribute("href")
        assert href.startswith(f"{server.url}/api/clip/{hits[0]['file_id']}?start=")
        assert links[0].get_attribute("download") is not None
        got = d.execute_async_script(
            "const done = arguments[1];"
            "fetch(arguments[0]).then(async r => done([r.status,"
            " r.headers.get('content-disposition'), (await r.arrayBuffer()).byteLength]));",
            href,
        )
        code, disposition, size = got
        assert code == 200 and disposition.startswith("attachment") and size > 44


@pytest.mark.slow
def test_a_failed_upload_ends_in_its_error(browser, server):
    d = browser
    open_page(d, server)
    d.execute_script(
        "const file = new File([new Uint8Array(4000).fill(7)], 'broken.wav', {type: 'audio/wav'});"
        "const dt = new DataTransfer(); dt.items.add(file);"
        "window.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, cancelable: true}));"
    )
    wait(d, lambda d: "Could not search by “broken.wav”" in status(d), "the upload's error")
    assert "Listening" not in status(d)
    assert d.find_element(By.ID, "banner").is_displayed()
    assert d.find_element(By.ID, "banner").text in status(d)


@pytest.mark.slow
def test_folder_filter_takes_the_short_forms_hits_show(browser, server):
    d = browser
    open_page(d, server)
    hits = search(d, "a sound")
    shown = {
        c.text for c in d.find_elements(By.CSS_SELECTOR, "#results .hit .hit-folder")
    }  # "…/library/birds", "…/library/street"
    birds = next(f for f in shown if f.endswith("/birds"))
    for typed in (birds, "birds", "library/birds/"):
        folder = d.find_element(By.ID, "folder")
        folder.clear()
        folder.send_keys(typed, Keys.TAB)
        wait(d, lambda d: "(filtered)" in status(d), f"results in {typed!r}")
        names = {h["name"] for h in hits_on_screen(d)}
        assert names == {"robin_song.wav", "owl.flac", "wren.wav"}, typed
        assert (
            "%2Flibrary%2Fbirds" in d.current_url
            and not d.find_element(By.ID, "banner").is_displayed()
        )
    d.find_element(By.ID, "folder").clear()
    d.find_element(By.ID, "folder").send_keys(Keys.TAB)
    assert len(hits) == 6

    # The format menu lists the catalogue's formats.
    Select(d.find_element(By.ID, "format")).select_by_value("flac")
    wait(d, lambda d: {h["name"] for h in hits_on_screen(d)} == {"owl.flac"}, "flac only")
    assert "format=flac" in d.current_url
    Select(d.find_element(By.ID, "format")).select_by_value("")


@pytest.fixture(scope="module")
def many_server(tmp_path_factory, tiny_text_dir):
    """26 short clips (0.35-1.6 s) in one folder: more than a page, sub-second lengths."""
    from earshot.index.build import Indexer
    from earshot.model.io import save_model
    from earshot.testing.audio import write_noise, write_tone
    from earshot.testing.models import tiny_model

    base = tmp_path_factory.mktemp("serve-browser-many")
    root = base / "clips"
    root.mkdir()
    for j in range(26):
        seconds = 0.35 + 0.05 * j
        if j % 2:
            write_tone(root / f"clip_{j:02d}.wav", seconds, 16000, freq=200.0 + 90 * j, seed=j)
        else:
            write_noise(root / f"clip_{j:02d}.wav", seconds, 16000, seed=j)
    save_model(tiny_model(text_model=str(tiny_text_dir), text_dim=16), base / "model")
    with Catalogue(base / "c.sqlite") as cat:
        Indexer(cat, load_model(base / "model"), workers=0, progress=False).run([str(root)])
    cat = Catalogue(base / "c.sqlite", readonly=True)
    with ServerThread(create_app(cat, load_model(base / "model"), Settings())) as running:
        yield running
    cat.close()


@pytest.mark.slow
def test_more_results_and_sub_second_lengths(browser, many_server, shots):
    d = browser
    open_page(d, many_server)
    search(d, "a short click")
    assert len(hits_on_screen(d)) == 20
    more = d.find_element(By.ID, "more-results")
    assert more.is_displayed()
    more.click()
    wait(d, lambda d: len(hits_on_screen(d)) == 26, "the next page")
    hits = hits_on_screen(d)
    assert len({h["file_id"] for h in hits}) == 26  # no hit twice
    assert not d.find_element(By.ID, "more-results").is_displayed()  # that was all
    assert len(d.find_elements(By.CSS_SELECTOR, "#results .hit")) == 26
    # The shortest clip: 0.35 s long, its match "0.00–0.35 s", never "0:00".
    card = next(
        c
        for c in d.find_elements(By.CSS_SELECTOR, "#results .hit")
        if c.find_element(By.CSS_SELECTOR, ".hit-name").text == "clip_00.wav"
    )
    assert card.find_element(By.CSS_SELECTOR, ".hit-length").text == "0.35 s"
    assert card.find_element(By.CSS_SELECTOR, ".hit-span").text == "match 0.00–0.35 s"
    assert "0:00" not in d.find_element(By.ID, "results").text
    d.save_screenshot(str(shots / "browser-many.png"))


@pytest.fixture(scope="module")
def rich_server(tmp_path_factory, tiny_text_dir):
    """What a sound designer's folder holds: BWF descriptions, a UCS name, a byte-identical copy,
    AIFF, 48 kHz and stereo files, a 90 s recording whose noise bursts recur (several spans).

    Its tiny model gets a calibration (calibration.json, as `bench_confidence.py` writes for a
    real one) under which its best three files for any text are good, two weak, one no match.
    """
    import json

    import numpy as np
    import soundfile as sf

    from earshot.index.build import Indexer
    from earshot.model.io import save_model
    from earshot.testing.audio import tone, write_noise, write_tone
    from earshot.testing.models import tiny_model

    metadata = pytest.importorskip("earshot.testing.metadata", reason="no metadata writers yet")
    base = tmp_path_factory.mktemp("serve-browser-rich")
    root = base / "library"
    for sub in ("birds", "street", "foley", "copies"):
        (root / sub).mkdir(parents=True)
    write_tone(root / "birds" / "robin_song.wav", 3.0, 22050, freq=3000.0)
    shutil.copy(root / "birds" / "robin_song.wav", root / "copies" / "robin_song copy.wav")
    write_tone(root / "birds" / "owl.aiff", 2.0, 44100, channels=2, freq=400.0, seed=1)
    write_noise(root / "street" / "traffic.ogg", 4.0, 32000, seed=2)
    rng = np.random.default_rng(3)
    x = tone(90, 16000, freq=120.0, seed=3)[:, 0]
    for k in range(0, 90, 20):
        a, b = k * 16000, (k + 6) * 16000
        x[a:b] = np.clip(0.3 * rng.standard_normal(b - a), -1, 1)
    sf.write(root / "street" / "long_walk.wav", x, 16000, subtype="PCM_16")
    ixml = metadata.ixml_chunk(
        {"NOTE": "attic"},
        {"FXNAME": "Creak Open", "CATEGORY": "DOORS", "SUBCATEGORY": "Wood",
         "KEYWORDS": "door, creak; hinge"},
    )  # fmt: skip
    metadata.write_bwf(
        root / "foley" / "take_12.wav", "Old wooden door creaks open slowly", "Jane Doe",
        ixml=ixml, seconds=1.5,
    )  # fmt: skip
    write_tone(root / "foley" / "DOORWood_Creak Slam_JD_OLDHOUSE.wav", 0.6, 48000, freq=700.0)
    model_dir = base / "model"
    save_model(tiny_model(text_model=str(tiny_text_dir), text_dim=16), model_dir)
    calibration = {"a": 0.0, "b": 3.0, "c": -4.35, "good": 0.5, "weak": 0.1}
    (model_dir / "calibration.json").write_text(json.dumps({"text": calibration}))
    with Catalogue(base / "c.sqlite") as cat:
        Indexer(cat, load_model(model_dir), workers=0, progress=False).run([str(root)])
    cat = Catalogue(base / "c.sqlite", readonly=True)
    with ServerThread(create_app(cat, load_model(model_dir), Settings())) as running:
        yield running
    cat.close()


def needs(driver, field: str):
    hits = driver.execute_script("return window.earshot.state.hits;")
    if not hits or field not in hits[0]:
        pytest.skip(f"this server's hits have no '{field}' yet")


def card(driver, name: str):
    return next(
        c
        for c in driver.find_elements(By.CSS_SELECTOR, "#results .hit")
        if c.find_element(By.CSS_SELECTOR, ".hit-name").text == name
    )


@pytest.mark.slow
def test_bands_fold_the_weak_tail_and_say_when_nothing_matches(browser, rich_server, shots):
    d = browser
    open_page(d, rich_server)
    # The examples start from the library's own words: its files' metadata keywords.
    wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#chips .chip"), "the example chips")
    chips = [c.text for c in d.find_elements(By.CSS_SELECTOR, "#chips .chip")]
    assert chips[:3] == ["door", "creak", "hinge"] and len(chips) == 6
    hits = search(d, "birds singing")
    needs(d, "band")
    bands = d.execute_script("return window.earshot.state.hits.map(h => h.band);")
    assert bands.count("good") == 3 and set(bands[3:]) <= {"weak", "none"} and len(bands) == 6
    shown = [c for c in d.find_elements(By.CSS_SELECTOR, "#results .hit") if c.is_displayed()]
    assert [c.find_element(By.CSS_SELECTOR, ".hit-name").text for c in shown] == [
        h["name"] for h in hits[:3]
    ]
    assert all(c.find_element(By.CSS_SELECTOR, ".band").text == "good match" for c in shown)
    toggle = d.find_element(By.ID, "weak-toggle")
    assert toggle.is_displayed() and toggle.text == "Show 3 weak matches"
    assert not d.find_element(By.ID, "verdict").is_displayed()  # something matches well
    # The keyboard moves through what is shown only.
    d.find_element(By.ID, "q").send_keys(Keys.ARROW_DOWN)
    for _ in range(5):
        d.switch_to.active_element.send_keys(Keys.ARROW_DOWN)
    assert d.switch_to.active_element.get_attribute("data-index") == "2"
    d.save_screenshot(str(shots / "browser-bands.png"))
    # A weak hit ranked above good ones stays shown (the ranks stay 1, 2, 3...): only the
    # tail after the last good hit folds.
    d.execute_script("const e = window.earshot; e.state.hits[0].band = 'weak'; e.applyWeak();")
    first = d.find_elements(By.CSS_SELECTOR, "#results .hit")[0]
    assert first.is_displayed() and toggle.text == "Show 3 weak matches"
    d.execute_script("const e = window.earshot; e.state.hits[0].band = 'good'; e.applyWeak();")
    toggle.click()
    assert (
        len([c for c in d.find_elements(By.CSS_SELECTOR, "#results .hit") if c.is_displayed()]) == 6
    )
    assert toggle.text == "Hide 3 weak matches" and toggle.get_attribute("aria-expanded") == "true"
    last = d.find_elements(By.CSS_SELECTOR, "#results .hit")[-1]
    assert last.find_element(By.CSS_SELECTOR, ".band").text in ("weak match", "no match")

    # A search whose best is not good says so plainly, and shows its closest anyway.
    Select(d.find_element(By.ID, "duration")).select_by_value("60-600")  # only the 90 s walk
    wait(d, lambda d: "(filtered)" in status(d), "the filtered search")
    verdict = d.find_element(By.ID, "verdict")
    assert verdict.is_displayed() and verdict.text.startswith("No good match")
    assert (
        len([c for c in d.find_elements(By.CSS_SELECTOR, "#results .hit") if c.is_displayed()]) == 1
    )
    Select(d.find_element(By.ID, "duration")).select_by_value("")


@pytest.mark.slow
def test_spans_metadata_and_duplicates_show_in_hits(browser, rich_server, shots):
    d = browser
    open_page(d, rich_server)
    search(d, "a long walk")
    needs(d, "spans")
    if d.find_element(By.ID, "weak-toggle").is_displayed():
        d.find_element(By.ID, "weak-toggle").click()  # the walk is in the weak tail
    walk = card(d, "long_walk.wav")
    more = walk.find_element(By.CSS_SELECTOR, ".spans-toggle")
    spans = d.execute_script(
        "return window.earshot.state.hits.find(h => h.name === 'long_walk.wav').spans;"
    )
    assert len(spans) == 4 and more.text == "3 more matches in this file"
    assert not walk.find_element(By.CSS_SELECTOR, ".span-list").is_displayed()
    more.send_keys(Keys.ENTER)  # the spans are reachable from the keyboard
    assert more.get_attribute("aria-expanded") == "true"
    chips = walk.find_elements(By.CSS_SELECTOR, ".span-chip")
    mmss = lambda t: f"{int(t) // 60}:{int(t) % 60:02d}"  # noqa: E731
    assert [c.text.split()[0] for c in chips] == [
        f"{mmss(s['start'])}–{mmss(s['end'])}" for s in spans[1:]
    ]
    chips[1].send_keys(Keys.ENTER)  # plays that span
    second = spans[2]
    wait(d, lambda d: second["start"] <= player(d)["time"] < second["end"], "the span playing")
    walk_id = walk.get_attribute("data-file-id")
    assert not player(d)["paused"] and player(d)["src"].startswith(f"/api/audio/{walk_id}")
    assert "is-active" in walk.get_attribute("class")
    d.execute_script("document.getElementById('player').pause();")
    d.save_screenshot(str(shots / "browser-spans.png"))

    # Embedded metadata: the description, the library's category and keywords, the UCS name's.
    take = card(d, "take_12.wav")
    assert take.find_element(By.CSS_SELECTOR, ".hit-description").text == (
        "Old wooden door creaks open slowly"
    )
    assert take.find_element(By.CSS_SELECTOR, ".hit-ucs").text == "DOORS · Wood"
    words = [k.text for k in take.find_elements(By.CSS_SELECTOR, ".keyword")]
    assert words == ["door", "creak", "hinge"]
    ucs = card(d, "DOORWood_Creak Slam_JD_OLDHOUSE.wav")
    assert ucs.find_element(By.CSS_SELECTOR, ".hit-ucs").text == "DOOR · Wood"
    assert ucs.find_element(By.CSS_SELECTOR, ".hit-description").text == "Creak Slam"
    # Formats, rates and channels as columns; a byte-identical copy grouped into its hit.
    owl = card(d, "owl.aiff")
    facts = owl.find_element(By.CSS_SELECTOR, ".hit-meta").text
    assert "AIFF" in facts and "44.1 kHz" in facts and "stereo" in facts
    robin = card(d, "robin_song.wav")
    assert robin.find_element(By.CSS_SELECTOR, ".hit-also").text == (
        "Also at …/copies/robin_song copy.wav"
    )
    assert len(hits_on_screen(d)) == 6  # the copy is not a hit of its own

    # A file good only because its description holds every word asked for says so.
    search(d, "an old wooden door creaks")
    wait(d, lambda d: hits_on_screen(d) and hits_on_screen(d)[0]["name"] == "take_12.wav", "take")
    badge = card(d, "take_12.wav").find_element(By.CSS_SELECTOR, ".band")
    assert badge.text == "good match · by name"
    assert "by its sound alone it scores" in badge.get_attribute("title")
    others = [c for c in d.find_elements(By.CSS_SELECTOR, "#results .band") if c != badge]
    assert others and not any("by name" in c.text for c in others)


@pytest.mark.slow
def test_sort_and_the_rate_and_channel_filters(browser, rich_server):
    d = browser
    open_page(d, rich_server)
    search(d, "a sound")
    sort = d.find_element(By.ID, "sort")
    if not sort.is_displayed():
        pytest.skip("this server does not sort yet")
    by_score = [h["name"] for h in hits_on_screen(d)]
    good = {h["name"] for h in hits_on_screen(d) if h["band"] == "good"}
    assert good and len(good) < len(by_score)  # the calibration's three good, then the rest

    def banded(sort_by, key):  # the good matches first, then the weak, each band in `key` order
        def ok(d):
            if f"sort={sort_by}" not in d.current_url or d.execute_script(
                "return window.earshot.state.busy;"
            ):
                return False  # the sorted answer is not drawn yet
            hits = hits_on_screen(d)
            bands = [_BAND_ORDER[h["band"]] for h in hits]
            pairs = itertools.pairwise(hits)
            return (
                {h["name"] for h in hits} == set(by_score)
                and bands == sorted(bands)
                and all(key(a) <= key(b) for a, b in pairs if a["band"] == b["band"])
            )

        return ok

    Select(sort).select_by_value("name")
    wait(d, banded("name", lambda h: h["name"].lower()), "the good first, each band by name")
    assert {h["name"] for h in hits_on_screen(d)[: len(good)]} == good
    Select(sort).select_by_value("duration")
    wait(d, banded("duration", lambda h: h["duration"]), "the good first, each band shortest first")
    goods = [h for h in hits_on_screen(d) if h["band"] == "good"]
    assert hits_on_screen(d)[0]["name"] == min(goods, key=lambda h: h["duration"])["name"]
    # The page shows the good matches only; the rest behind "Show weak matches".
    shown = [c for c in d.find_elements(By.CSS_SELECTOR, "#results .hit") if c.is_displayed()]
    assert len(shown) == len(good)
    Select(sort).select_by_value("score")
    wait(d, lambda d: [h["name"] for h in hits_on_screen(d)] == by_score, "by score again")

    Select(d.find_element(By.ID, "rate")).select_by_value("48000")
    wait(
        d,
        lambda d: {h["name"] for h in hits_on_screen(d)} == {"DOORWood_Creak Slam_JD_OLDHOUSE.wav"},
        "48 kHz",
    )
    assert (
        "sr=48000" in d.current_url
        and d.find_element(By.ID, "q").get_attribute("value") == "a sound"
    )
    Select(d.find_element(By.ID, "rate")).select_by_value("")
    Select(d.find_element(By.ID, "channels")).select_by_value("2")
    wait(d, lambda d: {h["name"] for h in hits_on_screen(d)} == {"owl.aiff"}, "stereo")

    # AIFF plays in Chromium (the server transcodes it).
    card(d, "owl.aiff").find_element(By.CSS_SELECTOR, ".play").click()
    wait(d, lambda d: player(d)["time"] > 0.2, "the AIFF playing")
    assert player(d)["error"] is None
    d.execute_script("document.getElementById('player').pause();")
    Select(d.find_element(By.ID, "channels")).select_by_value("")

    # More like this reads the same two menus (sent as the query syntax, `q`): a search like
    # another file, narrowed to the stereo one.
    wait(d, lambda d: len(hits_on_screen(d)) > 1, "every file again")
    other = next(h for h in hits_on_screen(d) if h["name"] != "owl.aiff")
    card(d, other["name"]).find_element(By.CSS_SELECTOR, ".more").click()
    wait(d, lambda d: "that sound like" in d.find_element(By.ID, "status").text, "similar")
    channels = d.find_element(By.ID, "channels")
    assert channels.is_enabled()
    Select(channels).select_by_value("2")
    wait(d, lambda d: {h["name"] for h in hits_on_screen(d)} == {"owl.aiff"}, "stereo, like it")
    assert "like=" in d.current_url
