"""Budget alerts: a periodic task that projects each budgeted meter's bill and says so when it is over.

What an alert does, and why each part behaves as it does:

* ``status.alarms["budget:<meter>"]`` holds the current verdict and is removed again when the
  projection falls back within budget (or a new period starts): the status page shows the state
  *now*, like every other alarm.
* The log warning ``budget_exceeded`` and a ledger event are written once per meter and billing
  period (per daemon run): a projection recomputed every 15 minutes would otherwise repeat the same
  news ~3000 times a month.
* With ``[billing] alert_topic`` set, the alert is published once, QoS 1, to the ``[mqtt]`` broker.
  Publishing is best effort and can never stop the gateway: a broker that is down is counted,
  logged (a warning for the first failure of a streak) and shown as the ``budget_publish`` alarm,
  and the alert stays pending — at most one per meter, so memory is bounded — until a later check
  delivers it. Alerts use their own short-lived connection and client id: the MQTT meter source
  holds a persistent session under the gateway's id, and a second client with that id would
  disconnect it.
* A meter whose projection fails (bad data, a tariff the data does not fit) is logged and skipped;
  the other meters are still checked.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Protocol

import structlog

from gateway.billing import BudgetAlert
from gateway.brokers import Broker
from gateway.clock import Clock
from gateway.config import GatewayConfig, MqttConfig
from gateway.reports.service import meter_projection
from gateway.reports.source import IntervalSource
from gateway.status import GatewayStatus

log = structlog.get_logger("gateway.budget")

PUBLISH_TIMEOUT_S = 10.0
"""Host seconds one publish may take (connect + PUBACK) before it counts as failed."""
ALARM_PREFIX = "budget:"
PUBLISH_ALARM = "budget_publish"


class AlertPublisher(Protocol):
    async def publish(self, topic: str, payload: bytes) -> None:
        """Deliver one message or raise."""
        ...


class EventRecorder(Protocol):
    async def record_event(self, kind: str, *, t_ms: int, meter: str | None = None, detail: str = "") -> None:
        ...


class MqttAlertPublisher:
    """Connects, publishes with QoS 1 and disconnects: alerts are rare, a held connection is not worth it."""

    def __init__(self, cfg: MqttConfig, client_id: str) -> None:
        self.cfg = cfg
        self.client_id = client_id
        self.broker = Broker.of(cfg)

    @property
    def where(self) -> str:
        return f"{self.cfg.host}:{self.cfg.port}"

    async def publish(self, topic: str, payload: bytes) -> None:
        async with asyncio.timeout(PUBLISH_TIMEOUT_S), self.broker.client(
                self.client_id, clean_session=True, timeout=PUBLISH_TIMEOUT_S) as client:
            await client.publish(topic, payload, qos=1)


def alert_payload(alert: BudgetAlert, gateway_id: str) -> bytes:
    return json.dumps({"gateway": gateway_id, "kind": "budget_exceeded", **alert.to_dict()},
                      sort_keys=True, separators=(",", ":")).encode()


@dataclass
class BudgetWatcher:
    cfg: GatewayConfig
    source: IntervalSource
    clock: Clock
    status: GatewayStatus
    events: EventRecorder | None = None
    publisher: AlertPublisher | None = None
    announced: dict[str, date] = field(default_factory=dict)
    """Per meter, the start of the period whose alert has been logged."""
    pending: dict[str, BudgetAlert] = field(default_factory=dict)
    """Alerts not yet published, at most one per meter (the newest)."""
    published: int = 0
    publish_failures: int = 0
    _failing: bool = False

    def budgeted_meters(self) -> list[str]:
        return [m for m in self.cfg.all_meter_ids() if (entry := self.cfg.meter(m)) and entry.budget is not None]

    async def check_once(self) -> dict[str, BudgetAlert]:
        """Check every budgeted meter now; return the meters currently over budget."""
        as_of = datetime.fromtimestamp(self.clock.now(), UTC)
        over: dict[str, BudgetAlert] = {}
        for meter in self.budgeted_meters():
            try:
                result = await meter_projection(self.source, self.cfg, meter, as_of)
            except Exception as exc:  # noqa: BLE001 - one meter's bad data must not stop the others' checks
                log.warning("budget_check_failed", meter=meter, error=str(exc))
                continue
            alarm = ALARM_PREFIX + meter
            if result.alert is None:
                if self.status.alarms.pop(alarm, None) is not None:
                    log.info("budget_within", meter=meter, projected_minor=result.projection.projected_bill.total_minor)
                continue
            alert = result.alert
            over[meter] = alert
            self.status.alarms[alarm] = f"Budget: {alert.message}"
            if self.announced.get(meter) != alert.period.start:
                self.announced[meter] = alert.period.start
                await self._announce(alert)
        await self._publish_pending()
        return over

    async def _announce(self, alert: BudgetAlert) -> None:
        log.warning("budget_exceeded", meter=alert.meter_id, period_start=alert.period.start.isoformat(),
                    budget_minor=alert.budget_minor, projected_minor=alert.projected_total_minor,
                    confidence=round(alert.confidence, 3), method=alert.method.value, message=alert.message)
        if self.events is not None:
            try:
                await self.events.record_event("budget_exceeded", t_ms=int(self.clock.now() * 1000),
                                               meter=alert.meter_id, detail=alert.message)
            except Exception as exc:  # noqa: BLE001 - a failed event write (disk full) must not re-announce every 5 s
                log.warning("budget_event_not_recorded", meter=alert.meter_id, error=str(exc))
        if self.publisher is not None and self.cfg.billing.alert_topic:
            self.pending[alert.meter_id] = alert

    async def _publish_pending(self) -> None:
        topic_pattern = self.cfg.billing.alert_topic
        if self.publisher is None or not topic_pattern:
            return
        import aiomqtt

        for meter, alert in list(self.pending.items()):
            topic = topic_pattern.replace("{meter}", meter)
            try:
                await self.publisher.publish(topic, alert_payload(alert, self.cfg.gateway_id))
            except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
                self.publish_failures += 1
                where = getattr(self.publisher, "where", "the broker")
                self.status.alarms[PUBLISH_ALARM] = (
                    f"Budget alerts cannot be published to MQTT {where} ({self.publish_failures} failures): "
                    f"{exc or type(exc).__name__}. They are kept and sent when the broker is back.")
                (log.debug if self._failing else log.warning)(
                    "budget_alert_publish_failed", meter=meter, topic=topic, failures=self.publish_failures,
                    error=str(exc) or type(exc).__name__)
                self._failing = True
                return  # the broker is down for the others too; try again at the next check
            del self.pending[meter]
            self.published += 1
            self._failing = False
            self.status.alarms.pop(PUBLISH_ALARM, None)
            log.info("budget_alert_published", meter=meter, topic=topic)

    async def run(self) -> None:
        """Check now and then every ``[billing] budget_check_s`` until cancelled."""
        if not self.budgeted_meters():
            return
        while True:
            await self.check_once()
            await self.clock.sleep(self.cfg.billing.budget_check_s)


def watcher_for(cfg: GatewayConfig, ledger: IntervalSource, clock: Clock, status: GatewayStatus,
                events: EventRecorder | None = None) -> BudgetWatcher:
    """The watcher the daemon runs, publishing to the [mqtt] broker when an alert topic is configured."""
    publisher = None
    if cfg.billing.alert_topic and cfg.mqtt is not None:
        publisher = MqttAlertPublisher(cfg.mqtt, client_id=f"meter-gateway-{cfg.gateway_id}-alerts")
    return BudgetWatcher(cfg, ledger, clock, status, events=events, publisher=publisher)


async def watch_budgets(cfg: GatewayConfig, ledger: IntervalSource, clock: Clock, status: GatewayStatus,
                        events: EventRecorder | None = None) -> None:
    """The daemon task: returns at once when no meter has a budget."""
    await watcher_for(cfg, ledger, clock, status, events).run()
