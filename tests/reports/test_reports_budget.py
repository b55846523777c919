"""Budget alerts: status alarm, one ``budget_exceeded`` per period, MQTT publish to a real broker that may be down."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from stellar_sdk import Keypair
from structlog.testing import capture_logs

from gateway.clock import ManualClock
from gateway.config import load_config
from gateway.ledger.store import DB_FILE, Ledger
from gateway.reports.budget import BudgetWatcher, watch_budgets, watcher_for
from gateway.status import GatewayStatus
from tests.conftest import Broker, free_port
from tests.reports.conftest import ZONE, Site

AS_OF = datetime(2025, 12, 16, tzinfo=ZONE)
RECEIVE_S = 10.0


@pytest.fixture
async def ledger(site: Site) -> AsyncIterator[Ledger]:
    opened = await Ledger.open(site.data_dir, gateway_id="gw-test-reports", keypair=Keypair.random())
    try:
        yield opened
    finally:
        await opened.close()


@contextlib.asynccontextmanager
async def subscriber(port: int) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client("127.0.0.1", port, identifier="test-budget-listener") as client:
        await client.subscribe("gw/budget/#", qos=1)
        yield client


async def next_message(client: aiomqtt.Client) -> tuple[str, dict[str, Any]]:
    async with asyncio.timeout(RECEIVE_S):
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            return str(message.topic), json.loads(message.payload)
    raise AssertionError("subscription ended")


def events(site: Site) -> list[tuple[str, str]]:
    with contextlib.closing(sqlite3.connect(site.data_dir / DB_FILE)) as db:
        return [(str(m), str(k)) for m, k in db.execute("SELECT meter, kind FROM events WHERE kind='budget_exceeded'")]


def watcher(site: Site, tmp_path: Path, ledger: Ledger, clock: ManualClock, status: GatewayStatus, *,
            port: int, budget: str = "100.00", extra: str = "") -> BudgetWatcher:
    cfg = load_config(site.write_config(tmp_path / "gateway.toml", mqtt_port=port, budget=budget, extra=extra))
    return watcher_for(cfg, ledger, clock, status, events=ledger)


async def test_alert_is_raised_logged_once_per_period_and_published(site: Site, tmp_path: Path, ledger: Ledger,
                                                                    mosquitto: Broker) -> None:
    clock = ManualClock(AS_OF.timestamp())
    status = GatewayStatus("gw-test-reports", "G", clock.now())
    watch = watcher(site, tmp_path, ledger, clock, status, port=mosquitto.port)
    before = len(events(site))
    async with subscriber(mosquitto.port) as listener:
        with capture_logs() as logs:
            over = await watch.check_once()
            clock.advance(3600)
            again = await watch.check_once()
        topic, payload = await next_message(listener)

    assert set(over) == set(again) == {"house"}, "shed has no budget"
    assert "exceeds the budget USD 100.00 by USD 15.06" in status.alarms["budget:house"]
    exceeded = [e for e in logs if e["event"] == "budget_exceeded"]
    assert len(exceeded) == 1, "logged once per period, not at every check"
    assert exceeded[0]["log_level"] == "warning"
    assert exceeded[0]["meter"] == "house"
    assert exceeded[0]["projected_minor"] == 11506
    assert len(events(site)) == before + 1
    assert topic == "gw/budget/house"
    assert payload["gateway"] == "gw-test-reports"
    assert payload["meter_id"] == "house"
    assert payload["budget_minor"] == 10000
    assert payload["projected_total_minor"] == 11506
    assert payload["period"]["start"] == "2025-12-01"
    assert watch.published == 1
    assert watch.publish_failures == 0

    # A new period is news again.
    clock.step_wall(datetime(2026, 1, 1, 1, tzinfo=ZONE).timestamp() - clock.now())
    with capture_logs() as logs:
        await watch.check_once()
    assert [e["period_start"] for e in logs if e["event"] == "budget_exceeded"] == ["2026-01-01"]


async def test_alarm_clears_when_the_projection_is_within_budget_or_too_uncertain(
        site: Site, tmp_path: Path, ledger: Ledger) -> None:
    clock = ManualClock(AS_OF.timestamp())
    status = GatewayStatus("gw-test-reports", "G", clock.now())
    port = free_port()  # nothing listens: publishing fails quietly, checking goes on
    assert await watcher(site, tmp_path, ledger, clock, status, port=port).check_once()
    assert "budget:house" in status.alarms
    assert not await watcher(site, tmp_path, ledger, clock, status, port=port, budget="120.00").check_once()
    assert "budget:house" not in status.alarms
    assert not await watcher(site, tmp_path, ledger, clock, status, port=port,
                             extra="budget_min_confidence = 0.5").check_once(), "15/31 elapsed is below 0.5"


async def test_broker_down_is_counted_and_logged_and_the_alert_sent_when_it_is_back(
        site: Site, tmp_path: Path, ledger: Ledger, mosquitto: Broker) -> None:
    clock = ManualClock(AS_OF.timestamp())
    status = GatewayStatus("gw-test-reports", "G", clock.now())
    watch = watcher(site, tmp_path, ledger, clock, status, port=mosquitto.port)
    mosquitto.stop()
    with capture_logs() as logs:
        assert await watch.check_once()
        assert await watch.check_once()
    failed = [e for e in logs if e["event"] == "budget_alert_publish_failed"]
    assert [e["log_level"] for e in failed if e["log_level"] != "debug"] == ["warning"], \
        "one warning per outage, not per retry"
    assert watch.publish_failures == 2
    assert watch.published == 0
    assert "cannot be published to MQTT 127.0.0.1" in status.alarms["budget_publish"]
    assert "budget:house" in status.alarms, "the alert itself stands whatever the broker does"

    mosquitto.start()
    async with subscriber(mosquitto.port) as listener:
        await watch.check_once()
        topic, payload = await next_message(listener)
    assert topic == "gw/budget/house"
    assert payload["projected_total_minor"] == 11506
    assert watch.published == 1
    assert "budget_publish" not in status.alarms


async def test_the_daemon_task_checks_periodically_and_returns_without_budgets(
        site: Site, tmp_path: Path, ledger: Ledger) -> None:
    clock = ManualClock(AS_OF.timestamp())
    status = GatewayStatus("gw-test-reports", "G", clock.now())
    cfg = load_config(site.write_config(tmp_path / "gateway.toml", mqtt_port=free_port(), alert_topic=None))
    task = asyncio.create_task(watch_budgets(cfg, ledger, clock, status, ledger))
    try:
        async with asyncio.timeout(RECEIVE_S):
            while "budget:house" not in status.alarms:
                await asyncio.sleep(0.01)
        status.alarms.clear()
        async with asyncio.timeout(RECEIVE_S):
            while "budget:house" not in status.alarms:
                clock.advance(cfg.billing.budget_check_s)  # the next check comes only when clock time passes
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    text = (tmp_path / "gateway.toml").read_text().replace('budget = "100.00"', "")
    (tmp_path / "gateway.toml").write_text(text)
    async with asyncio.timeout(RECEIVE_S):
        await watch_budgets(load_config(tmp_path / "gateway.toml"), ledger, clock, status)
