"""Hypothesis properties of projections on arbitrary (valid) daily data."""

from __future__ import annotations

from datetime import date, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.billing import (
    BillingPeriod,
    DailyUsage,
    ProjectionMethod,
    billing_period_for,
    expected_intervals,
    project,
)
from gateway.billing.samples import SEED_TARIFF

ZONES = ["UTC", "America/Detroit", "Europe/Berlin", "Australia/Sydney"]


@st.composite
def cases(draw: st.DrawFn) -> tuple[BillingPeriod, dict[date, DailyUsage], int, ProjectionMethod]:
    period = billing_period_for(draw(st.dates(date(2021, 1, 1), date(2029, 12, 31))), tz=draw(st.sampled_from(ZONES)))
    zone = period.zone
    minutes = draw(st.integers(0, period.days * 24 * 60))
    as_of_day = (period.start_utc + timedelta(minutes=minutes)).astimezone(zone).date()
    daily: dict[date, DailyUsage] = {}
    day = period.start - timedelta(days=10)
    while day <= as_of_day:
        if draw(st.booleans()) or day < period.start:
            n = draw(st.integers(0, expected_intervals(day, zone)))
            daily[day] = DailyUsage(n * draw(st.integers(0, 3000)), n)
        day += timedelta(days=1)
    return period, daily, minutes, draw(st.sampled_from(list(ProjectionMethod)))


@given(cases())
@settings(max_examples=150, deadline=None)
def test_projection_invariants(case: tuple[BillingPeriod, dict[date, DailyUsage], int, ProjectionMethod]) -> None:
    period, daily, minutes, method = case
    as_of = period.start_utc + timedelta(minutes=minutes)
    visible = {d: u for d, u in daily.items() if d <= as_of.astimezone(period.zone).date()}

    projection = project(SEED_TARIFF, visible, period, as_of, method)

    ptd = projection.to_date
    assert 0.0 <= projection.confidence <= 1.0
    assert 0.0 <= ptd.coverage <= 1.0
    assert 0.0 <= ptd.elapsed_fraction <= 1.0
    assert projection.projected_usage_wh >= ptd.usage_wh
    assert projection.projected_bill.period == period
    assert projection.projected_bill.total_minor == sum(i.amount_minor for i in projection.projected_bill.line_items)
    assert ptd.days_complete + ptd.days_remaining == period.days
    assert (ptd.charges is None) == (ptd.days_complete == 0)
