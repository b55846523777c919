"""Bad MQTT meter data through the real daemon and a real mosquitto never becomes money (issue 13).

Before the fix, on main:
* one value of 1e12 Wh between honest readings was credited in full (999 999 003 840 Wh for ~9 kWh):
  an MQTT meter had no power ceiling, so any rise was plausible, and the fall back to the honest
  register became a new register epoch, leaving the spike credited;
* a meter whose first message was stamped 1970 (a Tasmota booted without NTP) started its timeline
  in 1970, and its next honest message filled every quarter-hour since: ~2 million credits, GiBs of
  memory and ledger, a stall of the event loop of over a minute. Stamped 30 days behind: 2880.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiomqtt
import httpx
import pytest

from gateway.clock import SimulatedClock
from gateway.config import parse_config
from gateway.daemon import Running, run_daemon
from tests.conftest import Broker

SPEED = 300.0
PERIOD = 60
POWER_W = 13_500
"""The honest meter: 225 Wh a minute, 9 kWh in 40 minutes."""
START_WH = 5_000_000
STARTUP_S = 10.0
"""Host seconds for the daemon to open its ledger and subscribe."""
LOOP_STALL_S = 2.0
"""Longest the event loop may go without serving another task (a 1970 fill stalled it for 101 s)."""


def register_wh(t: float, t0: float) -> int:
    return START_WH + round(POWER_W * (t - t0) / 3600)


@asynccontextmanager
async def daemon(tmp_path: Path, broker: Broker, clock: SimulatedClock) -> AsyncIterator[Running]:
    cfg = parse_config(f"""
gateway_id = "gw-bad-data"
data_dir = "{tmp_path / 'data'}"
[time]
trust = "always"
[web]
port = 0
[ledger]
commit_every_s = 30
[mqtt]
port = {broker.port}
  [[mqtt.meters]]
  id = "tas-1"
  topic = "tele/tas-1/SENSOR"
  value_path = "ENERGY.Total"
  time_path = "Time"
""")
    stop = asyncio.Event()
    running: list[Running] = []
    task = asyncio.create_task(run_daemon(cfg, clock, stop, on_started=running.append, final_sync_s=0))
    try:
        async with asyncio.timeout(STARTUP_S):
            while not running:
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.5)  # the source subscribes
        yield running[0]
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def message(stamp: float, wh: float) -> str:
    return json.dumps({"Time": stamp, "ENERGY": {"Total": wh / 1000, "Power": POWER_W}})


async def credited(handle: Running) -> list[tuple[int, int, str]]:
    return [(s, wh, q) for s, _, wh, q in await handle.ledger.intervals("tas-1", 0, 2**40)]


async def test_a_1e12_wh_spike_between_honest_readings_is_never_credited(tmp_path: Path, mosquitto: Broker) -> None:
    t0 = math.ceil(time.time() / 900) * 900  # on a boundary
    clock = SimulatedClock(start=t0 - PERIOD, speed=SPEED, tick=PERIOD)
    async with daemon(tmp_path, mosquitto, clock) as handle, \
            aiomqtt.Client("127.0.0.1", mosquitto.port) as meter:
        for k in range(41):
            at = t0 + k * PERIOD
            await clock.sleep_until(at)
            await meter.publish("tele/tas-1/SENSOR", message(at, register_wh(at, t0)), qos=1)
            if k == 20:  # the glitch, half a minute later
                await meter.publish("tele/tas-1/SENSOR", message(at + 30, 1e12), qos=1)
        await clock.sleep_until(t0 + 41 * PERIOD + 30)  # one commit period: the last readings are in
        intervals = await credited(handle)
        rejected = dict(handle.status.meters["tas-1"].rejected)
    assert len(intervals) == 2, intervals
    total = sum(wh for _, wh, _ in intervals)
    honest = register_wh(t0 + 1800, t0) - register_wh(t0, t0)
    assert total == honest == 6_750, f"credited {total} Wh for {honest} Wh of real movement"
    assert all(q == "A" for _, _, q in intervals)
    assert rejected == {"suspect": 1}, "held as a misread, then discarded"


@pytest.mark.parametrize("meter_clock", ["1970", "30 days behind"])
async def test_a_meter_booted_without_ntp_never_opens_a_gap_back_to_its_clock(
        tmp_path: Path, mosquitto: Broker, meter_clock: str) -> None:
    t0 = math.ceil(time.time() / 900) * 900
    clock = SimulatedClock(start=t0 - PERIOD, speed=SPEED, tick=PERIOD)
    wrong = 0.0 if meter_clock == "1970" else t0 - 30 * 86_400
    stall = 0.0
    done = False

    async def watch_the_loop() -> None:
        nonlocal stall
        last = time.monotonic()
        while not done:
            await asyncio.sleep(0.05)
            stall, last = max(stall, time.monotonic() - last), time.monotonic()

    watcher = asyncio.create_task(watch_the_loop())
    async with daemon(tmp_path, mosquitto, clock) as handle, \
            aiomqtt.Client("127.0.0.1", mosquitto.port) as meter, \
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{handle.web_port}", follow_redirects=True) as http:
        for k in range(5):  # its clock counts up from boot until NTP reaches it
            await clock.sleep_until(t0 + k * PERIOD)
            await meter.publish("tele/tas-1/SENSOR", message(wrong + k * PERIOD, register_wh(t0 + k * PERIOD, t0)),
                                qos=1)
        await clock.sleep_until(t0 + 5 * PERIOD + 30)
        page = (await http.get("/", params={"token": handle.web_token})).text
        status = handle.status.meters["tas-1"]
        assert status.rejected["meter_clock_behind"] == 5
        assert "meter clock wrong" in page, "the technician sees why nothing is credited"
        assert "1970-01-01" in page if meter_clock == "1970" else "days behind" in page
        for k in range(5, 36):  # NTP set its clock: honest stamps from here on
            at = t0 + k * PERIOD
            await clock.sleep_until(at)
            await meter.publish("tele/tas-1/SENSOR", message(at, register_wh(at, t0)), qos=1)
        await clock.sleep_until(t0 + 36 * PERIOD + 30)
        intervals = await credited(handle)
        cleared = handle.status.meters["tas-1"].clock_wrong is None
        credits = handle.status.credits_created
    done = True
    await watcher
    assert credits == len(intervals) == 1, f"{credits} credits (before: 2880 at 30 days, ~2 million at 1970)"
    assert [(s, wh) for s, wh, _ in intervals] == [(t0 + 900, register_wh(t0 + 1800, t0) -
                                                    register_wh(t0 + 900, t0))]
    assert cleared, "its clock is right again"
    assert stall < LOOP_STALL_S
