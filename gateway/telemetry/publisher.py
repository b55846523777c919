"""The telemetry task: one broker connection, live values from the queue, intervals from the ledger.

One loop per connection, in turn: meter availability that changed, the queued live values, the next
closed intervals. Publishes with QoS ≥ 1 are pipelined (paho keeps their order on the wire) and awaited
for the broker's acknowledgement; the intervals' cursor moves only over acknowledged ones, in order, and
is stored in the ledger after every batch. A failed publish or connection ends the connection; the loop
reconnects with capped backoff (the first failure of a streak is a warning, the rest debug), and on every
connect announces itself again: status ``online``, the discovery configs, every meter's availability and
the newest value of every quantity (so retained state is right whatever the queue dropped meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence

import aiomqtt
import structlog

from gateway.brokers import Broker
from gateway.clock import Clock
from gateway.config import GatewayConfig
from gateway.config.model import TelemetryConfig
from gateway.errors import ConfigError
from gateway.ledger.store import Ledger
from gateway.profiles import Profile
from gateway.status import GatewayStatus, LiveValue, MeterHealth, TelemetryStatus
from gateway.telemetry import outbox
from gateway.telemetry.model import (
    OFFLINE,
    ONLINE,
    IntervalMessage,
    MeterTelemetry,
    Topics,
    describe,
    discovery_messages,
    value_payload,
)
from gateway.telemetry.queue import LiveQueue

log = structlog.get_logger("gateway.telemetry")

SINK = "mqtt"
"""This publisher's row in ``telemetry_cursor``."""
ALARM = "telemetry"
CONNECT_TIMEOUT_S = 10.0
"""Host seconds for the broker to accept the connection (TLS handshake included) and for each acknowledgement."""
KEEPALIVE_S = 30
"""Broker pings: a dead connection is noticed within 1.5 × this, and the broker then sends the last will."""
RECONNECT_MIN_S = 1.0
RECONNECT_MAX_S = 60.0
"""Host seconds between connection attempts: a broker restart takes a few seconds; a long outage is not hammered."""
IDLE_S = 5.0
"""Longest wait with nothing queued: meter availability is looked at least this often."""
INTERVAL_BATCH = 100
"""Intervals read and published per step; the cursor is stored after each (one small write per batch)."""
IN_FLIGHT = 10
"""Publishes awaiting their acknowledgement at once (aiomqtt warns above 10 pending calls)."""
GOODBYE_S = 0.15
"""Host seconds the ``offline`` status may take at shutdown: the daemon cancels a task again after 0.2 s. If it
does not make it, the broker still sends the last will once it notices the connection gone."""


Message = tuple[str, bytes, int, bool]
"""(topic, payload, QoS, retain)"""


class _Broken(Exception):
    """A publish failed: the connection is not to be trusted any more."""

    def __init__(self, message: str, done: int) -> None:
        super().__init__(message)
        self.done = done
        """How many of the messages, from the first, were acknowledged before the failure."""


