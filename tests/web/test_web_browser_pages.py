"""The pages as a technician's phone shows them, in a real headless Chromium, against the real app over a
real ledger with a day of history: nothing scrolls sideways at 390 px, the desktop uses its width, the
charts draw exactly the stored intervals and mark the estimated ones, the meter page shows live values,
the error in words, the bill so far and its projection. Screenshots go to ``test-artifacts/``."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from selenium.webdriver.common.by import By

from gateway.channels import Channel
from tests.web.browser import (
    DESKTOP,
    PHONE,
    BackgroundLoop,
    charts_drawn,
    clear_cookies,
    console_errors,
    overflow,
    screenshot,
    viewport,
    wait_for,
    wider_than_viewport,
)
from tests.web.page_site import BILLS, ERROR, PASSWORD, USER, PageSite, bills_module, day_slots, page_site

pytestmark = pytest.mark.slow

PAGES = ["/", "/meters/flat-1", "/meters/flat-2", "/meters/nope"]
"""The last one answers 404 (its console has that one network error)."""
ESTIMATED_RGB = (0xE0, 0x7B, 0x00)
MEASURED_RGB = (0x2F, 0x6F, 0xB3)
MISSING_RGB = (0xD6, 0x45, 0x45)


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PageSite]:
    loop = BackgroundLoop()
    patch = pytest.MonkeyPatch()
    patch.setitem(sys.modules, "gateway.reports.bills", bills_module(BILLS))
    served = page_site(tmp_path_factory.mktemp("pages"))
    try:
        yield loop.run(served.__aenter__())
    finally:
        loop.run(served.__aexit__(None, None, None))
        loop.close()
        patch.undo()


@pytest.fixture
def phone(browser: Any, pages: PageSite) -> Any:
    """The browser at 390 x 844, signed in through the form."""
    clear_cookies(browser)
    viewport(browser, PHONE)
    browser.get(pages.url + "/login")
    browser.find_element(By.ID, "username").send_keys(USER)
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "form.login button").click()
    wait_for(lambda: browser.current_url == pages.url + "/", "the overview after signing in")
    console_errors(browser)  # start each test with an empty console
    return browser


def _fits(driver: Any, what: str) -> None:
    width, inner = overflow(driver)
    assert width <= inner, f"{what}: {width} px wide in a {inner} px viewport: {wider_than_viewport(driver)}"


def test_no_page_scrolls_sideways_on_a_phone_and_a_desktop_uses_its_width(phone: Any, pages: PageSite) -> None:
    clear_cookies(phone)
    phone.get(pages.url + "/login")
    _fits(phone, "/login")
    screenshot(phone, "phone_login")
    phone.back()
    phone.get(pages.url + "/login")
    phone.find_element(By.ID, "username").send_keys(USER)
    phone.find_element(By.ID, "password").send_keys(PASSWORD)
    phone.find_element(By.CSS_SELECTOR, "form.login button").click()
    for path in PAGES:
        if path == PAGES[-1]:
            assert console_errors(phone) == [], "no script error and no CSP violation on any page"
        viewport(phone, PHONE)
        phone.get(pages.url + path)
        charts_drawn(phone)
        assert phone.execute_script("return window.innerWidth") == PHONE[0]
        _fits(phone, path)
        screenshot(phone, f"phone{path}")
        viewport(phone, DESKTOP)
        phone.get(pages.url + path)
        charts_drawn(phone)
        _fits(phone, f"{path} at {DESKTOP[0]} px")
        screenshot(phone, f"desktop{path}")
        if path == "/":
            tops = {round(e.rect["y"]) for e in phone.find_elements(By.CSS_SELECTOR, "#meters .card")}
            assert len(tops) == 1, "at desktop width the three meter cards sit side by side"
        if path == "/meters/flat-1":
            status, live = (phone.find_element(By.ID, i).rect for i in ("status", "live"))
            assert status["y"] == live["y"], "two columns"
            assert live["x"] > status["x"] + status["width"] - 1


def _colour_at(driver: Any, chart: str, series: int, index: int, fraction: float = 0.5) -> tuple[int, ...]:
    """The pixel in the middle of one bar, read from the chart's canvas."""
    rgba = driver.execute_script("""
        const [sel, s, i, f] = arguments, u = document.querySelector(sel).uplot;
        const x = Math.round(u.valToPos(u.data[0][i], 'x', true));
        const y = Math.round(u.valToPos(u.data[s][i] * f, 'y', true));
        return Array.from(u.ctx.getImageData(x, y, 1, 1).data);""", chart, series, index, fraction)
    return tuple(rgba[:3])


