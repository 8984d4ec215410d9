"""The study's HTML pages in a real browser: Debian's Chromium, headless, driven by Selenium
through Debian's chromedriver (``apt-get install chromium chromium-driver``; `.ci/run` installs
them). A test module takes the fixtures with ``pytest_plugins = ["browser"]``::

    def test_page(render, tmp_path):
        check = render(page, tmp_path / "page.png")
        assert not check.broken_images and not check.severe_logs and not check.overflow

Without /usr/bin/chromium or /usr/bin/chromedriver (or selenium) such tests are skipped.
"""

from __future__ import annotations

import base64
import functools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WINDOW = (1366, 900)  # a laptop screen, CSS pixels
LOAD_TIMEOUT_S = 30
# Headless as root, and nothing that reaches for the network: without the background-networking
# flags Chromium's own connections are refused on a closed network and it logs errors.
CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage")
_LOADED = ("return document.readyState === 'complete' && "
           "Array.from(document.images).every(img => img.complete)")
_BROKEN = ("return Array.from(document.images).filter(img => img.naturalWidth === 0)"
           ".map(img => img.getAttribute('src'))")


@dataclass(frozen=True)
class PageCheck:
    """What a page looked like once it and all its images had loaded."""

    title: str
    broken_images: list[str]  # src of every <img> with naturalWidth 0
    severe_logs: list[str]  # the console's SEVERE entries (errors, failed loads)
    scroll_width: int  # document.documentElement.scrollWidth, CSS px
    window_width: int  # window.innerWidth, CSS px
    screenshot: Path  # a full-page PNG

    @property
    def overflow(self) -> bool:
        """Wider than the window: the page scrolls sideways (1 px of rounding allowed)."""
        return self.scroll_width > self.window_width + 1


def start_chromium(profile: Path) -> WebDriver:
    """Headless Chromium at WINDOW size with a fresh profile, logging the browser console."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    width, height = WINDOW
    for arg in (*CHROMIUM_ARGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The driver's path is given, so Selenium Manager (which would download one) is not asked.
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(LOAD_TIMEOUT_S)
    return driver


def render_page(driver: WebDriver, page: Path, screenshot: Path) -> PageCheck:
    """Open the local file `page`, wait until the document and every image have loaded, save a
    full-page screenshot to `screenshot`, and say what was wrong with the page."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get_log("browser")  # drain: only this page's entries are reported
    driver.get(page.resolve().as_uri())
    WebDriverWait(driver, LOAD_TIMEOUT_S).until(lambda d: d.execute_script(_LOADED))
    broken = driver.execute_script(_BROKEN)
    severe = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    scroll_width, window_width, height = driver.execute_script(
        "const e = document.documentElement;"
        "return [e.scrollWidth, window.innerWidth, Math.max(e.scrollHeight, window.innerHeight)]")
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": max(scroll_width, window_width), "height": height,
                 "scale": 1}})
    screenshot.write_bytes(base64.b64decode(shot["data"]))
    return PageCheck(title=driver.title, broken_images=broken, severe_logs=severe,
                     scroll_width=scroll_width, window_width=window_width, screenshot=screenshot)


def missing() -> str | None:
    """Why the browser cannot be started here, or None."""
    absent = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if absent:
        return (f"{' and '.join(absent)} absent: apt-get install chromium chromium-driver "
                "(.ci/run does)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install -e '.[dev]'"
    return None


@pytest.fixture(scope="session")
def browser(tmp_path_factory) -> Iterator[WebDriver]:
    """One headless Chromium for the whole session, quit at its end."""
    if why := missing():
        pytest.skip(why)
    driver = start_chromium(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="session")
def render(browser) -> Callable[[Path, Path], PageCheck]:
    """`render(page, screenshot) -> PageCheck` in the session's browser (see `render_page`)."""
    return functools.partial(render_page, browser)
