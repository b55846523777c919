"""MQTT meters against a real mosquitto: payload kinds, bad payloads, broker and gateway restarts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import aiomqtt
import structlog
from structlog.testing import capture_logs

from gateway.acquisition.mqtt import MqttSource
from gateway.clock import ManualClock, SystemClock
from gateway.config import MqttConfig
from gateway.intervals import Reading
from gateway.intervals.plausibility import DEFAULT_MAX_POWER_W
from gateway.rejections import RejectionLog
from gateway.status import GatewayStatus

if TYPE_CHECKING:
    from tests.conftest import Broker

DELIVERY_S = 5.0
"""Bound on waiting for messages to arrive; loopback delivery takes milliseconds."""


class Gateway:
    def __init__(self, broker: Broker, meters: list[dict[str, object]], **extra: object) -> None:
        self.cfg = MqttConfig.model_validate({"host": "127.0.0.1", "port": broker.port, "meters": meters, **extra})
        self.status = GatewayStatus("gw", "k", 0.0)
        self.readings: list[Reading] = []
        self.clock = SystemClock()

    async def _submit(self, r: Reading) -> None:
        self.readings.append(r)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[MqttSource]:
        source = MqttSource(self.cfg, self.clock, self._submit, self.status, client_id="gw-test")
        task = asyncio.create_task(source.run())
        try:
            async with asyncio.timeout(DELIVERY_S):
                while not self.status.mqtt_connected:
                    await asyncio.sleep(0.02)
            yield source
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            self.status.mqtt_connected = False

    async def wait_for(self, n_readings: int, rejected: int = 0) -> None:
        async with asyncio.timeout(DELIVERY_S):
            while len(self.readings) < n_readings or sum(self.status.payloads_rejected.values()) < rejected:
                await asyncio.sleep(0.02)


async def publish(broker: Broker, messages: list[tuple[str, bytes | str]]) -> None:
    # The publisher stands in for meters; a broker that has only just restarted may reset its first
    # connection, so it resumes from the first message not yet acknowledged (as a meter's client would).
    sent = 0
    for attempt in range(5):
        try:
            async with aiomqtt.Client("127.0.0.1", broker.port, identifier="publisher") as client:
                for topic, payload in messages[sent:]:
                    await client.publish(topic, payload, qos=1)
                    sent += 1
            return
        except aiomqtt.MqttError:
            if attempt == 4:
                raise
            await asyncio.sleep(0.2)


async def test_every_payload_kind(mosquitto: Broker) -> None:
    gw = Gateway(mosquitto, [
        {"id": "json", "topic": "site/json", "format": "json", "value_path": "a.0.e", "time_path": "ts", "unit": "Wh"},
        {"id": "plain", "topic": "site/+/plain", "format": "number", "unit": "kWh"},
        {"id": "tas", "topic": "tele/tasmota_1/SENSOR", "format": "tasmota", "time_zone": "Europe/Berlin"},
        {"id": "sml", "topic": "tele/sml/#", "format": "tasmota-sml", "value_path": "MT631.Total_in"},
    ])
    async with gw.running():
        await publish(mosquitto, [
            ("site/json", json.dumps({"ts": 1_700_000_000, "a": [{"e": 1234.4}]})),
            ("site/x/plain", "12.5"),
            ("tele/tasmota_1/SENSOR", json.dumps({"Time": "2024-05-01T12:00:00",
                                                  "ENERGY": {"Total": 3.21, "Power": 5}})),
            ("tele/sml/SENSOR", json.dumps({"Time": "2024-05-01T10:00:00", "MT631": {"Total_in": 7.5}})),
        ])
        await gw.wait_for(4)
    got = {r.meter: r for r in gw.readings}
    assert got["json"].register_wh == 1234
    assert got["json"].t_ms == 1_700_000_000_000
    assert got["plain"].register_wh == 12_500
    assert got["tas"].register_wh == 3210
    assert got["tas"].t_ms == 1_714_557_600_000
    assert got["sml"].register_wh == 7500
    assert got["sml"].t_ms == 1_714_557_600_000
    assert all(r.source == "mqtt" for r in gw.readings)


async def test_bad_payloads_are_counted_quarantined_and_harmless(mosquitto: Broker) -> None:
    gw = Gateway(mosquitto, [{"id": "m", "topic": "m/e", "format": "json", "value_path": "e", "time_path": "t",
                              "unit": "Wh"}], max_payload_bytes=256)
    bad: list[tuple[str, bytes | str]] = [
        ("m/e", b"{not json"),
        ("m/e", b"\xff\xfe"),
        ("m/e", json.dumps({"e": 1, "t": 1, "pad": "x" * 400})),
        ("m/e", json.dumps({"e": "lots", "t": 5})),
        ("m/e", json.dumps({"e": [1], "t": 5})),
        ("m/e", json.dumps({"e": 5, "t": 9})),   # passed on
        ("m/e", json.dumps({"e": 5, "t": 9})),   # a redelivered duplicate
        ("m/e", json.dumps({"e": 4, "t": 8})),   # older than the last: the ledger refuses it (out_of_order)
        ("m/e", "[" * 100),  # nested deeper than any meter, under the size limit
        ("m/e", json.dumps({"e": 1e30, "t": 9.5})),  # beyond any register: would not even fit the ledger
        ("m/e", json.dumps({"e": 7, "t": 99999999999})),  # a meter clock in the year 5138: the writer refuses it
        ("m/e", json.dumps({"e": 6, "t": 10})),  # still alive, not blocked by the future stamp
    ]
    async with gw.running():
        await publish(mosquitto, bad)
        await gw.wait_for(4, rejected=8)
    # Meter timestamps are judged by the writer against the trusted clock, not here (a Pi that booted
    # in 1970 would call every correct meter clock "in the future"): these pass on, with their ceiling.
    assert [(r.register_wh, r.t_ms) for r in gw.readings] == [(5, 9000), (4, 8000), (7, 99999999999000),
                                                              (6, 10000)]
    assert all(r.meter_clock and r.max_power_w == DEFAULT_MAX_POWER_W for r in gw.readings)
    last_heard = gw.status.meters["m"].last_read_t
    assert last_heard is not None
    assert abs(last_heard - gw.clock.now()) < 60, "when it was heard, not its clock"
    reasons = gw.status.payloads_rejected
    assert reasons["out_of_range"] == 1
    assert reasons["malformed"] == 3
    assert reasons["oversized"] == 1
    assert reasons["wrong_type"] == 2
    assert reasons["duplicate"] == 1
    assert len(gw.status.quarantine) == 7
    assert gw.status.quarantine[0].payload == b"{not json"


async def test_a_flood_of_junk_is_counted_in_full_and_logged_by_the_streak(mosquitto: Broker) -> None:
    gw = Gateway(mosquitto, [{"id": "m", "topic": "m/e", "format": "json", "value_path": "e", "unit": "Wh",
                              "max_power_w": 3700}])
    junk: list[tuple[str, bytes | str]] = [("m/e", b"{not json")] * 300 + [("m/e", b'{"e": "x"}')] * 100
    with capture_logs() as logs:
        async with gw.running():
            await publish(mosquitto, [*junk, ("m/e", json.dumps({"e": 5}))])
            await gw.wait_for(1, rejected=400)
    assert gw.status.payloads_rejected["malformed"] == 300
    assert gw.status.payloads_rejected["wrong_type"] == 100
    assert gw.status.meters["m"].rejected["malformed"] == 300, "every rejection still counts"
    assert gw.readings[0].max_power_w == 3700, "the configured ceiling travels with the reading"
    rejected = [e for e in logs if e["event"].startswith("payload_rejected")]
    # One line when each streak starts, one when the meter's good value ends it; before the fix, 400.
    assert [(e["event"], e.get("reason")) for e in rejected] == [
        ("payload_rejected", "malformed"), ("payload_rejected", "wrong_type"),
        ("payload_rejected_ended", "malformed"), ("payload_rejected_ended", "wrong_type")]
    assert [e.get("count") for e in rejected[2:]] == [300, 100]


def test_a_streak_that_goes_on_gets_one_summary_line_per_period() -> None:
    clock = ManualClock()
    with capture_logs() as logs:
        rejections = RejectionLog(structlog.get_logger("test"), "payload_rejected", clock, summary_s=300)
        for _ in range(2 * 600 + 1):  # two a second for ten minutes
            rejections.rejected("m", "malformed")
            clock.advance(0.5)
        rejections.accepted("m")
    assert [e["event"] for e in logs] == ["payload_rejected", "payload_rejected_continuing",
                                          "payload_rejected_continuing", "payload_rejected_ended"]
    assert logs[1]["since_last_line"] == 600
    assert logs[-1]["count"] == 1201


async def test_huge_numbers_are_quarantined_and_the_source_goes_on(mosquitto: Broker) -> None:
    gw = Gateway(mosquitto, [{"id": "m", "topic": "m/e", "format": "json", "value_path": "e", "unit": "Wh"}],
                 max_payload_bytes=8192)
    bad: list[tuple[str, bytes | str]] = [
        ("m/e", '{"e": 1' + "0" * 320 + "}"),  # valid JSON, too big for a float
        ("m/e", '{"e": 1' + "0" * 5000 + "}"),  # longer than Python converts from text
        ("m/e", json.dumps({"e": 5})),  # the same connection still delivers
    ]
    async with gw.running():
        await publish(mosquitto, bad)
        await gw.wait_for(1, rejected=2)
        assert gw.status.mqtt_connected
    assert [r.register_wh for r in gw.readings] == [5]
    assert gw.status.payloads_rejected["out_of_range"] == 1
    assert gw.status.payloads_rejected["malformed"] == 1


async def test_no_message_loss_across_gateway_and_broker_restarts(mosquitto: Broker) -> None:
    gw = Gateway(mosquitto, [{"id": "m", "topic": "m/e", "format": "json", "value_path": "e", "time_path": "t",
                              "unit": "Wh"}])

    def msgs(lo: int, hi: int) -> list[tuple[str, bytes | str]]:
        return [("m/e", json.dumps({"e": 100 + i, "t": 1_700_000_000 + i})) for i in range(lo, hi)]

    async with gw.running():  # first connection creates the persistent session
        await publish(mosquitto, msgs(0, 20))
        await gw.wait_for(20)
    # Gateway down: the broker queues QoS 1 messages for its session.
    await publish(mosquitto, msgs(20, 40))
    async with gw.running():
        await gw.wait_for(40)
        # Broker restart mid-stream: the gateway reconnects by itself; the persistent
        # broker keeps the session, so messages published meanwhile still arrive.
        await publish(mosquitto, msgs(40, 50))
        await asyncio.to_thread(mosquitto.stop)
        await asyncio.to_thread(mosquitto.start)
        await publish(mosquitto, msgs(50, 70))
        await gw.wait_for(70)
    values = [r.register_wh for r in gw.readings]
    # Nothing lost. QoS 1 is at-least-once: PUBACKs still in flight when the first gateway
    # stopped make the broker redeliver a few messages to the next one; the running
    # source drops any it recently passed on (older ones the ledger recognises as stored).
    assert sorted(set(values)) == list(range(100, 170))
    restart = values.index(120) if 120 in values else len(values)
    assert values[restart:] == sorted(set(values[restart:]))
