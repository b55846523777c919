"""Partial and irregular periods: fixed charges and tier thresholds prorated by days/30."""

from __future__ import annotations

from datetime import date
from fractions import Fraction

import pytest

from gateway.billing import (
    BillingError,
    BillingPeriod,
    Tariff,
    TieredEnergy,
    billing_period_for,
    compute_bill,
    proration_factor,
    split_tiers,
    tier_thresholds_wh,
)
from gateway.billing.samples import SEED_TARIFF

TZ = "America/Detroit"


def test_move_in_stub_bill_worked_by_hand() -> None:
    # Move-in on Dec 13 2025, regular read Jan 1 2026: 19 consumption days, not a monthly cycle.
    #   factor              = 19/30
    #   Readiness to Serve  = 15.00 × 19/30                  =  9.50
    #   tier 1 limit        = 500 kWh × 19/30 = 316.6667 kWh → 316 667 Wh (rounded half-up to Wh)
    #   Usage Tier 1        = 316.667 kWh × 0.10 = 31.6667   → 31.67
    #   Usage Tier 2        = (400 000 − 316 667) Wh = 83.333 kWh × 0.12 = 9.99996 → 10.00
    #   PSCR                = 400 kWh × 0.00125 = 0.50
    #   SAF (per bill)      = 7.00, not prorated
    #   total               = 9.50 + 31.67 + 10.00 + 0.50 + 7.00 = 58.67
    period = BillingPeriod(date(2025, 12, 13), date(2026, 1, 1), TZ)

    bill = compute_bill(SEED_TARIFF, 400_000, period)

    assert bill.proration == Fraction(19, 30)
    assert [(i.label, i.amount_minor) for i in bill.line_items] == [
        ("Readiness to Serve", 950),
        ("Usage Tier 1", 3167),
        ("Usage Tier 2", 1000),
        ("PSCR Surcharge", 50),
        ("SAF Surcharge", 700),
    ]
    assert bill.total_minor == 5867
    assert bill.line_items[1].quantity == Fraction(316_667, 1000)
    assert bill.line_items[2].quantity == Fraction(83_333, 1000)
    assert bill.to_dict()["proration"] == "19/30"


FIELD_NOTES_TARIFF = Tariff.model_validate(
    {
        "name": "Field notes example",
        "currency": "USD",
        "fixed_charges": [{"label": "Customer charge", "amount": "30.00"}],
        "energy": {
            "kind": "tiered",
            "tiers": [
                {"up_to_kwh": "100", "rate": "0.05"},
                {"up_to_kwh": "300", "rate": "0.10"},
                {"rate": "0.15"},
            ],
        },
    }
)


def test_45_day_period_turns_100_300_tier_into_150_450() -> None:
    period = BillingPeriod(date(2025, 11, 1), date(2025, 12, 16), TZ)
    assert period.days == 45
    factor = proration_factor(FIELD_NOTES_TARIFF, period)
    assert factor == Fraction(3, 2)

    energy = FIELD_NOTES_TARIFF.energy
    assert isinstance(energy, TieredEnergy)
    assert tier_thresholds_wh(energy, factor) == (150_000, 450_000, None)
    bill = compute_bill(FIELD_NOTES_TARIFF, 500_000, period)
    # $30 × 45/30 = $45.00; 150 kWh × 0.05 = 7.50; 300 kWh × 0.10 = 30.00; 50 kWh × 0.15 = 7.50
    assert [i.amount_minor for i in bill.line_items] == [4500, 750, 3000, 750]
    assert bill.total_minor == 9000


def test_19_day_fixed_charge_is_30_times_19_over_30() -> None:
    period = BillingPeriod(date(2025, 6, 12), date(2025, 7, 1), TZ)
    bill = compute_bill(FIELD_NOTES_TARIFF, 0, period)
    assert bill.line_items[0].amount_minor == 1900


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (date(2026, 2, 1), date(2026, 3, 1)),  # 28 days
        (date(2024, 2, 1), date(2024, 3, 1)),  # 29 days, leap year
        (date(2025, 12, 1), date(2026, 1, 1)),  # 31 days
        (date(2025, 12, 13), date(2026, 1, 13)),  # cycle starting on the 13th
        (date(2025, 2, 28), date(2025, 3, 31)),  # start day 31, clamped in February
    ],
)
def test_full_cycles_are_never_prorated(start: date, end: date) -> None:
    period = BillingPeriod(start, end, TZ)
    assert period.is_full_cycle
    bill = compute_bill(SEED_TARIFF, 850_000, period)
    assert bill.total_minor == 11506


def test_tier_split_conserves_energy_on_prorated_thresholds() -> None:
    factor = Fraction(19, 30)
    energy = SEED_TARIFF.energy
    assert isinstance(energy, TieredEnergy)
    assert split_tiers(energy, 400_000, factor) == (316_667, 83_333)
    assert split_tiers(energy, 100_000, factor) == (100_000, 0)
    assert split_tiers(energy, 0, factor) == (0, 0)


def test_unused_upper_tier_line_is_left_off() -> None:
    bill = compute_bill(SEED_TARIFF, 300_000, billing_period_for(date(2025, 12, 5), tz=TZ))
    assert [i.label for i in bill.line_items] == [
        "Readiness to Serve",
        "Usage Tier 1",
        "PSCR Surcharge",
        "SAF Surcharge",
    ]


def test_zero_usage_still_shows_first_energy_line() -> None:
    bill = compute_bill(SEED_TARIFF, 0, billing_period_for(date(2025, 12, 5), tz=TZ))
    assert [(i.label, i.amount_minor) for i in bill.line_items][1] == ("Usage Tier 1", 0)
    assert bill.total_minor == 1500 + 700


@pytest.mark.parametrize(
    ("day", "start_day", "expected"),
    [
        (date(2025, 12, 1), 1, (date(2025, 12, 1), date(2026, 1, 1))),
        (date(2025, 12, 31), 1, (date(2025, 12, 1), date(2026, 1, 1))),
        (date(2025, 12, 15), 20, (date(2025, 11, 20), date(2025, 12, 20))),
        (date(2025, 12, 20), 20, (date(2025, 12, 20), date(2026, 1, 20))),
        (date(2025, 1, 5), 20, (date(2024, 12, 20), date(2025, 1, 20))),
        (date(2025, 2, 28), 31, (date(2025, 2, 28), date(2025, 3, 31))),
        (date(2025, 2, 27), 31, (date(2025, 1, 31), date(2025, 2, 28))),
        (date(2024, 2, 29), 30, (date(2024, 2, 29), date(2024, 3, 30))),
        (date(2025, 4, 30), 31, (date(2025, 4, 30), date(2025, 5, 31))),
        (date(2025, 5, 30), 31, (date(2025, 4, 30), date(2025, 5, 31))),
    ],
)
def test_billing_period_for(day: date, start_day: int, expected: tuple[date, date]) -> None:
    period = billing_period_for(day, start_day, tz=TZ)
    assert (period.start, period.end) == expected
    assert period.contains(day)
    assert period.is_full_cycle


def test_billing_period_for_rejects_bad_start_day() -> None:
    with pytest.raises(BillingError, match="1 to 31"):
        billing_period_for(date(2025, 1, 1), 32)
    with pytest.raises(BillingError, match="1 to 31"):
        billing_period_for(date(2025, 1, 1), 0)
