"""Meters that publish their register over MQTT.

One task owns one broker connection. It subscribes with QoS 1 on a persistent
session (clean_session=False and a stable client id), so messages published
while the gateway was disconnected are queued by the broker and delivered when
it comes back. Broker outages are retried with capped exponential backoff;
the first failure is logged as a warning, the rest of a streak at debug.

Each meter has a topic or a topic pattern (MQTT wildcards); a message goes to
the first meter, in configuration order, whose pattern matches. A payload that
cannot become a reading — malformed, oversized, wrongly typed, or on a topic no
meter claims — is counted, logged and kept raw in a bounded quarantine; nothing
a publisher sends can stop this task. The log gets the first rejection of a
streak and then a summary (:class:`gateway.rejections.RejectionLog`): a
publisher flooding junk cannot flood the journal.
QoS 1 is at-least-once: a redelivered copy of one of a meter's recent messages
(a broker resends what it had in flight when it restarted) is recognised and
dropped as a duplicate rather than quarantined; an older one (after the
gateway restarted) is recognised by the ledger as already stored.

A payload carries one value per channel (:mod:`gateway.channels`): the import register at the mapping's
value path and, where the mapping has one (``export_path``; Tasmota's ``ENERGY.ExportActive`` by default),
the export register, each handed on as a reading of its own with the payload's timestamp. A malformed
value of one channel is quarantined and counted like a malformed payload, and the other channel's value
of the same payload still counts.

A meter's own timestamp is not judged here but by the writer, against the
gateway's *trusted* clock (a Pi that booted in 1970 would otherwise call every
correct meter clock "in the future"): too far ahead of or behind the moment it
was received, or older than the meter's last reading, it is refused there and
the meter is shown with its clock wrong. Every reading carries the meter's
power ceiling (config ``max_power_w``, or the default ceiling, which is logged
at start): a value rising faster than the meter can measure is held as suspect.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Mapping

import aiomqtt
import structlog

from gateway.acquisition.payloads import parse_payload
from gateway.brokers import Broker
from gateway.channels import REGISTER_OF, Channel
from gateway.clock import Clock
from gateway.config import MqttConfig, MqttMeterConfig
from gateway.config.ceiling import mqtt_ceiling
from gateway.errors import PayloadError
from gateway.intervals import Reading
from gateway.rejections import RejectionLog
from gateway.status import GatewayStatus, MeterStatus, QuarantinedPayload

log = structlog.get_logger("gateway.mqtt")

RECONNECT_MIN_S = 1.0
RECONNECT_MAX_S = 60.0
"""Host seconds between reconnect attempts: a broker restart usually takes a few seconds."""
KEEPALIVE_S = 30
"""Broker pings: a dead TCP connection is noticed within 1.5 × this."""
QUARANTINE_BYTES = 1024
"""Raw bytes kept per quarantined payload: enough to see what is wrong, bounded memory."""
RECENT_MESSAGES = 100
"""Messages per meter remembered to recognise redeliveries: more than a broker keeps in flight
(mosquitto: 20 by default)."""

POWER_TOTAL = "power_total"
"""The live values an MQTT meter gives are named as profile quantities are: its registers (energy_import,
energy_export), and power when sent."""

Submit = Callable[[Reading], Awaitable[None]]


class MqttSource:
    def __init__(self, cfg: MqttConfig, clock: Clock, submit: Submit, status: GatewayStatus,
                 client_id: str) -> None:
        self.cfg = cfg
        self._clock = clock
        self._submit = submit
        self._status = status
        self._client_id = cfg.client_id or client_id
        self._meters = list(cfg.meters)
        self._patterns = [(aiomqtt.Wildcard(m.topic), m) for m in cfg.meters]
        self._recent: dict[str, deque[tuple[float, int | None, int | None]]] = {
            m.id: deque(maxlen=RECENT_MESSAGES) for m in cfg.meters}
        """Each meter's recent (time, import Wh, export Wh) passed on, to drop QoS 1 redeliveries. Not an
        order: a bogus stamp far ahead must not make the honest ones that follow look old."""
        self._rejections = RejectionLog(log, "payload_rejected", clock)
        self._export_rejections = RejectionLog(log, "payload_rejected", clock)
        self._ceilings: Mapping[str, float] = {m.id: mqtt_ceiling(m).watts for m in cfg.meters}
        for m in cfg.meters:
            status.meters.setdefault(m.id, MeterStatus(m.id, "mqtt", m.topic))
            ceiling = mqtt_ceiling(m)
            if ceiling.is_default:
                log.warning("meter_ceiling_default", meter=m.id, max_power_w=ceiling.watts, hint=ceiling.hint)

    async def run(self) -> None:
        if not self.cfg.meters:
            return
        broker = Broker.of(self.cfg)
        delay = RECONNECT_MIN_S
        failures = 0
        while True:
            try:
                async with broker.client(self._client_id, clean_session=False, keepalive=KEEPALIVE_S) as client:
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
            parsed = parse_payload(meter, raw, max_bytes=self.cfg.max_payload_bytes)
        except PayloadError as exc:
            self._quarantine(topic, exc.reason, raw, meter.id, str(exc))
            return
        stamp = parsed.stamp
        t = stamp if stamp is not None else self._clock.now()
        recent = self._recent[meter.id]
        key = (t, parsed.registers.get(Channel.IMPORT), parsed.registers.get(Channel.EXPORT))
        if stamp is not None and key in recent:
            self._status.payloads_rejected["duplicate"] += 1
            log.debug("payload_duplicate", topic=topic, meter=meter.id)
            return
        recent.append(key)
        for channel, problem in parsed.problems.items():
            # One channel's value is unusable: the payload is kept for it, the other channel's value counts.
            self._quarantine(topic, problem.reason, raw, meter.id, str(problem), channel=channel)
        status = self._status.meters[meter.id]
        # When the gateway heard from it, not what its clock says: a meter clock in the year 5138 must
        # not become the page's "last reading" (the writer judges the stamp, see the module docstring).
        heard = self._clock.now()
        status.read_ok(heard)
        for channel, wh in parsed.registers.items():
            self._log_for(channel).accepted(meter.id)
            if channel is Channel.IMPORT:
                status.last_register_wh = wh
            status.set_value(REGISTER_OF[channel], float(wh), "Wh", heard)
        if parsed.power_w is not None:
            status.last_power_w = parsed.power_w
            status.set_value(POWER_TOTAL, parsed.power_w, "W", heard)
        for channel, wh in parsed.registers.items():
            await self._submit(Reading(meter.id, round(t * 1000), wh, "mqtt", meter_clock=stamp is not None,
                                       max_power_w=self._ceilings[meter.id], channel=channel))

    def _log_for(self, channel: Channel) -> RejectionLog:
        """Streaks of each channel's rejections end with a good value of that channel, not of the other."""
        return self._export_rejections if channel is Channel.EXPORT else self._rejections

    def _quarantine(self, topic: str, reason: str, raw: bytes, meter: str | None = None, detail: str = "", *,
                    channel: Channel | None = None) -> None:
        """Count, keep and log a rejected payload; ``channel`` when only that channel's value was unusable."""
        self._status.payloads_rejected[reason] += 1
        if meter:
            self._status.meters[meter].rejected[reason] += 1
        self._status.quarantine.append(QuarantinedPayload(self._clock.now(), topic, reason, raw[:QUARANTINE_BYTES]))
        where = {} if channel is None else {"channel": channel.value}
        self._log_for(channel or Channel.IMPORT).rejected(meter, reason, topic=topic, detail=detail,
                                                          payload=raw[:200].decode("utf-8", "replace"), **where)
