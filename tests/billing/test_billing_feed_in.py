"""Feed-in credits on the bill: worked examples to the cent, the seed bill unchanged, bad config refused."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.billing import BillingError, BillingPeriod, LineKind, Tariff, compute_bill, round_half_away
from gateway.billing.samples import SEED_TARIFF, TOU_TARIFF
from gateway.config import InvalidConfig, parse_config
from gateway.schema import ValidationError

DECEMBER = BillingPeriod(date(2025, 12, 1), date(2026, 1, 1), "America/Detroit")
DETROIT = ZoneInfo("America/Detroit")
SEED_LINES = [("Readiness to Serve", 1500), ("Usage Tier 1", 5000), ("Usage Tier 2", 4200),
              ("PSCR Surcharge", 106), ("SAF Surcharge", 700)]


def _with(tariff: Tariff, **changes: Any) -> Tariff:
    return Tariff.model_validate({**tariff.model_dump(mode="json"), **changes})


SOLAR = _with(SEED_TARIFF, name="Residential with solar", feed_in={"label": "Solar feed-in", "rate": "0.05"})
SOLAR_TOU = _with(TOU_TARIFF, feed_in={"windows": [{"window": "On-peak", "rate": "0.15"},
                                                   {"window": "Off-peak", "rate": "0.04"}]})


def _local(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2025, 12, day, hour, minute, tzinfo=DETROIT).astimezone(UTC)


def test_worked_example_flat_feed_in_to_the_cent() -> None:
    """December 2025, 850 kWh imported, 240.5 kWh exported, seed tariff plus a flat $0.05/kWh feed-in.

    Charges (the seed bill, unchanged): 15.00 + 500 × 0.10 = 50.00 + 350 × 0.12 = 42.00
    + 850 × 0.00125 = 1.0625 → 1.06 + 7.00 = 115.06.
    Feed-in credit: 240.5 kWh × 0.05 = 12.025 → 12.03 (half away from zero), a line of -12.03.
    Net amount: 115.06 - 12.03 = 103.03.
    """
    bill = compute_bill(SOLAR, 850_000, DECEMBER, export=240_500)

    assert [(i.label, i.amount_minor) for i in bill.line_items] == [*SEED_LINES, ("Solar feed-in", -1203)]
    credit = bill.line_items[-1]
    assert (credit.kind, credit.quantity, credit.unit, credit.rate) == (
        LineKind.FEED_IN, Fraction(481, 2), "kWh", Decimal("0.05"))
    assert (bill.charges_minor, bill.feed_in_minor, bill.total_minor, bill.total) == (11506, -1203, 10303, "103.03")
    data = json.loads(json.dumps(bill.to_dict()))
    assert (data["export_wh"], data["charges_minor"], data["feed_in_minor"], data["net_minor"]) == (
        240_500, 11506, -1203, 10303)
    assert data["line_items"][-1] == {"kind": "feed_in", "label": "Solar feed-in", "quantity": "240.5",
                                      "unit": "kWh", "rate": "0.05", "amount_minor": -1203}


def test_worked_example_taxes_apply_to_charges_not_to_the_credit() -> None:
    """As above with a 6 % tax: tax on the 115.06 of charges = 6.9036 → 6.90; charges 121.96.
    The credit is not taxed and not netted before tax: -12.03. Net 121.96 - 12.03 = 109.93.
    """
    taxed = _with(SOLAR, taxes=[{"label": "Sales tax", "percent": "6"}])

    bill = compute_bill(taxed, 850_000, DECEMBER, export=240_500)

    assert [(i.label, i.amount_minor) for i in bill.line_items][-2:] == [("Sales tax", 690), ("Solar feed-in", -1203)]
    assert (bill.charges_minor, bill.feed_in_minor, bill.total) == (12196, -1203, "109.93")


def test_worked_example_tou_feed_in_by_window_from_intervals() -> None:
    """TOU tariff, Wednesday 3 December 2025 (Detroit), feed-in 0.15 on-peak, 0.04 off-peak.

    Import: 300 kWh off-peak, 100 kWh on-peak (by window).
    Charges: 15.00 + 300 × 0.08 = 24.00 + 100 × 0.24 = 24.00 + 400 × 0.00125 = 0.50 + 7.00 = 70.50.
    Export intervals: 16:00 and 16:15 local, 1000 Wh each (on-peak, weekday 15-21) = 2 kWh;
    10:00, 10:15, 10:30 local, 1111 Wh each (off-peak) = 3.333 kWh.
    Credits: 2 × 0.15 = 0.30; 3.333 × 0.04 = 0.13332 → 0.13. Net 70.50 - 0.30 - 0.13 = 70.07.
    """
    export = [(_local(3, 16), 1000), (_local(3, 16, 15), 1000),
              (_local(3, 10), 1111), (_local(3, 10, 15), 1111), (_local(3, 10, 30), 1111)]

    bill = compute_bill(SOLAR_TOU, {"Off-peak": 300_000, "On-peak": 100_000}, DECEMBER, export=export)

    assert [(i.label, i.amount_minor) for i in bill.line_items if i.kind is LineKind.FEED_IN] == [
        ("Feed-in credit (Off-peak)", -13), ("Feed-in credit (On-peak)", -30)]
    assert (bill.charges_minor, bill.feed_in_minor, bill.total_minor, bill.export_wh) == (7050, -43, 7007, 5333)


def test_net_amount_may_be_negative() -> None:
    """3000 kWh exported × 0.05 = 150.00 credit against 115.06 of charges: net -34.94 (owed to the customer)."""
    bill = compute_bill(SOLAR, 850_000, DECEMBER, export=3_000_000)

    assert (bill.total_minor, bill.total) == (-3494, "-34.94")


def test_seed_bill_unchanged_without_export_even_under_a_feed_in_tariff() -> None:
    for tariff in (SEED_TARIFF, SOLAR):
        bill = compute_bill(tariff, 850_000, DECEMBER)
        assert [(i.label, i.amount_minor) for i in bill.line_items] == SEED_LINES
        assert bill.total_minor == 11506
        assert set(bill.to_dict()) == {"tariff", "currency", "minor_units", "period", "days", "proration",
                                       "energy_wh", "line_items", "total_minor"}


def test_export_without_a_feed_in_rate_is_shown_but_not_credited() -> None:
    bill = compute_bill(SEED_TARIFF, 850_000, DECEMBER, export=100_000)

    assert [(i.label, i.amount_minor) for i in bill.line_items] == SEED_LINES
    assert (bill.export_wh, bill.feed_in_minor, bill.to_dict()["net_minor"]) == (100_000, 0, 11506)


def test_zero_export_still_states_the_feed_in_rate() -> None:
    bill = compute_bill(SOLAR, 850_000, DECEMBER, export=[])

    assert bill.line_items[-1].to_dict() == {"kind": "feed_in", "label": "Solar feed-in", "quantity": "0",
                                             "unit": "kWh", "rate": "0.05", "amount_minor": 0}


def test_tariff_fingerprint_and_dump_unchanged_when_feed_in_is_absent() -> None:
    # The canonical dump's SHA-256 as computed before feed-in existed (the bills CLI's tariff_sha256).
    def digest(tariff: Tariff) -> str:
        text = json.dumps(tariff.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(text.encode("ascii")).hexdigest()

    assert "feed_in" not in SEED_TARIFF.model_dump(mode="json")
    assert digest(SEED_TARIFF) == "ddff1f2a09c6c5a66b61e2027f20954834b88cbdfc152b325817c0af670fddc6"
    assert digest(TOU_TARIFF) == "bc328645c4ed0b42f758b5b61df51850227879d7eb237e90f785dec64f614e11"
    assert digest(SOLAR) != digest(_with(SOLAR, feed_in={"rate": "0.06"}))
    assert Tariff.model_validate_json(SOLAR_TOU.model_dump_json()) == SOLAR_TOU


def test_export_intervals_outside_the_period_or_negative_are_refused() -> None:
    with pytest.raises(BillingError, match="outside the period"):
        compute_bill(SOLAR, 850_000, DECEMBER, export=[(datetime(2026, 1, 2, tzinfo=UTC), 5)])
    with pytest.raises(BillingError, match="must not be negative"):
        compute_bill(SOLAR, 850_000, DECEMBER, export=-5)
    with pytest.raises(BillingError, match="needs export intervals or Wh per window"):
        compute_bill(SOLAR_TOU, {"Off-peak": 1}, DECEMBER, export=5)


@pytest.mark.parametrize(
    ("tariff", "feed_in", "message"),
    [
        (SEED_TARIFF, {"rate": "0.05", "windows": [{"window": "x", "rate": "0.1"}]}, "not both"),
        (SEED_TARIFF, {"label": "x"}, "not neither"),
        (SEED_TARIFF, {"windows": [{"window": "On-peak", "rate": "0.1"}]}, "need a time-of-use tariff"),
        (TOU_TARIFF, {"windows": [{"window": "On-peak", "rate": "0.1"}]}, r"\['Off-peak'\] have no feed-in rate"),
        (TOU_TARIFF, {"windows": [{"window": "On-peak", "rate": "0.1"}, {"window": "Off-peak", "rate": "0.1"},
                                  {"window": "Shoulder", "rate": "0.1"}]}, r"\['Shoulder'\] are not energy windows"),
        (SEED_TARIFF, {"rate": 0.05}, "decimal strings"),
        (SEED_TARIFF, {"rate": "-0.05"}, "greater than or equal to 0"),
        (SEED_TARIFF, {"rate": "0.05", "kind": "flat"}, "Extra inputs are not permitted"),
    ],
)
def test_bad_feed_in_is_refused(tariff: Tariff, feed_in: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _with(tariff, feed_in=feed_in)


def test_bad_feed_in_in_the_config_file_names_its_line_and_reason() -> None:
    text = """gateway_id = "gw"