class TelemetryPublisher:
    """Construct after the meter sources (it attaches to their live values), then ``await run()``."""

    def __init__(self, cfg: TelemetryConfig, broker: Broker, gateway_id: str, meters: Iterable[MeterTelemetry],
                 status: GatewayStatus, ledger: Ledger, clock: Clock, *,
                 wakeup: Callable[[], asyncio.Event] | None = None) -> None:
        self.cfg = cfg
        self.broker = broker
        self.client_id = cfg.client_id or f"meter-gateway-{gateway_id}-telemetry"
        self.topics = Topics(cfg.topic_prefix.replace("{gateway_id}", gateway_id), cfg.discovery_prefix, gateway_id)
        self.meters = {m.meter: m for m in meters}
        self.status = status
        self.ledger = ledger
        self.clock = clock
        self.queue = LiveQueue(cfg.queue_size)
        self.state = TelemetryStatus(broker.where)
        status.telemetry = self.state
        self._wakeup = wakeup
        self._cursor: int | None = None
        self._availability: dict[str, str] = {}
        for meter in self.meters.values():
            if (meter_status := status.meters.get(meter.meter)) is not None:
                meter_status.value_sink = self._offer

    @classmethod
    def configured(cls, cfg: GatewayConfig, profiles: Mapping[str, Profile], status: GatewayStatus, ledger: Ledger,
                   clock: Clock, *, wakeup: Callable[[], asyncio.Event] | None = None) -> TelemetryPublisher:
        """The publisher ``[telemetry]`` asks for, for every configured meter (the daemon's way in)."""
        assert cfg.telemetry is not None
        return cls(cfg.telemetry, Broker.for_telemetry(cfg.telemetry, cfg.mqtt), cfg.gateway_id,
                   describe(cfg, profiles), status, ledger, clock, wakeup=wakeup)

    def _offer(self, meter: str, quantity: str, value: LiveValue) -> None:
        described = self.meters.get(meter)
        if described is not None and quantity in described.units:
            self.queue.offer(meter, quantity, value)
            self.state.values_dropped = self.queue.dropped

    # ---- the connection ---------------------------------------------------------------------------

    async def run(self) -> None:
        now_ms = int(self.clock.now() * 1000)
        if self.cfg.intervals:
            self._cursor = await outbox.cursor(self.ledger, SINK, now_ms=now_ms)
        delay = RECONNECT_MIN_S
        streak = 0
        will = aiomqtt.Will(self.topics.status, OFFLINE.encode(), qos=1, retain=True)
        while True:
            try:
                async with self.broker.client(self.client_id, clean_session=True, keepalive=KEEPALIVE_S,
                                              timeout=CONNECT_TIMEOUT_S, will=will) as client:
                    self.state.connected = True
                    self.status.alarms.pop(ALARM, None)
                    log.info("telemetry_connected", broker=self.broker.where, prefix=self.topics.prefix,
                             after_failures=streak)
                    delay, streak = RECONNECT_MIN_S, 0
                    try:
                        await self._announce(client)
                        await self._serve(client)
                    except asyncio.CancelledError:
                        with contextlib.suppress(aiomqtt.MqttError, TimeoutError, _Broken):
                            async with asyncio.timeout(GOODBYE_S):
                                await client.publish(self.topics.status, OFFLINE, qos=1, retain=True)
                        raise
            except (aiomqtt.MqttError, TimeoutError, OSError, _Broken, ConfigError) as exc:
                # ConfigError: TLS files that cannot be used (check-config says which); alarmed and retried
                self._failed(exc, streak, delay)
                streak += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)
            finally:
                self.state.connected = False

    def _failed(self, exc: BaseException, streak: int, retry_in: float) -> None:
        error = str(exc) or type(exc).__name__
        if self.broker.tls is not None and not self.state.connected and "timed out" in error.lower():
            # TLS 1.3: a broker that refuses the client certificate says so after the handshake, and paho only logs it.
            error += (" (over TLS this is often the broker refusing this box's client certificate: check cert_file "
                      "and key_file, and that the broker trusts the CA that signed it)")
        self.state.failures += 1
        if self._cursor is not None:  # while away, what waits is only counted here (at every attempt)
            self.state.intervals_behind = max(0, self.ledger.max_credit_id - self._cursor)
        self.state.last_error = error
        self.state.last_error_t = self.clock.now()
        self.status.alarms[ALARM] = (
            f"Telemetry cannot reach the MQTT broker {self.broker.where} ({self.state.failures} failures): {error}. "
            f"Live values are dropped oldest first ({self.queue.dropped} so far); closed intervals wait in the "
            f"ledger ({self.state.intervals_behind} now) and are published when it is back.")
        (log.warning if streak == 0 else log.debug)("telemetry_disconnected", broker=self.broker.where, error=error,
                                                    failures=self.state.failures, retry_in_s=retry_in)

    async def _publish_all(self, client: aiomqtt.Client, messages: Sequence[Message]) -> int:
        """Publish in order, up to IN_FLIGHT awaiting acknowledgement; how many, from the first, went through.

        Raises _Broken after the acknowledged ones are counted, so the caller can keep what did arrive.
        """
        done = 0
        for start in range(0, len(messages), IN_FLIGHT):
            chunk = messages[start:start + IN_FLIGHT]
            results = await asyncio.gather(
                *(client.publish(topic, payload, qos=qos, retain=retain, timeout=CONNECT_TIMEOUT_S)
                  for topic, payload, qos, retain in chunk), return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    if isinstance(result, asyncio.CancelledError):
                        raise result
                    raise _Broken(f"publish failed: {result or type(result).__name__}", done) from result
                done += 1
        return done

    async def _announce(self, client: aiomqtt.Client) -> None:
        self.queue.clear()  # superseded: the newest value of every quantity goes out below
        discovery: list[Message] = []
        if self.cfg.discovery:
            discovery = [(topic, payload, 1, True) for topic, payload in discovery_messages(self.topics,
                                                                                             self.meters.values())]
        self._availability.clear()
        values = [self._value_message(meter.meter, quantity, value)
                  for meter in self.meters.values() if (meter_status := self.status.meters.get(meter.meter))
                  for quantity, value in meter_status.values.items() if quantity in meter.units]
        await self._publish_all(client, [(self.topics.status, ONLINE.encode(), 1, True), *discovery,
                                         *self._availability_changes(), *values])
        self.state.discovery_published += len(discovery)
        self.state.values_published += len(values)

    def _value_message(self, meter: str, quantity: str, value: LiveValue) -> Message:
        return self.topics.value(meter, quantity), value_payload(value.value), self.cfg.qos, self.cfg.retain

    def _availability_changes(self) -> list[Message]:
        out = []
        for meter in self.meters:
            meter_status = self.status.meters.get(meter)
            health = meter_status.health if meter_status else MeterHealth.UNKNOWN
            now = ONLINE if health in (MeterHealth.ONLINE, MeterHealth.DEGRADED) else OFFLINE
            if self._availability.get(meter) != now:
                self._availability[meter] = now
                out.append((self.topics.availability(meter), now.encode(), 1, True))
        return out

    # ---- serving one connection -------------------------------------------------------------------

    async def _serve(self, client: aiomqtt.Client) -> None:
        while True:
            changes = self._availability_changes()
            if changes:
                await self._publish_all(client, changes)
            items = self.queue.take(INTERVAL_BATCH)
            if items:
                self.state.values_published += await self._publish_all(
                    client, [self._value_message(i.meter, i.quantity, i.value) for i in items])
            published_intervals = await self._intervals(client) if self.cfg.intervals else 0
            if not items and not published_intervals:
                await self._idle()

    async def _intervals(self, client: aiomqtt.Client) -> int:
        assert self._cursor is not None
        batch = await outbox.after(self.ledger, self._cursor, INTERVAL_BATCH)
        self.state.intervals_behind = max(0, self.ledger.max_credit_id - self._cursor)
        if not batch:
            return 0
        qos: int = max(1, self.cfg.qos)
        messages: list[Message] = [(self.topics.interval(m.meter, m.channel), m.payload, qos, False) for m in batch]
        try:
            sent = await self._publish_all(client, messages)
        except _Broken as broken:
            await self._advance(batch[:broken.done])  # what was acknowledged is kept; the rest goes again
            raise
        await self._advance(batch[:sent])
        return sent

    async def _advance(self, published: list[IntervalMessage]) -> None:
        if not published or self._cursor is None or published[-1].credit_id <= self._cursor:
            return
        self._cursor = published[-1].credit_id
        await outbox.save(self.ledger, SINK, self._cursor, now_ms=int(self.clock.now() * 1000))
        self.state.intervals_published += len(published)
        self.state.intervals_behind = max(0, self.ledger.max_credit_id - self._cursor)

    async def _idle(self) -> None:
        waits: list[Awaitable[object]] = [self.queue.ready.wait()]
        if self._wakeup is not None and self.cfg.intervals:
            waits.append(self._wakeup().wait())
        tasks = [asyncio.ensure_future(w) for w in waits]
        try:
            await asyncio.wait(tasks, timeout=IDLE_S, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
