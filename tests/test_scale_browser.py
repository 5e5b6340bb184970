"""The page over shards (`earshot serve --shards`), in headless Chromium: it loads, a typed
search shows the hits the shard searcher gives, and a hit plays from its file route.

Skipped, saying what is missing, without Chromium, chromedriver or selenium (as
tests/test_serve_browser.py); the shard indexes run in this process (no Ray).
"""

from __future__ import annotations

import pytest

from earshot.testing.browser import chromium_driver, skip_without_chromium

pytest.importorskip("fastapi")
pytest.importorskip("pyarrow", reason="earshot[ray] is not installed (pyarrow)")
skip_without_chromium()

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from earshot.model.io import load_model  # noqa: E402
from earshot.serve import Settings  # noqa: E402
from earshot.testing.serve import ServerThread, build_library  # noqa: E402

WAIT_S = 20


@pytest.mark.slow
def test_the_page_over_shards_searches_and_plays(tmp_path, tiny_text_dir):
    from earshot.scale.search import ShardSearcher
    from earshot.scale.serve import create_shard_app
    from earshot.testing.scale import write_shards

    lib = build_library(tmp_path, tiny_text_dir)
    model = load_model(lib.model_dir)
    uri = write_shards(model, [lib.root], tmp_path / "shards", files_per_shard=2)
    searcher = ShardSearcher(uri, model, address=None, actors=2)
    app = create_shard_app(searcher, Settings())
    want = [h.path.rsplit("/", 1)[1] for h in searcher.search_text("a bird sings", 20)]
    try:
        with ServerThread(app) as server, chromium_driver() as d:
            d.get(server.url + "/")
            wait = WebDriverWait(d, WAIT_S)
            wait.until(lambda d: d.execute_script("return !!window.earshot"), "the page")
            d.find_element(By.ID, "q").send_keys("a bird sings")
            wait.until(
                lambda d: (
                    "for “a bird sings”" in d.find_element(By.ID, "status").text
                    and d.execute_script("const s = window.earshot.state; return !s.busy;")
                ),
                "the results",
            )
            shown = d.execute_script("return window.earshot.state.hits.map(h => h.name);")
            assert shown == want and len(d.find_elements(By.CSS_SELECTOR, "#results .hit")) == 6
            d.find_elements(By.CSS_SELECTOR, "#results .hit .play")[0].click()
            wait.until(
                lambda d: d.execute_script(
                    "const p = document.getElementById('player');"
                    "return p.currentTime > 0.2 && !p.error;"
                ),
                "playback",
            )
    finally:
        app.state.service.close()
