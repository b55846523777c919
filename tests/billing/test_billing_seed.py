"""The seed's final bill, to the cent, and the same bill from 15-minute interval data."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction

from gateway.billing import BillingPeriod, LineKind, compute_bill, local_midnight_utc
from gateway.billing.samples import SEED_TARIFF

# "Dec 1-31" with the meter read on Dec 1 and on Jan 1: consumption days Dec 1..Dec 31, end exclusive.
DECEMBER = BillingPeriod(date(2025, 12, 1), date(2026, 1, 1), "America/Detroit")

SEED_LINES = [
    ("Readiness to Serve", 1500),
    ("Usage Tier 1", 5000),
    ("Usage Tier 2", 4200),
    ("PSCR Surcharge", 106),  # 850 kWh × $0.00125 = $1.0625 → $1.06
    ("SAF Surcharge", 700),
]


def test_seed_bill_is_115_06_with_exactly_five_line_items() -> None:
    bill = compute_bill(SEED_TARIFF, 850_000, DECEMBER)

    assert [(item.label, item.amount_minor) for item in bill.line_items] == SEED_LINES
    assert bill.total_minor == 11506
    assert bill.total == "115.06"
    assert bill.energy_wh == 850_000
    assert bill.days == 31
    assert bill.proration == 1  # a full monthly cycle, although December has 31 days


def test_seed_bill_quantities_units_and_kinds() -> None:
    bill = compute_bill(SEED_TARIFF, 850_000, DECEMBER)

    readiness, tier1, tier2, pscr, saf = bill.line_items
    assert (readiness.kind, readiness.quantity, readiness.unit) == (LineKind.FIXED, Fraction(1), "period")
    assert (tier1.kind, tier1.quantity, tier1.unit, str(tier1.rate)) == (
        LineKind.ENERGY,
        Fraction(500),
        "kWh",
        "0.10",
    )
    assert (tier2.quantity, str(tier2.rate)) == (Fraction(350), "0.12")
    assert (pscr.kind, pscr.quantity, str(pscr.rate)) == (LineKind.SURCHARGE, Fraction(850), "0.00125")
    assert (saf.quantity, saf.unit) == (Fraction(1), "bill")


def test_seed_bill_to_dict_is_json_and_exact() -> None:
    data = compute_bill(SEED_TARIFF, 850_000, DECEMBER).to_dict()

    decoded = json.loads(json.dumps(data))
    assert decoded["total_minor"] == 11506
    assert decoded["period"] == {"start": "2025-12-01", "end": "2026-01-01", "tz": "America/Detroit", "days": 31}
    assert [line["amount_minor"] for line in decoded["line_items"]] == [a for _, a in SEED_LINES]
    assert decoded["line_items"][3] == {
        "kind": "surcharge",
        "label": "PSCR Surcharge",
        "quantity": "850",
        "unit": "kWh",
        "rate": "0.00125",
        "amount_minor": 106,
    }
    assert sum(line["amount_minor"] for line in decoded["line_items"]) == decoded["total_minor"]


def test_seed_bill_from_intervals_matches_total() -> None:
    start = local_midnight_utc(DECEMBER.start, DECEMBER.zone)
    count = int((DECEMBER.end_utc - start) / timedelta(minutes=15))
    assert count == 31 * 96  # no DST change in December
    base, extra = divmod(850_000, count)
    intervals = [(start + i * timedelta(minutes=15), base + (1 if i < extra else 0)) for i in range(count)]

    bill = compute_bill(SEED_TARIFF, intervals, DECEMBER)

    assert bill.total_minor == 11506
    assert [(item.label, item.amount_minor) for item in bill.line_items] == SEED_LINES


def test_seed_mid_cycle_stub_prorates_readiness_to_serve() -> None:
    # The seed's mid-cycle view: 15 days elapsed → readiness to serve $15.00 × 15/30 = $7.50.
    stub = BillingPeriod(date(2025, 12, 1), date(2025, 12, 16), "America/Detroit")

    bill = compute_bill(SEED_TARIFF, 450_000, stub)

    assert bill.proration == Fraction(15, 30)
    assert bill.line_items[0].amount_minor == 750


def test_interval_start_in_utc_attributed_to_local_day() -> None:
    # 2026-01-01T04:45Z is 23:45 on Dec 31 in Detroit (UTC-5): part of December.
    bill = compute_bill(SEED_TARIFF, [(datetime(2026, 1, 1, 4, 45, tzinfo=UTC), 1000)], DECEMBER)
    assert bill.energy_wh == 1000
