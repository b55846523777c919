"""Hypothesis properties of compute_bill and the money helpers."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.billing import (
    BillingPeriod,
    LineKind,
    Tariff,
    TieredEnergy,
    aggregate_daily,
    compute_bill,
    proration_factor,
    round_half_away,
    split_tiers,
)
from gateway.billing.money import fraction_to_str
from gateway.billing.samples import SEED_TARIFF, TOU_TARIFF

STEP = timedelta(minutes=15)
ZONES = ["UTC", "America/Detroit", "Europe/Berlin", "Australia/Sydney"]

rates = st.decimals(min_value=0, max_value=Decimal("0.5"), places=5).map(str)
signed_rates = st.decimals(min_value=Decimal("-0.05"), max_value=Decimal("0.05"), places=5).map(str)
money = st.decimals(min_value=0, max_value=100, places=2).map(str)


@st.composite
def tiered_tariffs(draw: st.DrawFn) -> Tariff:
    bounds = sorted(draw(st.sets(st.integers(1, 3000), max_size=3)))
    tiers: list[dict[str, Any]] = [{"up_to_kwh": str(b), "rate": draw(rates)} for b in bounds]
    tiers.append({"rate": draw(rates)})
    data: dict[str, Any] = {
        "name": "random",
        "currency": "USD",
        "energy": {"kind": "tiered", "tiers": tiers},
        "fixed_charges": [{"label": f"F{i}", "amount": a} for i, a in enumerate(draw(st.lists(money, max_size=2)))],
        "kwh_surcharges": [{"label": f"S{i}", "rate": r} for i, r in enumerate(draw(st.lists(rates, max_size=2)))],
        "fixed_surcharges": [{"label": "SAF", "amount": a} for a in draw(st.lists(money, max_size=1))],
        "taxes": [
            {"label": f"T{i}", "percent": str(p)}
            for i, p in enumerate(draw(st.lists(st.decimals(0, 25, places=3), max_size=2)))
        ],
    }
    return Tariff.model_validate(data)


@st.composite
def periods(draw: st.DrawFn) -> BillingPeriod:
    start = draw(st.dates(date(2020, 1, 1), date(2030, 12, 31)))
    days = draw(st.integers(1, 62))
    return BillingPeriod(start, start + timedelta(days=days), draw(st.sampled_from(ZONES)))


@given(tiered_tariffs(), periods(), st.integers(0, 5_000_000), st.integers(0, 1_000_000))
@settings(max_examples=300, deadline=None)
def test_bill_is_monotone_in_usage(tariff: Tariff, period: BillingPeriod, usage: int, more: int) -> None:
    assert compute_bill(tariff, usage, period).total_minor <= compute_bill(tariff, usage + more, period).total_minor


@given(tiered_tariffs(), periods(), st.integers(0, 5_000_000))
@settings(max_examples=300, deadline=None)
def test_total_is_sum_of_line_items_and_each_item_is_rounded_exactly(
    tariff: Tariff, period: BillingPeriod, usage: int
) -> None:
    bill = compute_bill(tariff, usage, period)
    assert bill.total_minor == sum(item.amount_minor for item in bill.line_items)
    for item in bill.line_items:
        assert item.amount_minor == round_half_away(item.quantity * Fraction(item.rate) * 100)


@given(tiered_tariffs(), periods(), st.integers(0, 5_000_000))
@settings(max_examples=300, deadline=None)
def test_tier_split_conserves_energy(tariff: Tariff, period: BillingPeriod, usage: int) -> None:
    energy = tariff.energy
    assert isinstance(energy, TieredEnergy)
    split = split_tiers(energy, usage, proration_factor(tariff, period))
    assert sum(split) == usage
    assert all(wh >= 0 for wh in split)
    bill = compute_bill(tariff, usage, period)
    assert sum(i.quantity for i in bill.line_items if i.kind is LineKind.ENERGY) == Fraction(usage, 1000)
    assert bill.energy_wh == usage


@given(tiered_tariffs(), st.integers(0, 5_000_000), st.integers(0, 5_000_000))
@settings(max_examples=200, deadline=None)
def test_tiers_fill_in_order(tariff: Tariff, usage: int, more: int) -> None:
    energy = tariff.energy
    assert isinstance(energy, TieredEnergy)
    low = split_tiers(energy, usage, Fraction(1))
    high = split_tiers(energy, usage + more, Fraction(1))
    assert all(a <= b for a, b in zip(low, high, strict=True))
    # A tier only receives energy once every earlier tier is full.
    for index in range(1, len(low)):
        if high[index] > 0:
            assert high[index - 1] == split_tiers(energy, 10**12, Fraction(1))[index - 1]


@given(
    st.decimals(min_value=Decimal("-0.03"), max_value=Decimal("0.03"), places=5).map(str),
    periods(),
    st.integers(0, 5_000_000),
)
@settings(max_examples=200, deadline=None)
def test_credits_round_symmetrically(rate: str, period: BillingPeriod, usage: int) -> None:
    def tariff(r: str) -> Tariff:
        return Tariff.model_validate(
            {
                "name": "c",
                "currency": "USD",
                "energy": {"kind": "tiered", "tiers": [{"rate": "0"}]},
                "kwh_surcharges": [{"label": "Rider", "rate": r}],
            }
        )

    negated = str(-Decimal(rate))
    assert (
        compute_bill(tariff(rate), usage, period).total_minor
        == -compute_bill(tariff(negated), usage, period).total_minor
    )


@given(st.fractions(min_value=-(10**9), max_value=10**9, max_denominator=10**6))
def test_round_half_away_matches_decimal_half_up(value: Fraction) -> None:
    # Within these bounds a non-tie is at least 1/(2·10**6) from a tie, far above the error of a
    # 28-digit Decimal division, so the reference is trustworthy.
    expected = (Decimal(value.numerator) / Decimal(value.denominator)).quantize(Decimal(1), ROUND_HALF_UP)
    assert round_half_away(value) == int(expected)


@given(st.fractions(max_denominator=10**4))
def test_fraction_to_str_is_exact(value: Fraction) -> None:
    assert Fraction(fraction_to_str(value)) == value


@given(signed_rates)
def test_rate_strings_keep_their_exact_value(rate: str) -> None:
    tariff = Tariff.model_validate(
        {
            "name": "r",
            "currency": "USD",
            "energy": {"kind": "tiered", "tiers": [{"rate": "0"}]},
            "kwh_surcharges": [{"label": "Rider", "rate": rate}],
        }
    )
    assert tariff.kwh_surcharges[0].rate == Decimal(rate)


@st.composite
def interval_sets(draw: st.DrawFn) -> tuple[BillingPeriod, list[tuple[datetime, int]]]:
    period = draw(periods())
    count = int((period.end_utc - period.start_utc) / STEP)
    indices = draw(st.sets(st.integers(0, count - 1), max_size=300))
    wh = st.integers(0, 5000)
    return period, [(period.start_utc + i * STEP, draw(wh)) for i in sorted(indices)]


@given(interval_sets())
@settings(max_examples=200, deadline=None)
def test_tou_attribution_conserves_energy(case: tuple[BillingPeriod, list[tuple[datetime, int]]]) -> None:
    period, intervals = case
    total = sum(wh for _, wh in intervals)
    bill = compute_bill(TOU_TARIFF, intervals, period)
    assert bill.energy_wh == total
    assert sum(i.quantity for i in bill.line_items if i.kind is LineKind.ENERGY) == Fraction(total, 1000)
    # Pre-aggregating by day with the same rule gives the same bill.
    daily = aggregate_daily(intervals, period.tz, TOU_TARIFF)
    windows: dict[str, int] = {}
    for usage in daily.values():
        assert usage.tou_wh is not None
        for label, wh in usage.tou_wh.items():
            windows[label] = windows.get(label, 0) + wh
    assert compute_bill(TOU_TARIFF, windows, period) == bill


@given(interval_sets())
@settings(max_examples=100, deadline=None)
def test_tiered_bill_from_intervals_equals_bill_from_total(
    case: tuple[BillingPeriod, list[tuple[datetime, int]]],
) -> None:
    period, intervals = case
    total = sum(wh for _, wh in intervals)
    assert compute_bill(SEED_TARIFF, intervals, period) == compute_bill(SEED_TARIFF, total, period)
