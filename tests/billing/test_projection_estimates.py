"""Projections: exact on constant usage, confidence from elapsed time × coverage, gaps, methods."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from gateway.billing import (
    BillingError,
    BillingPeriod,
    DailyUsage,
    ProjectionMethod,
    aggregate_daily,
    billing_period_for,
    compute_bill,
    expected_intervals,
    local_midnight_utc,
    period_to_date,
    project,
)
from gateway.billing.period import zone_for
from gateway.billing.samples import SEED_TARIFF, TOU_TARIFF

TZ = "Europe/Berlin"
ZONE = zone_for(TZ)
APRIL = BillingPeriod(date(2026, 4, 1), date(2026, 5, 1), TZ)  # 30 days, no DST change
MARCH = BillingPeriod(date(2026, 3, 1), date(2026, 4, 1), TZ)  # 31 days, 29th has 92 intervals
METHODS = list(ProjectionMethod)


def _constant(first: date, last: date, wh_per_interval: int = 1000) -> dict[date, DailyUsage]:
    """Full days first..last inclusive at a constant per-interval usage."""
    out: dict[date, DailyUsage] = {}
    day = first
    while day <= last:
        n = expected_intervals(day, ZONE)
        out[day] = DailyUsage(n * wh_per_interval, n)
        day += timedelta(days=1)
    return out


def _midnight(day: date) -> datetime:
    return local_midnight_utc(day, ZONE)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("elapsed", [1, 5, 10, 15, 29, 30])
def test_constant_usage_projects_exactly(method: ProjectionMethod, elapsed: int) -> None:
    daily = _constant(APRIL.start, APRIL.start + timedelta(days=elapsed - 1))

    projection = project(SEED_TARIFF, daily, APRIL, _midnight(APRIL.start + timedelta(days=elapsed)), method)

    assert projection.projected_usage_wh == 30 * 96_000
    assert projection.projected_bill == compute_bill(SEED_TARIFF, 30 * 96_000, APRIL)
    assert projection.daily_average_wh == 96_000
    assert projection.to_date.days_complete == elapsed
    assert projection.to_date.usage_wh == elapsed * 96_000
    assert projection.confidence == pytest.approx(elapsed / 30)


@pytest.mark.parametrize("method", METHODS)
def test_constant_usage_exact_across_a_dst_month(method: ProjectionMethod) -> None:
    # March 29 2026 has 23 hours in Berlin: the projection counts its 92 intervals, not 96.
    daily = _constant(MARCH.start, date(2026, 3, 10), 500)
    projection = project(SEED_TARIFF, daily, MARCH, _midnight(date(2026, 3, 11)), method)
    assert projection.projected_usage_wh == (31 * 96 - 4) * 500


def test_confidence_rises_with_elapsed_fraction() -> None:
    # Every interval arrives on time, including today's so far: confidence is the elapsed fraction.
    daily = _constant(APRIL.start, APRIL.end - timedelta(days=1))
    confidences = []
    for hours in range(0, 30 * 24 + 1, 6):
        as_of = _midnight(APRIL.start) + timedelta(hours=hours)
        local = as_of.astimezone(ZONE)
        visible = {d: u for d, u in daily.items() if d < local.date()}
        if local.hour:
            visible[local.date()] = DailyUsage(local.hour * 4 * 1000, local.hour * 4)
        projection = project(SEED_TARIFF, visible, APRIL, as_of)
        assert projection.to_date.coverage == 1.0
        assert projection.projected_usage_wh == (30 * 96_000 if hours else 0)
        confidences.append(projection.confidence)
    assert confidences[0] == 0.0
    assert confidences[-1] == 1.0
    assert confidences == sorted(confidences)
    assert len(set(confidences)) == len(confidences)


def test_seed_snapshot_day_15_of_30() -> None:
    # Nov 2025 (30 days), 30 kWh a day: 450 kWh to date, 900 kWh projected, confidence 0.50,
    # charges if read now = the 15-day stub: readiness to serve 15.00 × 15/30 = 7.50.
    # Projected bill: 15.00 + 50.00 + 400 × 0.12 = 48.00 + 900 × 0.00125 = 1.125 → 1.13 + 7.00 = 121.13.
    tz = "America/Detroit"
    zone = zone_for(tz)
    period = billing_period_for(date(2025, 11, 20), tz=tz)
    daily = {}
    for offset in range(15):
        day = period.start + timedelta(days=offset)
        n = expected_intervals(day, zone)  # Nov 2 is a 25-hour day in Detroit
        daily[day] = DailyUsage(30_000, n)
    as_of = local_midnight_utc(date(2025, 11, 16), zone)

    projection = project(SEED_TARIFF, daily, period, as_of)

    assert projection.to_date.usage_wh == 450_000
    assert projection.to_date.days_remaining == 15
    assert projection.to_date.charges is not None
    assert projection.to_date.charges.line_items[0].amount_minor == 750
    assert projection.confidence == pytest.approx(0.5, abs=0.001)  # 15 days + the extra DST hour
    # Per-interval average: 450 kWh over 1444 intervals; the remaining 1440 intervals → 448.75 kWh.
    assert projection.projected_usage_wh == 450_000 + round(450_000 / 1444 * 1440)
    assert abs(projection.projected_usage_wh - 900_000) < 1500


def test_partial_today_and_gaps_reduce_coverage_not_the_estimate() -> None:
    daily = _constant(APRIL.start, date(2026, 4, 10))
    daily[date(2026, 4, 5)] = DailyUsage(48_000, 48)  # half the day's intervals missing
    daily[date(2026, 4, 11)] = DailyUsage(40_000, 40)  # today, 12:00 local: 48 intervals so far, 40 present
    as_of = _midnight(date(2026, 4, 11)) + timedelta(hours=12)

    projection = project(SEED_TARIFF, daily, APRIL, as_of)

    assert projection.projected_usage_wh == 30 * 96_000
    ptd = projection.to_date
    assert (ptd.intervals_present, ptd.intervals_expected) == (9 * 96 + 48 + 40, 10 * 96 + 48)
    assert ptd.elapsed_fraction == pytest.approx(10.5 / 30)
    assert projection.confidence == pytest.approx(10.5 / 30 * (952 / 1008))
    assert ptd.usage_wh == 9 * 96_000 + 48_000 + 40_000


def test_day_one_uses_partial_day_and_period_start_has_nothing() -> None:
    at_start = project(SEED_TARIFF, {}, APRIL, _midnight(APRIL.start))
    assert (at_start.projected_usage_wh, at_start.confidence, at_start.to_date.charges) == (0, 0.0, None)
    assert at_start.projected_bill.total_minor == 1500 + 700

    daily = {APRIL.start: DailyUsage(24_000, 24)}
    morning = project(SEED_TARIFF, daily, APRIL, _midnight(APRIL.start) + timedelta(hours=6))
    assert morning.basis_days == 0
    assert morning.projected_usage_wh == 30 * 96_000
    assert morning.to_date.charges is None


def test_weighted_average_follows_a_step_change_faster() -> None:
    # 500 Wh/interval for ten days, then 1500: at day 20 the recent level is the better guess.
    daily = _constant(APRIL.start, date(2026, 4, 10), 500) | _constant(date(2026, 4, 11), date(2026, 4, 20), 1500)
    as_of = _midnight(date(2026, 4, 21))
    truth = 10 * 96 * 500 + 20 * 96 * 1500

    flat = project(SEED_TARIFF, daily, APRIL, as_of, ProjectionMethod.DAILY_AVERAGE)
    weighted = project(SEED_TARIFF, daily, APRIL, as_of, ProjectionMethod.WEIGHTED_AVERAGE)

    assert flat.daily_average_wh == 96 * 1000
    # Weights over the last 20 days (half-life 7): the newest ten carry ~73 % → ~1230 Wh/interval.
    assert flat.projected_usage_wh < weighted.projected_usage_wh < truth
    assert 96 * 1200 < weighted.daily_average_wh < 96 * 1260


def test_weighted_average_reaches_back_before_the_period() -> None:
    history = _constant(date(2026, 3, 4), date(2026, 3, 31), 800)  # 28 days before April
    daily = history | _constant(APRIL.start, APRIL.start, 1200)
    as_of = _midnight(date(2026, 4, 2))

    flat = project(SEED_TARIFF, daily, APRIL, as_of, ProjectionMethod.DAILY_AVERAGE)
    weighted = project(SEED_TARIFF, daily, APRIL, as_of, ProjectionMethod.WEIGHTED_AVERAGE)

    assert (flat.basis_days, weighted.basis_days) == (1, 28)
    assert flat.daily_average_wh == 96 * 1200
    assert 96 * 800 < weighted.daily_average_wh < 96 * 1200


def test_as_of_after_period_end_is_the_actual_usage() -> None:
    daily = _constant(APRIL.start, APRIL.end - timedelta(days=1), 700)
    projection = project(SEED_TARIFF, daily, APRIL, _midnight(date(2026, 5, 3)))
    assert projection.projected_usage_wh == 30 * 96 * 700
    assert projection.confidence == 1.0
    assert projection.to_date.charges == projection.projected_bill


def test_tou_projection_splits_by_observed_window_shares() -> None:
    zone = zone_for("America/Detroit")
    period = BillingPeriod(date(2025, 12, 1), date(2026, 1, 1), "America/Detroit")
    step = timedelta(minutes=15)
    intervals = []
    start = local_midnight_utc(date(2025, 11, 3), zone)  # four whole weeks of history, then 10 days
    for i in range((28 + 10) * 96):
        intervals.append((start + i * step, 250))
    daily = aggregate_daily(intervals, "America/Detroit", TOU_TARIFF)
    as_of = local_midnight_utc(date(2025, 12, 11), zone)

    projection = project(TOU_TARIFF, daily, period, as_of, ProjectionMethod.DAILY_AVERAGE)

    assert projection.projected_usage_wh == 31 * 96 * 250
    assert projection.projected_tou_wh is not None
    assert sum(projection.projected_tou_wh.values()) == projection.projected_usage_wh
    # Dec 1-10 2025 holds 8 weekdays: on-peak share 8 × 24 / (10 × 96) = 0.2.
    assert projection.projected_tou_wh["On-peak"] == round(31 * 96 * 250 * 0.2)
    assert projection.projected_bill == compute_bill(TOU_TARIFF, dict(projection.projected_tou_wh), period)
    ptd = period_to_date(TOU_TARIFF, daily, period, as_of)
    assert ptd.tou_wh == {"Off-peak": 10 * 96 * 250 - 8 * 24 * 250, "On-peak": 8 * 24 * 250}


def test_tou_projection_needs_window_totals() -> None:
    daily = _constant(APRIL.start, date(2026, 4, 3))
    with pytest.raises(BillingError, match="aggregate_daily"):
        project(TOU_TARIFF, daily, APRIL, _midnight(date(2026, 4, 4)))


def test_projection_to_dict_is_plain_data() -> None:
    import json

    daily = _constant(APRIL.start, date(2026, 4, 9))
    data = project(SEED_TARIFF, daily, APRIL, _midnight(date(2026, 4, 10))).to_dict()
    decoded = json.loads(json.dumps(data))
    assert decoded["method"] == "DAILY_AVERAGE"
    assert decoded["projected_usage_wh"] == 30 * 96_000
    assert decoded["period_to_date"]["days_complete"] == 9


@pytest.mark.parametrize(
    ("daily", "as_of", "message"),
    [
        ({}, datetime(2026, 3, 31, 12, tzinfo=UTC), "before the period"),
        ({}, datetime(2026, 4, 5, 12), "timezone-aware"),  # noqa: DTZ001
        ({date(2026, 4, 6): DailyUsage(1, 1)}, datetime(2026, 4, 5, 12, tzinfo=UTC), "from the future"),
        ({date(2026, 4, 2): DailyUsage(1, 97)}, datetime(2026, 4, 5, 12, tzinfo=UTC), "claims 97 intervals"),
    ],
)
def test_bad_projection_inputs(daily: dict[date, DailyUsage], as_of: datetime, message: str) -> None:
    with pytest.raises(BillingError, match=message):
        project(SEED_TARIFF, daily, APRIL, as_of)


def test_daily_usage_validation() -> None:
    with pytest.raises(BillingError, match="no intervals present"):
        DailyUsage(10, 0)
    with pytest.raises(BillingError, match="non-negative integer"):
        DailyUsage(-1, 1)
    with pytest.raises(BillingError, match="sums to 5 Wh"):
        DailyUsage(10, 2, {"A": 5})


def test_aggregate_daily_counts_local_days_and_rejects_duplicates() -> None:
    zone = zone_for(TZ)
    start = local_midnight_utc(date(2025, 10, 26), zone)
    intervals = [(start + i * timedelta(minutes=15), 10) for i in range(101)]
    daily = aggregate_daily(intervals, TZ)
    assert daily[date(2025, 10, 26)] == DailyUsage(1000, 100)
    assert daily[date(2025, 10, 27)] == DailyUsage(10, 1)
    with pytest.raises(BillingError, match="more than once"):
        aggregate_daily([*intervals, intervals[0]], TZ)
    half_grid = [(start + i * timedelta(minutes=7, seconds=30), 1) for i in range(150)]
    with pytest.raises(BillingError, match="not on the grid"):
        aggregate_daily(half_grid, TZ)
