"""MQTT telemetry against a real mosquitto: HA discovery, live values, intervals exactly once across a
broker restart, an outage that neither slows polling nor loses an interval, and the daemon's last will."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import aiomqtt
import pytest
from stellar_sdk import Keypair

from gateway.acquisition.modbus import ModbusBus
from gateway.brokers import Broker
from gateway.clock import SystemClock
from gateway.config import parse_config
from gateway.intervals import Reading
from gateway.ledger.store import Ledger
from gateway.profiles import builtin_profile
from gateway.sim.load import LoadModel
from gateway.sim.modbus_sim import MeterSimulator, SimulatedMeter
from gateway.status import GatewayStatus, MeterStatus
from gateway.telemetry import publisher as publisher_module
from gateway.telemetry.model import describe
from gateway.telemetry.publisher import ALARM, TelemetryPublisher
from gateway.web.server import free_port

if TYPE_CHECKING:
    from tests.conftest import Broker as Mosquitto

SDM630 = builtin_profile("eastron-sdm630")
WAIT_S = 15.0
"""Bound on waiting for loopback deliveries and a reconnect (the publisher's backoff starts at 1 s)."""
RETAINED_MORE_S = 0.5
"""Host seconds to wait for retained messages beyond those expected (there must be none)."""
QUANTITIES = ["energy_import", "power_total", "voltage_l1", "current_l1", "frequency"]
POLLED = (*QUANTITIES, "energy_export")
"""What flat-1 publishes: its export register is polled like the import one (the export channel)."""
T0 = 1_767_225_600  # 2026-01-01T00:00Z, an interval boundary


@dataclass
class Subscriber:
    """A consumer with a persistent session (QoS 1): it reconnects by itself after a broker restart."""

    port: int
    topics: list[str]
    messages: list[aiomqtt.Message] = field(default_factory=list)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    identifier: str = "test-subscriber"

    async def run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client("127.0.0.1", self.port, identifier=self.identifier,
                                          clean_session=False) as client:
                    for topic in self.topics:
                        await client.subscribe(topic, qos=1)
                    self.connected.set()
                    async for message in client.messages:
                        self.messages.append(message)
            except aiomqtt.MqttError:
                self.connected.clear()
                await asyncio.sleep(0.1)

    def on(self, prefix: str) -> list[aiomqtt.Message]:
        return [m for m in self.messages if str(m.topic).startswith(prefix)]

    def latest(self, topic: str) -> aiomqtt.Message | None:
        found = [m for m in self.messages if str(m.topic) == topic]
        return found[-1] if found else None

    async def wait(self, check: object, what: str) -> None:
        deadline = time.monotonic() + WAIT_S
        while not check():  # type: ignore[operator]
            if time.monotonic() > deadline:
                pytest.fail(f"waited {WAIT_S} s for {what}; got {[str(m.topic) for m in self.messages][-20:]}")
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running(*coros: object) -> AsyncIterator[list[asyncio.Task[None]]]:
    tasks = [asyncio.create_task(c) for c in coros]  # type: ignore[arg-type]
    try:
        yield tasks
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _config(tmp_path: Path, sim_port: int, broker_port: int, *, queue_size: int = 1000) -> str:
    return f"""
gateway_id = "gw.tele"
data_dir = "{tmp_path / 'data'}"
[time]
trust = "always"
[logging]
format = "json"
[web]
enabled = false
[[buses]]
name = "line"
host = "127.0.0.1"
port = {sim_port}
timeout_s = 0.5
retries = 0
  [[buses.meters]]
  id = "flat-1"
  unit_id = 1
  profile = "eastron-sdm630"
  poll_s = 1
  poll_instant_s = 0.5
  nmi = "NMI0000001"
  quantities = {QUANTITIES!r}
[mqtt]
host = "127.0.0.1"
port = {broker_port}
  [[mqtt.meters]]
  id = "plug"
  topic = "tele/plug/SENSOR"
  format = "tasmota"
[telemetry]
queue_size = {queue_size}
"""


async def test_discovery_and_live_values_for_every_polled_quantity(tmp_path: Path, mosquitto: Mosquitto) -> None:
    clock = SystemClock()
    sim = MeterSimulator([SimulatedMeter("flat-1", 1, SDM630, LoadModel.for_meter("flat-1", math.floor(clock.now())))],
                         clock, port=free_port())
    await sim.start()
    cfg = parse_config(_config(tmp_path, sim.port, mosquitto.port), base_dir=tmp_path)
    assert cfg.telemetry is not None
    status = GatewayStatus(cfg.gateway_id, "G", clock.now())

    async def submit(_: Reading) -> None:
        return None

    bus = ModbusBus(cfg.buses[0], {"flat-1": SDM630}, clock, submit, status, use_lock=False)
    status.meters["plug"] = MeterStatus("plug", "mqtt", "tele/plug/SENSOR")
    ledger = await Ledger.open(cfg.data_dir, gateway_id=cfg.gateway_id, keypair=Keypair.random())
    publisher = TelemetryPublisher(cfg.telemetry, Broker.for_telemetry(cfg.telemetry, cfg.mqtt), cfg.gateway_id,
                                   describe(cfg, {"flat-1": SDM630}), status, ledger, clock)
    sub = Subscriber(mosquitto.port, ["homeassistant/#", "meter-gateway/#"])
    prefix = "meter-gateway/gw.tele"
    try:
        async with running(sub.run()):
            async with running(bus.run(), publisher.run()):
                await sub.wait(lambda: all(sub.latest(f"{prefix}/flat-1/{q}") for q in POLLED), "every quantity")
                status.meters["plug"].read_ok(clock.now())
                status.meters["plug"].set_value("power_total", 512.0, "W", clock.now())
                await sub.wait(lambda: sub.latest(f"{prefix}/plug/power_total"), "the MQTT meter's power")
                await sub.wait(lambda: (m := sub.latest(f"{prefix}/plug/availability")) and m.payload == b"online",
                               "the MQTT meter's availability")
            # Cancelled like the daemon's stop: the gateway says it is going.
            await sub.wait(lambda: (m := sub.latest(f"{prefix}/status")) and m.payload == b"offline",
                           "offline status")
        # Someone subscribing later (Home Assistant after a restart) gets discovery and state from the broker.
        # Discovery of 6 + 3 sensors (the plug's export: Tasmota's ExportActive), 6 + 1 values (the plug's registers
        # never came), 2 availabilities, the status.
        late = await _retained(mosquitto.port, ["homeassistant/#", f"{prefix}/#"], 9 + 7 + 2 + 1)
    finally:
        await ledger.close()
        await sim.stop()

    configs = {str(m.topic): json.loads(m.payload) for m in sub.on("homeassistant/")}  # type: ignore[arg-type]
    plug = {f"homeassistant/sensor/gw_tele/plug_{q}/config" for q in ("energy_import", "energy_export", "power_total")}
    assert set(configs) == {f"homeassistant/sensor/gw_tele/flat-1_{q}/config" for q in POLLED} | plug
    states = {f"{prefix}/status", f"{prefix}/plug/power_total"} | {f"{prefix}/flat-1/{q}" for q in POLLED}
    assert set(late) == set(configs) | states | {f"{prefix}/{m}/availability" for m in ("flat-1", "plug")}, "retained"
    assert late[f"{prefix}/status"] == b"offline"
    assert json.loads(late["homeassistant/sensor/gw_tele/flat-1_frequency/config"]) == configs[
        "homeassistant/sensor/gw_tele/flat-1_frequency/config"]
    expected = {"energy_import": ("energy", "total_increasing", "Wh"),
                "energy_export": ("energy", "total_increasing", "Wh"), "power_total": ("power", "measurement", "W"),
                "voltage_l1": ("voltage", "measurement", "V"), "current_l1": ("current", "measurement", "A"),
                "frequency": ("frequency", "measurement", "Hz")}
    for quantity, (device_class, state_class, unit) in expected.items():
        config = configs[f"homeassistant/sensor/gw_tele/flat-1_{quantity}/config"]
        assert (config["device_class"], config["state_class"], config["unit_of_measurement"]) == (
            device_class, state_class, unit)
        assert config["state_topic"] == f"{prefix}/flat-1/{quantity}"
        assert config["unique_id"] == f"meter-gateway_gw_tele_flat-1_{quantity}"
        assert config["availability"] == [
            {"topic": f"{prefix}/status", "payload_available": "online", "payload_not_available": "offline"},
            {"topic": f"{prefix}/flat-1/availability", "payload_available": "online",
             "payload_not_available": "offline"}]
        assert config["availability_mode"] == "all"
        assert config["device"] == {"identifiers": ["meter-gateway_gw_tele_flat-1"], "name": "Meter flat-1",
                                    "manufacturer": "Eastron", "model": "SDM630", "serial_number": "NMI0000001"}
        assert config["origin"]["name"] == "meter-gateway"
    assert configs["homeassistant/sensor/gw_tele/plug_power_total/config"]["device"]["model"] == "MQTT meter"
    values = {q: float(sub.latest(f"{prefix}/flat-1/{q}").payload) for q in QUANTITIES}  # type: ignore[union-attr,arg-type]
    assert values["frequency"] == 50.0
    assert values["voltage_l1"] == pytest.approx(230.0)
    assert values["energy_import"] == int(values["energy_import"]) > 0
    assert float(sub.latest(f"{prefix}/plug/power_total").payload) == 512  # type: ignore[union-attr,arg-type]
    assert status.telemetry is not None
    assert status.telemetry.values_published >= len(QUANTITIES)
    assert status.telemetry.failures == 0


async def _retained(port: int, topics: list[str], expected: int) -> dict[str, bytes]:
    """What the broker holds retained under ``topics`` (delivered at once on subscribing, flagged retained):
    until ``expected`` topics came (bounded by WAIT_S, a loaded box is slow), then RETAINED_MORE_S for any more."""
    found: dict[str, bytes] = {}
    async with aiomqtt.Client("127.0.0.1", port, identifier="late-subscriber") as client:
        for topic in topics:
            await client.subscribe(topic, qos=1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(WAIT_S) as deadline:
                async for message in client.messages:
                    assert message.retain
                    found[str(message.topic)] = bytes(message.payload)  # type: ignore[arg-type]
                    if len(found) == expected:
                        deadline.reschedule(asyncio.get_running_loop().time() + RETAINED_MORE_S)
    return found


def _intervals(sub: Subscriber) -> list[tuple[str, int]]:
    return [(body["meter"], body["seq"]) for body in (json.loads(m.payload) for m in sub.on("meter-gateway/")  # type: ignore[arg-type]
                                                      if str(m.topic).endswith("/interval"))]


async def _commit(ledger: Ledger, first: int, last: int) -> int:
    """Readings of meters a and b at quarter-hour boundaries first..last: last - first intervals each."""
    made = 0
    for k in range(first, last + 1):
        t = T0 + 900 * k
        result = await ledger.commit_readings([Reading("a", t * 1000, 1000 + 100 * k),
                                               Reading("b", t * 1000, 5000 + 250 * k)], now_ms=t * 1000)
        made += result.credits_created
    return made


async def test_intervals_exactly_once_across_a_broker_restart_and_polling_never_waits(
        tmp_path: Path, mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(publisher_module, "RECONNECT_MAX_S", 1.0)  # back within a second of the broker, not 4
    clock = SystemClock()
    sim = MeterSimulator([SimulatedMeter("flat-1", 1, SDM630, LoadModel.for_meter("flat-1", math.floor(clock.now())))],
                         clock, port=free_port())
    await sim.start()
    cfg = parse_config(_config(tmp_path, sim.port, mosquitto.port, queue_size=10), base_dir=tmp_path)
    assert cfg.telemetry is not None
    status = GatewayStatus(cfg.gateway_id, "G", clock.now())
    polls: list[float] = []

    async def submit(reading: Reading) -> None:
        polls.append(reading.t_ms / 1000)

    bus = ModbusBus(cfg.buses[0], {"flat-1": SDM630}, clock, submit, status, use_lock=False)
    ledger = await Ledger.open(cfg.data_dir, gateway_id=cfg.gateway_id, keypair=Keypair.random())
    committed = asyncio.Event()
    publisher = TelemetryPublisher(cfg.telemetry, Broker.for_telemetry(cfg.telemetry, cfg.mqtt), cfg.gateway_id,
                                   describe(cfg, {"flat-1": SDM630}), status, ledger, clock, wakeup=lambda: committed)
    sub = Subscriber(mosquitto.port, ["meter-gateway/+/+/interval"])
    try:
        async with running(sub.run(), bus.run(), publisher.run()):
            await sub.wait(lambda: sub.connected.is_set() and status.telemetry and status.telemetry.connected,
                           "both connected")
            made = await _commit(ledger, 0, 8)
            committed.set()
            await sub.wait(lambda: len(_intervals(sub)) >= made, "the first intervals")
            assert made == 16
            # Between bursts, as a broker restart usually falls: the subscriber's acknowledgements have reached
            # the broker (stopped at once, it would redeliver the last ones to the subscriber itself: QoS 1).
            await asyncio.sleep(0.5)
            mosquitto.stop()
            outage_start = clock.now()
            made += await _commit(ledger, 8, 20)  # the ledger goes on: 24 more intervals while the broker is away
            committed.set()
            await asyncio.sleep(3.0)
            outage_s = clock.now() - outage_start
            during = [t for t in polls if t >= outage_start]
            assert status.telemetry is not None
            assert not status.telemetry.connected
            assert ALARM in status.alarms
            assert "closed intervals wait in the ledger" in status.alarms[ALARM]
            dropped = status.telemetry.values_dropped
            mosquitto.start()
            await sub.wait(lambda: len(_intervals(sub)) >= made, "the intervals closed during the outage")
            await sub.wait(lambda: ALARM not in status.alarms, "the alarm to clear")
            await asyncio.sleep(0.5)  # anything sent twice would have arrived by now
    finally:
        await ledger.close()
        await sim.stop()
    got = _intervals(sub)
    assert made == 40
    assert sorted(got) == sorted(set(got)), "no interval published twice"
    assert sorted(got) == [(m, seq) for m in ("a", "b") for seq in range(1, 21)], "none lost"
    for meter in ("a", "b"):
        seqs = [seq for m, seq in got if m == meter]
        assert seqs == sorted(seqs), "in order"
    # Polling went on at its pace while the broker was down (energy every 1 s), and only the oldest live values
    # were dropped: appending to the queue is all a poll does.
    assert len(during) >= outage_s - 1.5, (len(during), outage_s)
    assert dropped > 0
    assert status.telemetry.failures >= 1
    assert status.telemetry.intervals_published == 40
    with contextlib.closing(__import__("sqlite3").connect(tmp_path / "data" / "ledger.db")) as db:
        assert db.execute("SELECT published_id FROM telemetry_cursor WHERE sink='mqtt'").fetchone() == (40,)


async def test_the_daemon_publishes_and_its_last_will_says_offline_when_it_is_killed(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    clock = SystemClock()
    sim = MeterSimulator([SimulatedMeter("flat-1", 1, SDM630, LoadModel.for_meter("flat-1", math.floor(clock.now())))],
                         clock, port=free_port())
    await sim.start()
    config = tmp_path / "gateway.toml"
    config.write_text(_config(tmp_path, sim.port, mosquitto.port), encoding="utf-8")
    sub = Subscriber(mosquitto.port, ["homeassistant/#", "meter-gateway/#"])
    prefix = "meter-gateway/gw.tele"
    log = tmp_path / "daemon.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "gateway", "run", "--config", str(config),
                                                    stdout=out, stderr=subprocess.STDOUT)
    try:
        async with running(sub.run()):
            try:
                # Discovery: flat-1's polled quantities, the plug's registers (import, Tasmota's export) and power.
                await sub.wait(lambda: all(sub.latest(f"{prefix}/flat-1/{q}") for q in POLLED)
                               and len({str(m.topic) for m in sub.on("homeassistant/")}) == len(POLLED) + 3,
                               "the daemon's telemetry")
            except BaseException:
                print(log.read_text()[-3000:])
                raise
            assert sub.latest(f"{prefix}/status").payload == b"online"  # type: ignore[union-attr]
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            await sub.wait(lambda: sub.latest(f"{prefix}/status").payload == b"offline",  # type: ignore[union-attr]
                           "the last will")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await sim.stop()
