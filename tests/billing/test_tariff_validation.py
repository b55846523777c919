"""Bad tariffs, periods and usage are refused with messages that say what to write instead."""

from __future__ import annotations

import tomllib
from dataclasses import FrozenInstanceError
from datetime import UTC, date, datetime
from typing import Any

import pytest

from gateway.billing import BillingError, BillingPeriod, Tariff, compute_bill
from gateway.billing.samples import SEED_TARIFF, TOU_TARIFF
from gateway.schema import ValidationError

DECEMBER = BillingPeriod(date(2025, 12, 1), date(2026, 1, 1), "America/Detroit")

SEED_TOML = """
[tariff]
name = "Residential (seed bill)"
currency = "USD"
fixed_charges = [{ label = "Readiness to Serve", amount = "15.00" }]
kwh_surcharges = [{ label = "PSCR Surcharge", rate = "0.00125" }]
fixed_surcharges = [{ label = "SAF Surcharge", amount = "7.00" }]

[tariff.energy]
kind = "tiered"
tiers = [{ up_to_kwh = "500", rate = "0.10" }, { rate = "0.12" }]
"""


def _base(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "t",
        "currency": "USD",
        "energy": {"kind": "tiered", "tiers": [{"rate": "0.10"}]},
    }
    data.update(changes)
    return data


def test_tariff_embeds_in_toml() -> None:
    tariff = Tariff.model_validate(tomllib.loads(SEED_TOML)["tariff"])
    assert tariff == SEED_TARIFF
    assert compute_bill(tariff, 850_000, DECEMBER).total_minor == 11506


def test_tariff_round_trips_through_json() -> None:
    for tariff in (SEED_TARIFF, TOU_TARIFF):
        assert Tariff.model_validate_json(tariff.model_dump_json()) == tariff


def test_tariff_is_frozen() -> None:
    with pytest.raises(FrozenInstanceError, match="cannot assign"):
        setattr(SEED_TARIFF, "name", "other")  # noqa: B010 - the assignment is the point


def test_float_rate_is_rejected_with_advice() -> None:
    with pytest.raises(ValidationError, match=r"decimal strings \(e.g. rate = \"0.10\"\)"):
        Tariff.model_validate(_base(energy={"kind": "tiered", "tiers": [{"rate": 0.1}]}))


@pytest.mark.parametrize(
    ("tiers", "message"),
    [
        ([{"up_to_kwh": "500", "rate": "0.10"}], "last tier must have no up_to_kwh"),
        (
            [{"up_to_kwh": "500", "rate": "0.1"}, {"up_to_kwh": "400", "rate": "0.1"}, {"rate": "0.1"}],
            "must be greater than the previous threshold 500",
        ),
        ([{"rate": "0.1"}, {"rate": "0.2"}], "tier 1 has no up_to_kwh but is not the last tier"),
        ([], "at least one tier"),
        ([{"up_to_kwh": "0", "rate": "0.1"}, {"rate": "0.1"}], "greater than 0"),
        ([{"rate": "-0.1"}], "greater than or equal to 0"),
        ([{"rate": "NaN"}], "finite number"),
    ],
)
def test_bad_tiers(tiers: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Tariff.model_validate(_base(energy={"kind": "tiered", "tiers": tiers}))


def test_tou_gap_and_overlap_are_named_by_hours() -> None:
    windows = [
        {"label": "A", "rate": "0.1", "start_hour": 0, "end_hour": 8, "days": "weekday"},
        {"label": "B", "rate": "0.2", "start_hour": 7, "end_hour": 20, "days": "weekday"},
        {"label": "A", "rate": "0.1", "start_hour": 0, "end_hour": 24, "days": "weekend"},
    ]
    with pytest.raises(ValidationError) as info:
        Tariff.model_validate(_base(energy={"kind": "tou", "windows": windows}))
    text = str(info.value)
    assert "weekday hours 7-8 are in more than one window" in text
    assert "weekday hours 20-24 are in no window" in text


def test_tou_same_label_different_rates_rejected() -> None:
    windows = [
        {"label": "A", "rate": "0.1", "start_hour": 0, "end_hour": 24, "days": "weekday"},
        {"label": "A", "rate": "0.2", "start_hour": 0, "end_hour": 24, "days": "weekend"},
    ]
    with pytest.raises(ValidationError, match="different rates"):
        Tariff.model_validate(_base(energy={"kind": "tou", "windows": windows}))


def test_tou_empty_window_rejected() -> None:
    windows = [{"label": "A", "rate": "0.1", "start_hour": 5, "end_hour": 5}]
    with pytest.raises(ValidationError, match="empty or ambiguous"):
        Tariff.model_validate(_base(energy={"kind": "tou", "windows": windows}))


def test_fixed_amount_finer_than_a_cent_rejected() -> None:
    with pytest.raises(ValidationError, match="more decimal places than USD allows"):
        Tariff.model_validate(_base(fixed_charges=[{"label": "X", "amount": "15.005"}]))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"currency": "usd"}, "pattern"),
        ({"colour": "red"}, "Extra inputs are not permitted"),
        ({"energy": {"kind": "flat", "rate": "0.1"}}, "does not match any of the expected tags"),
        ({"taxes": [{"label": "T", "percent": "101"}]}, "less than or equal to 100"),
        ({"name": "  "}, "at least 1 character"),
    ],
)
def test_other_bad_fields(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Tariff.model_validate(_base(**change))


def test_bad_periods() -> None:
    with pytest.raises(BillingError, match="must be after start"):
        BillingPeriod(date(2025, 12, 1), date(2025, 12, 1))
    with pytest.raises(BillingError, match="calendar date"):
        BillingPeriod(datetime(2025, 12, 1, tzinfo=UTC), date(2026, 1, 1))
    with pytest.raises(BillingError, match="IANA zone name"):
        BillingPeriod(date(2025, 12, 1), date(2026, 1, 1), "Mars/Olympus")


@pytest.mark.parametrize(
    ("tariff", "usage", "message"),
    [
        (TOU_TARIFF, 1000, "needs interval data or Wh per window"),
        (SEED_TARIFF, {"Off-peak": 1}, "not per-window totals"),
        (TOU_TARIFF, {"Shoulder": 1}, r"windows \['Shoulder'\]"),
        (SEED_TARIFF, -1, "must not be negative"),
        (SEED_TARIFF, [(datetime(2025, 12, 5, 12), 10)], "timezone-aware"),  # noqa: DTZ001
        (SEED_TARIFF, [(datetime(2025, 12, 5, 12, tzinfo=UTC), 1.5)], "integer number of Wh"),
        (SEED_TARIFF, [(datetime(2026, 1, 1, 5, tzinfo=UTC), 10)], "outside the period"),
        (
            SEED_TARIFF,
            [(datetime(2025, 12, 5, 12, tzinfo=UTC), 10), (datetime(2025, 12, 5, 12, tzinfo=UTC), 10)],
            "more than once",
        ),
    ],
)
def test_bad_usage(tariff: Tariff, usage: Any, message: str) -> None:
    with pytest.raises(BillingError, match=message):
        compute_bill(tariff, usage, DECEMBER)
