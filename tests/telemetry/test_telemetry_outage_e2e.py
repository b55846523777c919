"""The daemon with telemetry through a broker outage, on simulated time (300×: a quarter-hour in 3 s).

Acceptance (issue 10, item 6): a broker outage neither blocks polling nor loses an interval credit. The
daemon polls a simulated SDM630 over Modbus TCP and publishes to a real mosquitto, which is stopped for
several intervals and started again. Polling must not notice (every interval, also those that closed while
the broker was away, is credited from measured readings, quality A), and every credit the ledger made is
published on its interval topic once the broker is back.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from gateway.acquisition import modbus
from gateway.clock import SimulatedClock
from gateway.config import parse_config
from gateway.daemon import Running, run_daemon
from gateway.profiles import builtin_profile
from gateway.sim.load import LoadModel
from gateway.sim.modbus_sim import MeterSimulator, SimulatedMeter
from gateway.telemetry import publisher as publisher_module
from gateway.telemetry.publisher import ALARM
from gateway.web.server import free_port
from tests.telemetry.test_telemetry_mqtt import Subscriber, running

if TYPE_CHECKING:
    from tests.conftest import Broker as Mosquitto

SPEED = 300.0
INTERVAL_S = 900
STARTUP_S = 10.0
"""Host seconds for the daemon to open its ledger and start its tasks."""
WAIT_S = 20.0
"""Host seconds for the next intervals to close and arrive (a quarter-hour is 3 s; a loaded box lags)."""
OUTAGE_INTERVALS = 3
"""Intervals that close while the broker is away."""


def _config(tmp_path: Path, sim_port: int, broker_port: int) -> str:
    return f"""
gateway_id = "gw.outage"
data_dir = "{tmp_path / 'data'}"
[time]
trust = "always"
[web]
enabled = false
[ledger]
commit_every_s = 30
[[buses]]
name = "line"
host = "127.0.0.1"
port = {sim_port}
  [[buses.meters]]
  id = "flat-1"
  unit_id = 1
  profile = "eastron-sdm630"
  poll_s = 60
  poll_instant_s = 60
  quantities = ["power_total", "voltage_l1"]
[telemetry]
host = "127.0.0.1"
port = {broker_port}
"""


def _published(sub: Subscriber) -> list[int]:
    """Start times of the flat-1 intervals received on the interval topic, in arrival order."""
    bodies = [json.loads(m.payload) for m in sub.messages if str(m.topic).endswith("/flat-1/interval")]  # type: ignore[arg-type]
    return [int(b["start_ts"]) for b in bodies if b["kind"] == "interval"]


async def test_a_broker_outage_neither_blocks_polling_nor_loses_an_interval(
        tmp_path: Path, mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(publisher_module, "RECONNECT_MAX_S", 1.0)  # back within a host second of the broker
    # 5 simulated seconds are 17 host ms at 300×: a loaded box would see its reads as too slow to stamp.
    monkeypatch.setattr(modbus, "MAX_STAMP_UNCERTAINTY_S", 60.0)
    t0 = math.ceil(time.time() / INTERVAL_S) * INTERVAL_S
    clock = SimulatedClock(start=t0 - 120, speed=SPEED, tick=1)
    sim = MeterSimulator([SimulatedMeter("flat-1", 1, builtin_profile("eastron-sdm630"),
                                         LoadModel.for_meter("flat-1", t0 - 120))], clock, port=free_port())
    await sim.start()
    cfg = parse_config(_config(tmp_path, sim.port, mosquitto.port), base_dir=tmp_path)
    stop = asyncio.Event()
    started: list[Running] = []
    sub = Subscriber(mosquitto.port, ["meter-gateway/+/+/interval"])
    daemon = asyncio.create_task(run_daemon(cfg, clock, stop, on_started=started.append, final_sync_s=0))
    try:
        async with running(sub.run()):
            async with asyncio.timeout(STARTUP_S):
                while not started:
                    await asyncio.sleep(0.02)
            handle = started[0]
            telemetry = handle.status.telemetry
            assert telemetry is not None
            await sub.wait(lambda: len(_published(sub)) >= 2, "two intervals before the outage")

            await asyncio.sleep(0.3)  # the subscriber's acknowledgements reach the broker (see the restart test)
            mosquitto.stop()
            before = len(await handle.ledger.intervals("flat-1", 0, 2**40))
            reads_before = sim.meters[0].reads
            outage_from = clock.now()
            await clock.sleep_until((math.floor(outage_from / INTERVAL_S) + OUTAGE_INTERVALS) * INTERVAL_S + 60)
            during = await handle.ledger.intervals("flat-1", 0, 2**40)
            assert len(during) >= before + OUTAGE_INTERVALS - 1, ("the ledger went on crediting", before, during)
            # The client notices the broker gone when its socket says so: on a loaded box that can come
            # after the simulated outage's last interval; wait for it (bounded) rather than race it.
            noticed_by = time.monotonic() + WAIT_S
            while telemetry.connected and time.monotonic() < noticed_by:
                await asyncio.sleep(0.05)
            assert not telemetry.connected
            assert ALARM in handle.status.alarms
            assert telemetry.intervals_behind >= OUTAGE_INTERVALS - 1
            polled = sim.meters[0].reads - reads_before
            expected_polls = (clock.now() - outage_from) / 60  # one poll a minute (energy + instant, one read each)
            mosquitto.start()

            deadline = time.monotonic() + WAIT_S
            while True:
                credited = [start for start, *_ in await handle.ledger.intervals("flat-1", 0, 2**40)]
                if set(credited) <= set(_published(sub)):
                    break
                if time.monotonic() > deadline:
                    pytest.fail(f"credited {credited}, published {sorted(set(_published(sub)))}")
                await asyncio.sleep(0.1)
            await sub.wait(lambda: ALARM not in handle.status.alarms, "the telemetry alarm to clear")
            stored = await handle.ledger.intervals("flat-1", 0, 2**40)
    finally:
        stop.set()
        await asyncio.wait_for(daemon, 30)
        await sim.stop()

    starts = [start for start, *_ in stored]
    assert starts == list(range(starts[0], starts[-1] + INTERVAL_S, INTERVAL_S)), ("no gap in the credits", stored)
    assert [q for *_, q in stored] == ["A"] * len(stored), ("every interval measured: polling never stalled", stored)
    assert sum(1 for s in starts if s >= outage_from) >= OUTAGE_INTERVALS - 1, (outage_from, stored)
    assert polled >= 0.8 * expected_polls, (polled, expected_polls)
    published = _published(sub)
    assert set(starts) <= set(published), "every credit published once the broker is back"
    assert len(published) == len(set(published)), ("none twice", published)
