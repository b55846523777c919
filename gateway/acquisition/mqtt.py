"""Meters that publish their register over MQTT.

One task owns one broker connection. It subscribes with QoS 1 on a persistent
session (clean_session=False and a stable client id), so messages published
while the gateway was disconnected are queued by the broker and delivered when
it comes back. Broker outages are retried with capped exponential backoff;
the first failure is logged as a warning, the rest of a streak at debug.

Each meter has a topic or a topic pattern (MQTT wildcards); a message goes to
the first meter, in configuration order, whose pattern matches. A payload that
cannot become a reading — malformed, oversized, wrongly typed, older than the
last accepted one, or on a topic no meter claims — is counted, logged and kept
raw in a bounded quarantine; nothing a publisher sends can stop this task.
QoS 1 is at-least-once: a redelivered copy of the last accepted message is
recognised and dropped as a duplicate rather than quarantined.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

import aiomqtt
import structlog

from gateway.acquisition.payloads import parse_energy
from gateway.clock import Clock
from gateway.config import MqttConfig, MqttMeterConfig
from gateway.errors import PayloadError
from gateway.intervals import Reading
from gateway.status import GatewayStatus, MeterStatus, QuarantinedPayload

log = structlog.get_logger("gateway.mqtt")

RECONNECT_MIN_S = 1.0
RECONNECT_MAX_S = 60.0
"""Host seconds between reconnect attempts: a broker restart usually takes a few seconds."""
KEEPALIVE_S = 30
"""Broker pings: a dead TCP connection is noticed within 1.5 × this."""
QUARANTINE_BYTES = 1024
"""Raw bytes kept per quarantined payload: enough to see what is wrong, bounded memory."""

Submit = Callable[[Reading], Awaitable[None]]

FUTURE_TOLERANCE_S = 300.0
"""How far ahead of the gateway's clock a meter's own timestamp may be (meter clocks drift;
minutes are normal, days are a broken clock or a seconds/milliseconds mix-up)."""


class MqttSource:
    def __init__(self, cfg: MqttConfig, clock: Clock, submit: Submit, status: GatewayStatus,
                 client_id: str, last_t: Mapping[str, float] | None = None) -> None:
        """``last_t``: each meter's last stored reading time (from the ledger), so messages the
        broker redelivers after a restart are recognised as old instead of stored twice."""
        self.cfg = cfg
        self._clock = clock
        self._submit = submit
        self._status = status
        self._client_id = cfg.client_id or client_id
        self._meters = list(cfg.meters)
        self._patterns = [(aiomqtt.Wildcard(m.topic), m) for m in cfg.meters]
        self._last: dict[str, tuple[float, int | None]] = {m: (t, None) for m, t in (last_t or {}).items()}
        for m in cfg.meters:
            status.meters.setdefault(m.id, MeterStatus(m.id, "mqtt", m.topic))

    async def run(self) -> None:
        if not self.cfg.meters:
            return
        password = self.cfg.password_file.read_text().strip() if self.cfg.password_file else None
        delay = RECONNECT_MIN_S
        failures = 0
        while True:
            try:
                async with aiomqtt.Client(self.cfg.host, self.cfg.port, identifier=self._client_id,
                                          username=self.cfg.username, password=password,
                                          clean_session=False, keepalive=KEEPALIVE_S) as client:
                    for topic in dict.fromkeys(m.topic for m in self._meters):
                        await client.subscribe(topic, qos=1)
                    self._status.mqtt_connected = True
                    log.info("mqtt_connected", host=self.cfg.host, port=self.cfg.port, topics=len(self._meters))
                    delay = RECONNECT_MIN_S
                    failures = 0
                    async for message in client.messages:
                        await self._handle_safely(str(message.topic), message.payload)
            except aiomqtt.MqttError as exc:
                self._status.mqtt_connected = False
                failures += 1
                (log.warning if failures == 1 else log.debug)("mqtt_disconnected", error=str(exc),
                                                              retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)

    def meter_for(self, topic: str) -> MqttMeterConfig | None:
        t = aiomqtt.Topic(topic)
        for pattern, meter in self._patterns:
            if t.matches(pattern):
                return meter
        return None

    async def _handle_safely(self, topic: str, payload: object) -> None:
        """A payload must never end the source: the messages queued behind it are already acknowledged."""
        try:
            await self._handle(topic, payload)
        except Exception as exc:
            # A bug in handling, not a bad payload (those raise PayloadError): keep the evidence, go on.
            log.exception("payload_handling_failed", topic=topic)
            raw = payload if isinstance(payload, bytes) else str(payload).encode()
            self._quarantine(topic, "internal_error", raw, None, repr(exc))

    async def _handle(self, topic: str, payload: object) -> None:
        raw = payload if isinstance(payload, bytes | bytearray) else str(payload).encode()
        raw = bytes(raw)
        meter = self.meter_for(topic)
        if meter is None:
            self._quarantine(topic, "unknown_topic", raw)
            return
        try:
            wh, stamp = parse_energy(meter, raw, max_bytes=self.cfg.max_payload_bytes)
        except PayloadError as exc:
            self._quarantine(topic, exc.reason, raw, meter.id, str(exc))
            return
        now = self._clock.now()
        t = stamp if stamp is not None else now
        if stamp is not None and stamp > now + FUTURE_TOLERANCE_S:
            # A meter clock far ahead would make the engine fill (and bill) intervals that have not
            # happened, then block every honest payload as out of order.
            self._quarantine(topic, "future_timestamp", raw, meter.id,
                             f"timestamp {stamp:.0f} is {stamp - now:.0f} s ahead of the gateway's clock")
            return
        last = self._last.get(meter.id)
        # Only a meter's own timestamps can be out of order. A reading stamped by our clock is
        # placed by the writer, which holds it while time is untrusted (a Pi booting in 1970
        # would otherwise quarantine every message as older than the last stored one).
        if stamp is not None and last is not None and t <= last[0]:
            if (t, wh) == last:
                self._status.payloads_rejected["duplicate"] += 1
                log.debug("payload_duplicate", topic=topic, meter=meter.id)
                return
            self._quarantine(topic, "out_of_order", raw, meter.id, f"timestamp {t} is not after {last[0]}")
            return
        self._last[meter.id] = (t, wh)
        status = self._status.meters[meter.id]
        status.read_ok(t)
        status.last_register_wh = wh
        await self._submit(Reading(meter.id, round(t * 1000), wh, "mqtt", meter_clock=stamp is not None,
                                   max_power_w=meter.max_power_w))

    def _quarantine(self, topic: str, reason: str, raw: bytes, meter: str | None = None, detail: str = "") -> None:
        self._status.payloads_rejected[reason] += 1
        if meter:
            self._status.meters[meter].rejected[reason] += 1
        self._status.quarantine.append(QuarantinedPayload(self._clock.now(), topic, reason, raw[:QUARANTINE_BYTES]))
        log.warning("payload_rejected", topic=topic, meter=meter, reason=reason, detail=detail,
                    payload=raw[:200].decode("utf-8", "replace"))