[tariffs.solar]
currency = "USD"
energy = { kind = "tiered", tiers = [{ rate = "0.10" }] }

[tariffs.solar.feed_in]
windows = [{ window = "Peak", rate = "0.15" }]
"""
    with pytest.raises(InvalidConfig) as info:
        parse_config(text)
    (problem,) = info.value.problems
    assert (problem.path, problem.line) == ("tariffs.solar.feed_in", 7)
    assert "feed-in rates by window need a time-of-use tariff" in problem.message


@settings(max_examples=200, deadline=None)
@given(imported=st.integers(0, 5_000_000), exported=st.integers(0, 5_000_000),
       rate=st.decimals(min_value=0, max_value=Decimal("0.5"), places=5))
def test_credit_is_exact_and_never_changes_the_charges(imported: int, exported: int, rate: Decimal) -> None:
    tariff = _with(SEED_TARIFF, feed_in={"rate": str(rate)})

    bill = compute_bill(tariff, imported, DECEMBER, export=exported)

    assert bill.charges_minor == compute_bill(SEED_TARIFF, imported, DECEMBER).total_minor
    assert bill.feed_in_minor == -round_half_away(Fraction(exported, 1000) * Fraction(rate) * 100)
    assert bill.total_minor == bill.charges_minor + bill.feed_in_minor == sum(i.amount_minor for i in bill.line_items)


def test_tou_feed_in_attribution_follows_the_interval_start_in_local_time() -> None:
    # 20:45 local is the last on-peak quarter hour; 21:00 is off-peak (weekday on-peak is 15-21).
    export = [(_local(3, 20, 45), 1000), (_local(3, 21), 1000)]
    bill = compute_bill(SOLAR_TOU, {"Off-peak": 0}, DECEMBER, export=export)
    lines = {i.label: i.quantity for i in bill.line_items if i.kind is LineKind.FEED_IN}
    assert lines == {"Feed-in credit (Off-peak)": 1, "Feed-in credit (On-peak)": 1}
    assert bill.feed_in_minor == -(15 + 4)
    assert _local(3, 21) - _local(3, 20, 45) == timedelta(minutes=15)