def _near(rgb: tuple[int, ...], expected: tuple[int, int, int]) -> bool:
    return all(abs(a - b) <= 12 for a, b in zip(rgb, expected, strict=True))


def test_the_charts_draw_the_stored_intervals_and_mark_the_estimated_ones(phone: Any, pages: PageSite) -> None:
    phone.get(pages.url + "/meters/flat-1")
    drawn = {c["kind"]: c for c in charts_drawn(phone)}
    start, end = day_slots(pages.now)
    stored = pages.stored("flat-1", start, end)
    estimated = [s for s, _, q in stored if q in "ESF"]
    assert len(stored) >= 80
    assert len(estimated) >= 3, "the fixture has a day with a gap the engine estimated"
    assert drawn["day"]["drawn"] == "1"
    assert int(drawn["day"]["points"]) == len(stored), "one bar per stored interval of the last 24 h"
    assert int(drawn["day"]["estimated"]) == len(estimated)

    slots = phone.execute_script("return document.querySelector('#day [data-chart]').uplot.data[0]")
    index = {round(x - 450): i for i, x in enumerate(slots)}
    for start_t in estimated:
        assert _near(_colour_at(phone, "#day [data-chart]", 2, index[start_t]), ESTIMATED_RGB), start_t
    measured = next(s for s, _, q in stored if q == "A")
    assert _near(_colour_at(phone, "#day [data-chart]", 1, index[measured]), MEASURED_RGB)
    last = stored[-1][0]
    missing = list(range(last + 900, end - 900, 900))
    assert missing, "the meter stopped before now"
    assert _near(_colour_at(phone, "#day [data-chart]", 3, index[missing[0]]), MISSING_RGB), \
        "the stretch since the meter stopped is marked, not just empty"

    rows = phone.find_elements(By.CSS_SELECTOR, "#intervals tr.estimated")
    assert sorted(int(r.get_attribute("data-start")) for r in rows) == estimated, "the table marks them too"
    assert all("estimated" in r.text for r in rows)

    days_with_data = len({datetime.fromtimestamp(s, ZoneInfo("Europe/Berlin")).date() for s, _, _ in
                          pages.stored("flat-1", 0, end) if s >= _period_start(pages)})
    assert int(drawn["period"]["points"]) == days_with_data
    assert int(drawn["period"]["estimated"]) >= 1, "the day with the estimated hour shows its estimated part"
    assert console_errors(phone) == []

    phone.get(pages.url + "/")
    charts = charts_drawn(phone)
    line = next(c for c in charts if c["kind"] == "line")
    history = httpx.get(pages.url + line["src"], headers={"Authorization": f"Bearer {pages.token}"}).json()
    assert int(line["points"]) == sum(1 for n in history["transactions"] if n) >= 300
    assert int(line["estimated"]) == sum(1 for n in history["errors"] if n) >= 30, "the minutes with errors"
    assert sum(1 for c in charts if c["kind"] == "day" and c["drawn"] == "1") == 3, "one 24 h glance per meter"


EXPORTED_RGB = (0x2E, 0x8B, 0x57)


