"""Meters that publish their register over MQTT.

One task owns one broker connection. It subscribes with QoS 1 on a persistent
session (clean_session=False and a stable client id), so messages published
while the gateway was disconnected are delivered when it comes back. Broker
outages are retried with capped exponential backoff.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

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

Submit = Callable[[Reading], Awaitable[None]]


class MqttSource:
    def __init__(self, cfg: MqttConfig, clock: Clock, submit: Submit, status: GatewayStatus,
                 client_id: str) -> None:
        self.cfg = cfg
        self._clock = clock
        self._submit = submit
        self._status = status
        self._client_id = cfg.client_id or client_id
        self._by_topic: dict[str, MqttMeterConfig] = {m.topic: m for m in cfg.meters}
        self._last_t: dict[str, float] = {}
        for m in cfg.meters:
            status.meters.setdefault(m.id, MeterStatus(m.id, "mqtt", m.topic))

    async def run(self) -> None:
        if not self.cfg.meters:
            return
        password = self.cfg.password_file.read_text().strip() if self.cfg.password_file else None
        delay = RECONNECT_MIN_S
        while True:
            try:
                async with aiomqtt.Client(self.cfg.host, self.cfg.port, identifier=self._client_id,
                                          username=self.cfg.username, password=password,
                                          clean_session=False, keepalive=30) as client:
                    for topic in self._by_topic:
                        await client.subscribe(topic, qos=1)
                    self._status.mqtt_connected = True
                    log.info("mqtt_connected", host=self.cfg.host, port=self.cfg.port, topics=len(self._by_topic))
                    delay = RECONNECT_MIN_S
                    async for message in client.messages:
                        await self._handle(str(message.topic), message.payload)
            except aiomqtt.MqttError as exc:
                self._status.mqtt_connected = False
                log.warning("mqtt_disconnected", error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)

    async def _handle(self, topic: str, payload: object) -> None:
        raw = payload if isinstance(payload, bytes) else str(payload).encode()
        meter = self._by_topic.get(topic)
        if meter is None:
            self._quarantine(topic, "unknown_topic", raw)
            return
        try:
            wh, stamp = parse_energy(meter, raw, max_bytes=self.cfg.max_payload_bytes)
        except PayloadError as exc:
            self._quarantine(topic, exc.reason, raw, meter.id, str(exc))
            return
        t = stamp if stamp is not None else self._clock.now()
        last = self._last_t.get(meter.id)
        if last is not None and t <= last:
            self._quarantine(topic, "out_of_order", raw, meter.id, f"timestamp {t} is not after {last}")
            return
        self._last_t[meter.id] = t
        status = self._status.meters[meter.id]
        status.read_ok(t)
        status.last_register_wh = wh
        await self._submit(Reading(meter.id, round(t * 1000), wh, "mqtt"))

    def _quarantine(self, topic: str, reason: str, raw: bytes, meter: str | None = None, detail: str = "") -> None:
        self._status.payloads_rejected[reason] += 1
        if meter:
            self._status.meters[meter].rejected[reason] += 1
        self._status.quarantine.append(QuarantinedPayload(self._clock.now(), topic, reason, raw[:1024]))
        log.warning("payload_rejected", topic=topic, meter=meter, reason=reason, detail=detail,
                    payload=raw[:200].decode("utf-8", "replace"))
