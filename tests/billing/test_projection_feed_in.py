"""Projections of a meter with an export channel: projected feed-in on the projected bill, confidence as before."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from gateway.billing import (
    BillingPeriod,
    DailyUsage,
    LineKind,
    ProjectionMethod,
    Tariff,
    aggregate_daily,
    local_midnight_utc,
    period_to_date,
    project,
)
from gateway.billing.period import zone_for
from gateway.billing.samples import SEED_TARIFF, TOU_TARIFF

TZ = "America/Detroit"
ZONE = zone_for(TZ)
DECEMBER = BillingPeriod(date(2025, 12, 1), date(2026, 1, 1), TZ)
AS_OF = local_midnight_utc(date(2025, 12, 11), ZONE)  # 10 complete days


def _with(tariff: Tariff, **changes: Any) -> Tariff:
    return Tariff.model_validate({**tariff.model_dump(mode="json"), **changes})


SOLAR = _with(SEED_TARIFF, feed_in={"label": "Solar feed-in", "rate": "0.05"})


def _days(wh_per_day: int, days: int = 10, intervals: int = 96) -> dict[date, DailyUsage]:
    return {date(2025, 12, 1) + timedelta(days=i): DailyUsage(wh_per_day, intervals) for i in range(days)}


@pytest.mark.parametrize("method", list(ProjectionMethod))
def test_worked_example_projected_feed_in_to_the_cent(method: ProjectionMethod) -> None:
    """Ten complete December days of 24 kWh imported and 10 kWh exported each, every interval present.

    Both methods see constant days, so both project 31 × 24 = 744 kWh imported, 31 × 10 = 310 kWh exported.
    Charges: 15.00 + 500 × 0.10 = 50.00 + 244 × 0.12 = 29.28 + 744 × 0.00125 = 0.93 + 7.00 = 102.21.
    Feed-in: 310 × 0.05 = 15.50 → -15.50. Net 102.21 - 15.50 = 86.71.
    To date (a 10-day stub, proration 10/30): 15.00 × 1/3 = 5.00 + 240 kWh: tier 1 is 500 × 1/3 = 166.667 kWh
    → 166.667 × 0.10 = 16.6667 → 16.67 and 73.333 × 0.12 = 8.79996 → 8.80, PSCR 240 × 0.00125 = 0.30,
    SAF 7.00: charges 37.77; feed-in 100 × 0.05 = 5.00; net 32.77.
    """
    projection = project(SOLAR, _days(24_000), DECEMBER, AS_OF, method, export_daily=_days(10_000))

    assert (projection.projected_usage_wh, projection.projected_export_wh) == (744_000, 310_000)
    bill = projection.projected_bill
    assert (bill.charges_minor, bill.feed_in_minor, bill.total_minor) == (10221, -1550, 8671)
    charges = projection.to_date.charges
    assert charges is not None
    assert (charges.charges_minor, charges.feed_in_minor, charges.total_minor) == (3777, -500, 3277)
    assert projection.to_date.export_wh == 100_000
    data = projection.to_dict()
    assert data["projected_export_wh"] == 310_000
    assert data["projected_bill"]["net_minor"] == 8671  # type: ignore[index]


def test_confidence_is_the_import_channels_as_before() -> None:
    without = project(SOLAR, _days(24_000), DECEMBER, AS_OF)
    # Export with gaps (40 daylight intervals a day recorded) changes nothing about confidence.
    with_export = project(SOLAR, _days(24_000), DECEMBER, AS_OF, export_daily=_days(10_000, intervals=40))

    assert with_export.confidence == without.confidence == pytest.approx(10 / 31)
    assert with_export.projected_bill.charges_minor == without.projected_bill.total_minor


def test_export_gaps_are_filled_at_the_export_rate_per_interval() -> None:
    """40 export intervals a day present out of 96, 10 kWh in them: 250 Wh per present interval.
    The projection fills every missing export interval at that rate: 31 × 96 × 250 = 744 kWh — the same
    estimator as import, applied to the export channel alone.
    """
    projection = project(SOLAR, _days(24_000), DECEMBER, AS_OF, export_daily=_days(10_000, intervals=40))
    assert projection.projected_export_wh == 31 * 96 * 250


def test_without_export_the_projection_is_unchanged_key_for_key() -> None:
    projection = project(SOLAR, _days(24_000), DECEMBER, AS_OF)
    data = projection.to_dict()
    assert "projected_export_wh" not in data
    assert "export_wh" not in data["period_to_date"]  # type: ignore[operator]
    assert "net_minor" not in data["projected_bill"]  # type: ignore[operator]
    assert [i.kind for i in projection.projected_bill.line_items].count(LineKind.FEED_IN) == 0


def test_tou_feed_in_projects_per_window() -> None:
    """A weekday of export: 4 intervals of 500 Wh at 16:00-17:00 (on-peak) and 4 of 250 Wh at 10:00-11:00
    (off-peak) on Mon 1 Dec; as of Tue 2 Dec 00:00 (1 complete day of 31, all 96 intervals present each day).
    Projected: 31 × 2000 = 62 kWh on-peak, 31 × 1000 = 31 kWh off-peak.
    Credit: 62 × 0.15 = 9.30 and 31 × 0.04 = 1.24 → -10.54 in total.
    """
    tariff = _with(TOU_TARIFF, feed_in={"windows": [{"window": "On-peak", "rate": "0.15"},
                                                    {"window": "Off-peak", "rate": "0.04"}]})
    day = local_midnight_utc(date(2025, 12, 1), ZONE)
    step = timedelta(minutes=15)
    export = [(day + i * step, 500 if 64 <= i < 68 else 250 if 40 <= i < 44 else 0) for i in range(96)]
    imports = [(day + i * step, 100) for i in range(96)]
    as_of = datetime(2025, 12, 2, 5, tzinfo=UTC)  # 00:00 Detroit

    projection = project(tariff, aggregate_daily(imports, TZ, tariff), DECEMBER, as_of,
                         export_daily=aggregate_daily(export, TZ, tariff))

    assert projection.projected_export_tou_wh == {"Off-peak": 31_000, "On-peak": 62_000}
    assert projection.projected_bill.feed_in_minor == -(930 + 124)
    ptd = period_to_date(tariff, aggregate_daily(imports, TZ, tariff), DECEMBER, as_of,
                         export_daily=aggregate_daily(export, TZ, tariff))
    assert ptd.export_tou_wh == {"Off-peak": 1000, "On-peak": 2000}
