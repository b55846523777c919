"""Budget alerts: returned (not logged) when the projected bill is above the budget."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest

from gateway.billing import (
    BillingError,
    BillingPeriod,
    DailyUsage,
    Projection,
    ProjectionMethod,
    check_budget,
    local_midnight_utc,
    project,
)
from gateway.billing.period import zone_for
from gateway.billing.samples import SEED_TARIFF

TZ = "America/Detroit"
ZONE = zone_for(TZ)
DECEMBER = BillingPeriod(date(2025, 12, 1), date(2026, 1, 1), TZ)


def _projection(days: int, wh_per_day: int) -> Projection:
    daily = {DECEMBER.start + timedelta(days=i): DailyUsage(wh_per_day, 96) for i in range(days)}
    as_of = local_midnight_utc(DECEMBER.start + timedelta(days=days), ZONE)
    return project(SEED_TARIFF, daily, DECEMBER, as_of, ProjectionMethod.DAILY_AVERAGE)


def test_projection_of_seed_usage_is_the_seed_bill() -> None:
    # 850 kWh over 31 days is 27 419.35 Wh/day; 27 419 Wh/day projects 849 989 Wh, which still
    # prices to $115.06 (tier 2: 349.989 kWh × 0.12 = 41.99868 → 42.00; PSCR 1.06249 → 1.06).
    projection = _projection(10, 27_419)
    assert projection.projected_bill.total_minor == 11506


def test_alert_fires_above_budget() -> None:
    projection = _projection(10, 27_419)  # projected $115.06

    alert = check_budget(projection, 10_000, meter_id="ELEC-001")

    assert alert is not None
    assert (alert.budget_minor, alert.projected_total_minor, alert.over_by_minor) == (10_000, 11506, 1506)
    assert alert.message.startswith("meter ELEC-001: projected bill USD 115.06 for 2025-12-01..2026-01-01")
    assert "exceeds the budget USD 100.00 by USD 15.06" in alert.message
    assert "confidence 32%" in alert.message
    data = json.loads(json.dumps(alert.to_dict()))
    assert data["over_by_minor"] == 1506
    assert data["method"] == "DAILY_AVERAGE"


def test_no_alert_at_or_below_budget() -> None:
    projection = _projection(10, 27_419)
    assert check_budget(projection, 11506, meter_id="m") is None
    assert check_budget(projection, 20_000, meter_id="m") is None


def test_low_confidence_can_suppress_alerts() -> None:
    early = _projection(2, 27_419)
    assert check_budget(early, 10_000, meter_id="m", min_confidence=0.25) is None
    later = _projection(10, 27_419)
    assert check_budget(later, 10_000, meter_id="m", min_confidence=0.25) is not None


@pytest.mark.parametrize("budget", [-1, 1.5, True])
def test_budget_must_be_minor_units(budget: object) -> None:
    with pytest.raises(BillingError, match="non-negative integer of minor units"):
        check_budget(_projection(3, 1000), budget, meter_id="m")  # type: ignore[arg-type]
