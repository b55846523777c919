"""Closed intervals of both channels of one meter over a real mosquitto: each on its own topic, never colliding."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from stellar_sdk import Keypair

from gateway.brokers import Broker
from gateway.channels import Channel
from gateway.clock import SystemClock
from gateway.config import parse_config
from gateway.intervals import Reading
from gateway.ledger.store import Ledger
from gateway.status import GatewayStatus
from gateway.telemetry.model import describe
from gateway.telemetry.publisher import TelemetryPublisher
from tests.telemetry.test_telemetry_mqtt import T0, Subscriber, running

if TYPE_CHECKING:
    from tests.conftest import Broker as Mosquitto

PREFIX = "meter-gateway/gw"
STEPS = 6


async def test_import_and_export_intervals_of_one_meter_publish_on_their_own_topics(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    cfg = parse_config(f"""
gateway_id = "gw"
data_dir = "{tmp_path / 'data'}"
[time]
trust = "always"
[mqtt]
host = "127.0.0.1"
port = {mosquitto.port}
  [[mqtt.meters]]
  id = "house"
  topic = "tele/house/SENSOR"
  format = "tasmota"
[telemetry]
""", base_dir=tmp_path)
    assert cfg.telemetry is not None
    clock = SystemClock()
    status = GatewayStatus(cfg.gateway_id, "G", clock.now())
    ledger = await Ledger.open(cfg.data_dir, gateway_id=cfg.gateway_id, keypair=Keypair.random())
    publisher = TelemetryPublisher(cfg.telemetry, Broker.for_telemetry(cfg.telemetry, cfg.mqtt), cfg.gateway_id,
                                   describe(cfg, {}), status, ledger, clock)
    # A subscriber of the import topic as it was before channels, and one of every channel of the meter.
    old = Subscriber(mosquitto.port, [f"{PREFIX}/+/interval"])
    every = Subscriber(mosquitto.port, [f"{PREFIX}/house/interval/#"], identifier="every-channel")
    made = 0
    try:
        async with running(old.run(), every.run()):
            await old.wait(lambda: old.connected.is_set() and every.connected.is_set(), "subscribers")
            async with running(publisher.run()):
                for k in range(STEPS + 1):
                    t = T0 + 900 * k
                    # By day the house feeds in 250 Wh a quarter and draws 10; both registers in one payload.
                    result = await ledger.commit_readings(
                        [Reading("house", t * 1000, 1_000 + 10 * k, "mqtt", channel=Channel.IMPORT),
                         Reading("house", t * 1000, 50_000 + 250 * k, "mqtt", channel=Channel.EXPORT)],
                        now_ms=t * 1000)
                    made += result.credits_created
                await every.wait(lambda: len(every.on(PREFIX)) >= made, "every interval of both channels")
                await old.wait(lambda: len(old.on(PREFIX)) >= STEPS, "the import intervals")
    finally:
        await ledger.close()
    assert made == 2 * STEPS
    bodies = [(str(m.topic), json.loads(m.payload)) for m in every.on(PREFIX)]  # type: ignore[arg-type]
    keys = [(b["meter"], b["channel"], b["seq"]) for _, b in bodies]
    assert len(keys) == len(set(keys)) == 2 * STEPS, "no two messages share (meter, channel, seq)"
    for topic, body in bodies:
        assert topic == f"{PREFIX}/house/interval" + ("/export" if body["channel"] == "export" else "")
        assert body["wh"] == (250 if body["channel"] == "export" else 10)
    assert sorted(b["seq"] for _, b in bodies if b["channel"] == "export") == list(range(1, STEPS + 1))
    # The subscriber from before channels sees the import intervals only, as it always did.
    seen = [json.loads(m.payload) for m in old.on(PREFIX)]  # type: ignore[arg-type]
    assert {b["channel"] for b in seen} == {"import"}
    assert [b["wh"] for b in seen] == [10] * STEPS
