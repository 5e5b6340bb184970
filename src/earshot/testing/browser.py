"""For the browser tests: headless Chromium through selenium, as a person would see the page.

`skip_without_chromium()` skips the calling test module, naming the missing Debian package or
Python package, where Chromium, chromedriver or selenium is absent. `chromium_driver()` is a
context manager around one headless Chromium with the flags every browser test uses (no GPU, no
sandbox, muted audio that may autoplay, a fixed window size).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--mute-audio",
    "--autoplay-policy=no-user-gesture-required",
)


def _binary(path: str) -> str | None:
    return path if os.access(path, os.X_OK) else shutil.which(Path(path).name)


def skip_without_chromium() -> None:
    """Skip the calling module (pytest's module-level skip) unless a browser test can run."""
    import pytest

    pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    for binary, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not _binary(binary):
            pytest.skip(
                f"{binary} not found: install the Debian package '{package}' "
                "(apt-get install chromium chromium-driver) to run the browser tests",
                allow_module_level=True,
            )


@contextlib.contextmanager
def chromium_driver(
    window: tuple[int, int] = (1280, 900), script_timeout_s: float = 30
) -> Iterator:
    """One headless Chromium (a selenium WebDriver) for the `with` block; quit at its end."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = _binary(CHROMIUM)
    for flag in (*FLAGS, f"--window-size={window[0]},{window[1]}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(_binary(CHROMEDRIVER)), options=options)
    try:
        driver.set_script_timeout(script_timeout_s)
        yield driver
    finally:
        driver.quit()
