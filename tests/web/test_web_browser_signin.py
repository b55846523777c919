"""Sign-in as a technician does it, in a real headless Chromium against the real daemon (``python -m gateway
run``) with an account made by ``meter-gateway user add``: the old ``?token=`` address is refused, a wrong
password is refused and logged, the session cookie is HttpOnly and SameSite=Strict, no secret ever
appears in an address, signing out ends the session on the server, and a name guessed too often is held."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.expected_conditions import staleness_of
from selenium.webdriver.support.wait import WebDriverWait

from gateway.clock import SystemClock
from gateway.profiles import builtin_profile
from gateway.sim.load import LoadModel
from gateway.sim.modbus_sim import MeterSimulator, SimulatedMeter
from gateway.web.sessions import FREE_FAILURES_PER_USER
from tests.conftest import free_port
from tests.web.browser import (
    PHONE,
    BackgroundLoop,
    charts_drawn,
    clear_cookies,
    overflow,
    screenshot,
    viewport,
    wait_for,
)

pytestmark = pytest.mark.slow

PY = sys.executable
USER = "anna"
PASSWORD = "blue cabinet 42 wires"
START_S = 20.0
"""The daemon answers within a second or two; this bounds a broken start on a loaded box."""
STOP_S = 10.0
SUBMIT_TIMEOUT_S = 15.0
"""A sign-in answer on a loaded box (a password check is 19 MiB of argon2id, one at a time)."""


@dataclass
class Daemon:
    url: str
    token: str
    log: Path
    proc: subprocess.Popen[bytes]


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    loop = BackgroundLoop()
    clock = SystemClock()

    async def simulate() -> MeterSimulator:  # pymodbus builds its server on the running loop
        sim = MeterSimulator([SimulatedMeter("m1", 1, builtin_profile("eastron-sdm630"),
                                             LoadModel.for_meter("m1", math.floor(clock.now())))], clock,
                             port=free_port())
        await sim.start()
        return sim

    sim = loop.run(simulate())
    port = free_port()
    config = tmp_path / "gateway.toml"
    config.write_text(f"""
gateway_id = "gw-sign-in"
data_dir = "{tmp_path / 'data'}"
site_timezone = "Europe/Berlin"
[time]
trust = "always"
[logging]
format = "json"
[web]
port = {port}
[[buses]]
name = "line"
host = "127.0.0.1"
port = {sim.port}
timeout_s = 1.0
  [[buses.meters]]
  id = "m1"
  unit_id = 1
  profile = "eastron-sdm630"
  poll_s = 5