def test_a_meter_with_export_gets_its_feed_in_drawn_below_the_axis(phone: Any, pages: PageSite) -> None:
    phone.get(pages.url + "/meters/shop")
    drawn = {c["kind"]: c for c in charts_drawn(phone)}
    start, end = day_slots(pages.now)
    exported = pages.stored("shop", start, end, Channel.EXPORT)
    assert len(exported) >= 80
    assert int(drawn["day"]["export_points"]) == len(exported), "one export bar per stored export interval"
    assert int(drawn["day"]["points"]) == len(pages.stored("shop", start, end)), "import drawn as before"
    slots = phone.execute_script("return document.querySelector('#day [data-chart]').uplot.data[0]")
    index = {round(x - 450): i for i, x in enumerate(slots)}
    sunny = max(exported, key=lambda row: row[1])
    assert sunny[1] > 0
    assert _near(_colour_at(phone, "#day [data-chart]", 4, index[sunny[0]]), EXPORTED_RGB), "export below the axis"
    assert _near(_colour_at(phone, "#day [data-chart]", 1, index[sunny[0]]), MEASURED_RGB), "import above it"
    assert drawn["period"]["export_points"] != ""
    assert "exported (below the axis)" in phone.find_element(By.ID, "day").text, "the legend names the colour"
    bill = phone.find_element(By.ID, "bill").text
    assert "Exported so far" in bill
    assert "(the tariff has no feed-in rate)" in bill, "the site's tariff pays nothing for export"
    assert console_errors(phone) == []
    phone.get(pages.url + "/meters/flat-2")
    assert {c["export_points"] for c in charts_drawn(phone) if c["kind"] != "line"} == {""}, "no export channel"


def _period_start(pages: PageSite) -> int:
    doc = httpx.get(f"{pages.url}/api/v1/charts/meters/flat-1/period",
                    headers={"Authorization": f"Bearer {pages.token}"}).json()
    return int(doc["t"][0])


def test_the_meter_page_shows_live_values_the_error_in_words_and_the_bill(phone: Any, pages: PageSite) -> None:
    phone.get(pages.url + "/meters/flat-1")
    rows = phone.find_elements(By.CSS_SELECTOR, "#live tr[data-quantity]")
    live = {r.get_attribute("data-quantity"): r.text for r in rows}
    assert set(live) == {"energy_import", "power_total", "voltage_l1", "current_l1", "frequency", "power_factor"}
    assert "231.4 V" in live["voltage_l1"]
    assert "49.98 Hz" in live["frequency"]
    assert "kWh" in live["energy_import"], "energy in kWh, as on the meter's display"

    problem = phone.find_element(By.ID, "problem")
    assert "Unit 1 does not answer on 127.0.0.1:502." in problem.text
    assert "wires A and B" in problem.text
    raw = problem.find_element(By.TAG_NAME, "pre")
    assert not raw.is_displayed(), "the raw message is one tap away, not in the way"
    assert raw.get_attribute("textContent") == ERROR

    projection = httpx.get(f"{pages.url}/api/v1/meters/flat-1/projection",
                           headers={"Authorization": f"Bearer {pages.token}"}).json()
    method = projection["default_method"]
    projected = projection["projections"][method]["projected_total"]
    assert phone.find_element(By.ID, "projected").text == f"{projected} EUR", "the page and the API agree"
    budget = phone.find_element(By.ID, "budget").text
    assert "Over budget" in budget
    assert "40.00" in budget
    assert "Confidence" in phone.find_element(By.ID, "bill").text

    links = {a.text: a.get_attribute("href") for a in phone.find_elements(By.CSS_SELECTOR, "#bills a")}
    assert links == {b.number: f"{pages.url}/bills/{b.number}" for b in BILLS}
    assert "replaces BILL-202611-flat-1-0001" in phone.find_element(By.ID, "bills").text

    stamp = phone.find_element(By.CSS_SELECTOR, "#status time")
    utc = datetime.fromisoformat(stamp.get_attribute("datetime"))
    local = utc.astimezone(ZoneInfo("Europe/Berlin")).strftime("%H:%M:%S")
    assert stamp.text.startswith(local), "site time on the page"
    assert stamp.get_attribute("title").endswith("UTC"), "UTC on hover"
    screenshot(phone, "phone_meter_flat-1_detail")
