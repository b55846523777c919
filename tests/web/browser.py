"""A real headless Chromium for the page tests (Debian's chromium, driven by Selenium through Debian's
chromedriver), and a background event loop to serve the app while the synchronous driver talks to it.

One browser serves the whole test session (``browser`` fixture in ``tests/web/conftest.py``): it
starts in about a second, and every test only opens pages in it. Viewports are set through the
DevTools protocol (device metrics), so 390 px is exactly 390 CSS px with mobile layout rules, not a
desktop window the window manager may widen.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]
PHONE = (390, 844)
DESKTOP = (1400, 1000)
PAGE_WAIT_S = 15.0
"""A page and its charts load in well under a second; this only bounds a broken page on a loaded CI box."""
ARTIFACTS = Path(os.environ.get("METER_GATEWAY_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))
"""Screenshots of every page the browser tests look at, for a person to look at too (kept by CI)."""

T = TypeVar("T")


def required() -> bool:
    return bool(os.environ.get("CI")) or os.environ.get("METER_GATEWAY_TEST_SERVICES") == "required"


def start_browser() -> Any:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        message = "chromium and chromium-driver are needed: ./scripts/setup.sh --test-services"
        if required():
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="gw-chromium-")
    for flag in [*FLAGS, f"--user-data-dir={profile}", f"--window-size={PHONE[0]},{PHONE[1]}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.profile_dir = profile
    return driver


def stop_browser(driver: Any) -> None:
    try:
        driver.quit()
    finally:
        shutil.rmtree(driver.profile_dir, ignore_errors=True)


def clear_cookies(driver: Any) -> None:
    """Every cookie of the browser, whatever page it shows: cookies are per host, not per port, so a
    session cookie from an earlier test's daemon on 127.0.0.1 would ride along to this one's, and
    Selenium's ``delete_all_cookies`` only clears the current page's (none on about:blank)."""
    driver.execute_cdp_cmd("Network.clearBrowserCookies", {})


def viewport(driver: Any, size: tuple[int, int]) -> None:
    width, height = size
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})


def overflow(driver: Any) -> tuple[int, int]:
    """``(document scroll width, viewport width)``: the page scrolls sideways when the first is larger."""
    width, inner = driver.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
    return int(width), int(inner)


def wider_than_viewport(driver: Any) -> list[str]:
    """Elements sticking out of the viewport (what to fix when ``overflow`` fails)."""
    found: list[str] = driver.execute_script("""
        const w = window.innerWidth, out = [];
        for (const el of document.querySelectorAll('body *')) {
          const r = el.getBoundingClientRect();
          if (r.right > w + 0.5 && !el.closest('.scroll')) out.push(el.tagName + '.' + el.className + ' ' + r.right);
        }
        return out.slice(0, 10);""")
    return found


def wait_for(predicate: Callable[[], T], what: str, timeout: float = PAGE_WAIT_S) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def charts_drawn(driver: Any) -> list[dict[str, str]]:
    """Wait until every chart on the page is drawn (or failed); their data attributes."""
    def state() -> list[dict[str, str]] | None:
        charts: list[dict[str, str]] = driver.execute_script("""
            return Array.from(document.querySelectorAll('[data-chart]')).map(el => ({
              kind: el.dataset.chart, src: el.dataset.src, drawn: el.dataset.drawn || '',
              points: el.dataset.points || '', estimated: el.dataset.estimated || '',
              export_points: el.dataset.exportPoints || ''}));""")
        return charts if all(c["drawn"] for c in charts) else None
    return wait_for(state, "the charts to be drawn")


def screenshot(driver: Any, name: str) -> Path:
    """The whole page at the current width, saved under ``ARTIFACTS``."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.png"
    width = driver.execute_script("return window.innerWidth")
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": min(height, 8000), "deviceScaleFactor": 1, "mobile": width < 600})
    try:
        driver.save_screenshot(str(path))
    finally:
        viewport(driver, (width, PHONE[1] if width < 600 else DESKTOP[1]))
    return path


def console_errors(driver: Any) -> list[str]:
    """Severe console entries since the last call (a CSP violation or a script error shows here)."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


class BackgroundLoop:
    """An event loop in a thread, for async servers and simulators the synchronous driver talks to."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="test-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def close(self, cleanup: Callable[[], Awaitable[None]] | None = None) -> None:
        if cleanup is not None:
            self.run(cleanup())  # type: ignore[arg-type]
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