""")
    added = subprocess.run([PY, "-m", "gateway", "user", "add", USER, "--password-stdin", "--config", str(config)],
                           input=f"{PASSWORD}\n", capture_output=True, text=True, timeout=30, check=False)
    assert added.returncode == 0, added.stderr
    assert PASSWORD not in added.stdout + added.stderr
    log = tmp_path / "daemon.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([PY, "-m", "gateway", "run", "--config", str(config)], stdout=out,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_S
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(url + "/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the daemon's web server did not come up"
            time.sleep(0.1)
        yield Daemon(url, (tmp_path / "data" / "web.token").read_text().strip(), log, proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(STOP_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        loop.close(sim.stop)
    assert code == 0, log.read_text()[-3000:]


def _submit(driver: Any, user: str, password: str) -> str:
    field = driver.find_element(By.ID, "username")
    field.clear()
    field.send_keys(user)
    driver.find_element(By.ID, "password").send_keys(password)
    before = driver.find_element(By.TAG_NAME, "body")
    driver.find_element(By.CSS_SELECTOR, "form.login button").click()
    # The form posts and a new page replaces this one: read the answer, not the page it was sent from.
    WebDriverWait(driver, SUBMIT_TIMEOUT_S).until(staleness_of(before))
    return str(driver.find_element(By.TAG_NAME, "body").text)


def test_sign_in_log_out_and_the_throttle_in_a_browser_against_the_daemon(browser: Any, daemon: Daemon) -> None:
    clear_cookies(browser)
    viewport(browser, PHONE)
    visited: list[str] = []

    browser.get(f"{daemon.url}/?token={daemon.token}")  # the address the demo used to print
    visited.append(browser.current_url)
    assert browser.current_url == f"{daemon.url}/login?token=refused"
    assert "no longer open the page" in browser.find_element(By.TAG_NAME, "body").text
    assert browser.get_cookies() == [], "the token opens nothing"
    width, inner = overflow(browser)
    assert width <= inner

    browser.get(daemon.url + "/meters/m1")
    visited.append(browser.current_url)
    assert browser.current_url == f"{daemon.url}/login?next=%2Fmeters%2Fm1"
    assert "Wrong user name or password" in _submit(browser, USER, "not my password at all")
    visited.append(browser.current_url)
    assert browser.get_cookies() == []

    _submit(browser, USER, PASSWORD)
    wait_for(lambda: browser.current_url == f"{daemon.url}/meters/m1", "the meter page after signing in")
    visited.append(browser.current_url)
    (cookie,) = browser.get_cookies()
    assert cookie["name"] == "gw_session"
    assert cookie["httpOnly"] is True, "page script cannot read it"
    assert cookie["sameSite"] == "Strict"
    assert cookie["secure"] is False, "plain HTTP on loopback"
    assert browser.execute_script("return document.cookie") == ""

    def answering() -> bool | None:
        browser.refresh()  # the page is rendered by the server: a reload shows the news
        return "answering" in browser.find_element(By.ID, "status").text or None

    wait_for(answering, "the meter to be read")
    live = {r.get_attribute("data-quantity"): r.text for r in browser.find_elements(By.CSS_SELECTOR, "#live tr")}
    assert {"energy_import", "power_total", "voltage_l1"} <= set(live), "the daemon's reads reach the page"
    assert " kWh " in live["energy_import"]
    assert " V " in live["voltage_l1"]
    charts_drawn(browser)
    width, inner = overflow(browser)
    assert width <= inner, "the meter page fits a phone"
    screenshot(browser, "phone_daemon_meter_m1")

    browser.get(daemon.url + "/")
    visited.append(browser.current_url)
    assert "m1" in browser.find_element(By.ID, "meters").text
    width, inner = overflow(browser)
    assert width <= inner, "the overview fits a phone"
    screenshot(browser, "phone_daemon_overview")

    browser.find_element(By.CSS_SELECTOR, "form.signout button").click()
    wait_for(lambda: browser.current_url == f"{daemon.url}/login?signed_out=1", "the signed-out page")
    visited.append(browser.current_url)
    assert "You are signed out" in browser.find_element(By.TAG_NAME, "body").text
    assert browser.get_cookies() == []
    replay = httpx.get(daemon.url + "/api/v1/meters", cookies={"gw_session": cookie["value"]})
    assert replay.status_code == 401, "the session ended on the server, not only in the browser"
    browser.get(daemon.url + "/")
    assert browser.current_url.startswith(f"{daemon.url}/login"), "the page asks to sign in again"

    for _ in range(FREE_FAILURES_PER_USER):
        _submit(browser, USER, "guessing again and again")
    held = _submit(browser, USER, PASSWORD)
    assert "Too many failed sign-ins" in held, "the right password waits too once a name is guessed at"
    assert browser.get_cookies() == []
    visited.append(browser.current_url)

    for address in visited:
        assert daemon.token not in address
        assert PASSWORD not in address
        assert "password" not in address.lower(), address
    events = [json.loads(line) for line in daemon.log.read_text().splitlines() if line.startswith("{")]
    failed = [e for e in events if e.get("event") == "sign_in_failed"]
    assert len(failed) == 1 + FREE_FAILURES_PER_USER
    assert all(e["user"] == USER and e["client"] == "127.0.0.1" for e in failed)
    assert [e["event"] for e in events if e.get("event") in ("signed_in", "signed_out")] == ["signed_in", "signed_out"]
    assert any(e.get("event") == "sign_in_throttled" for e in events)
    text = daemon.log.read_text()
    assert PASSWORD not in text, "no password in the log"
    assert "guessing again" not in text, "no password in the log"
    assert "Traceback" not in text
