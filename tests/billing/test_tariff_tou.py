"""Time-of-use attribution: by interval start instant in the site's local time, through DST changes."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from fractions import Fraction

import pytest

from gateway.billing import (
    BillingPeriod,
    Tariff,
    compute_bill,
    expected_intervals,
    local_midnight_utc,
)
from gateway.billing.period import zone_for
from gateway.billing.samples import TOU_TARIFF

STEP = timedelta(minutes=15)

NIGHT_DAY = Tariff.model_validate(
    {
        "name": "Night/day",
        "currency": "EUR",
        "energy": {
            "kind": "tou",
            "windows": [
                {"label": "Night", "rate": "0.20", "start_hour": 0, "end_hour": 6},
                {"label": "Day", "rate": "0.30", "start_hour": 6, "end_hour": 24},
            ],
        },
    }
)


def _day_of_intervals(day: date, tz: str, wh: int = 1000) -> list[tuple[datetime, int]]:
    zone = zone_for(tz)
    start, end = local_midnight_utc(day, zone), local_midnight_utc(day + timedelta(days=1), zone)
    count = (end - start) // STEP
    return [(start + i * STEP, wh) for i in range(count)]


def test_berlin_fall_back_day_has_seven_night_hours() -> None:
    # 2025-10-26 in Europe/Berlin: clocks go 03:00 CEST → 02:00 CET, so the day has 25 hours and the
    # local hour 02:00-03:00 happens twice. Local midnight is 2025-10-25T22:00Z.
    # Night (local 00-06) = 7 real hours = 28 intervals = 28 kWh × 0.20 = 5.60 EUR
    # Day   (local 06-24) = 18 hours     = 72 intervals = 72 kWh × 0.30 = 21.60 EUR
    # (Assuming a fixed +1 or +2 offset would give 24/76 intervals.)
    day = date(2025, 10, 26)
    intervals = _day_of_intervals(day, "Europe/Berlin")
    assert intervals[0][0] == datetime(2025, 10, 25, 22, 0, tzinfo=UTC)
    assert len(intervals) == 100 == expected_intervals(day, zone_for("Europe/Berlin"))

    bill = compute_bill(NIGHT_DAY, intervals, BillingPeriod(day, day + timedelta(days=1), "Europe/Berlin"))

    assert [(i.label, i.quantity, i.amount_minor) for i in bill.line_items] == [
        ("Night", Fraction(28), 560),
        ("Day", Fraction(72), 2160),
    ]
    assert bill.energy_wh == 100_000


def test_berlin_spring_forward_day_has_five_night_hours() -> None:
    # 2025-03-30: 02:00 CET → 03:00 CEST, a 23-hour day; local hour 02 does not exist.
    day = date(2025, 3, 30)
    intervals = _day_of_intervals(day, "Europe/Berlin")
    assert len(intervals) == 92

    bill = compute_bill(NIGHT_DAY, intervals, BillingPeriod(day, day + timedelta(days=1), "Europe/Berlin"))

    assert [(i.label, i.quantity) for i in bill.line_items] == [("Night", Fraction(20)), ("Day", Fraction(72))]


def test_sydney_spring_forward_skips_two_am() -> None:
    # 2025-10-05 in Australia/Sydney (a Sunday): 02:00 AEST → 03:00 AEDT. Local midnight is
    # 2025-10-04T14:00Z. Window "Early" is local 00-03: only 00:00-02:00 exists = 8 intervals.
    tariff = Tariff.model_validate(
        {
            "name": "Sydney test",
            "currency": "AUD",
            "energy": {
                "kind": "tou",
                "windows": [
                    {"label": "Early", "rate": "0.10", "start_hour": 0, "end_hour": 3},
                    {"label": "Rest", "rate": "0.40", "start_hour": 3, "end_hour": 24},
                ],
            },
        }
    )
    day = date(2025, 10, 5)
    intervals = _day_of_intervals(day, "Australia/Sydney", wh=250)
    assert intervals[0][0] == datetime(2025, 10, 4, 14, 0, tzinfo=UTC)
    assert len(intervals) == 92

    bill = compute_bill(tariff, intervals, BillingPeriod(day, day + timedelta(days=1), "Australia/Sydney"))

    assert [(i.label, i.quantity) for i in bill.line_items] == [("Early", Fraction(2)), ("Rest", Fraction(21))]
    # 8 × 0.25 kWh × 0.10 = 0.20 AUD; 84 × 0.25 kWh × 0.40 = 8.40 AUD
    assert [i.amount_minor for i in bill.line_items] == [20, 840]


def test_weekday_peak_weekend_and_holiday_off_peak() -> None:
    # Detroit, EST (UTC-5). One 1 kWh interval at local 16:00 on each of: Wed Dec 24 (weekday → peak),
    # Thu Dec 25 (holiday → off-peak), Sat Dec 27 (weekend → off-peak); one at 22:00 Wed (off-peak,
    # in the window that wraps midnight).
    tariff = TOU_TARIFF.model_copy(
        update={"energy": TOU_TARIFF.energy.model_copy(update={"holidays": (date(2025, 12, 25),)})}
    )
    period = BillingPeriod(date(2025, 12, 1), date(2026, 1, 1), "America/Detroit")
    intervals = [
        (datetime(2025, 12, 24, 21, 0, tzinfo=UTC), 1000),
        (datetime(2025, 12, 25, 21, 0, tzinfo=UTC), 1000),
        (datetime(2025, 12, 27, 21, 0, tzinfo=UTC), 1000),
        (datetime(2025, 12, 25, 3, 0, tzinfo=UTC), 1000),
    ]

    bill = compute_bill(tariff, intervals, period)

    energy = {i.label: i.quantity for i in bill.line_items if i.kind == "energy"}
    assert energy == {"Off-peak": 3, "On-peak": 1}


def test_pre_attributed_window_totals_bill_like_intervals() -> None:
    day = date(2025, 10, 26)
    period = BillingPeriod(day, day + timedelta(days=1), "Europe/Berlin")
    from_intervals = compute_bill(NIGHT_DAY, _day_of_intervals(day, "Europe/Berlin"), period)
    from_totals = compute_bill(NIGHT_DAY, {"Night": 28_000, "Day": 72_000}, period)
    assert from_totals == from_intervals


def test_tou_label_order_follows_tariff_and_drops_empty_windows() -> None:
    period = BillingPeriod(date(2025, 12, 1), date(2026, 1, 1), "America/Detroit")
    bill = compute_bill(TOU_TARIFF, {"On-peak": 5000}, period)
    assert [i.label for i in bill.line_items if i.kind == "energy"] == ["On-peak"]
    bill = compute_bill(TOU_TARIFF, {}, period)
    assert [i.label for i in bill.line_items if i.kind == "energy"] == ["Off-peak"]


@pytest.mark.parametrize("tz", ["Europe/Berlin", "Australia/Sydney", "America/Detroit", "UTC"])
def test_tou_attribution_conserves_energy_over_a_year(tz: str) -> None:
    zone = zone_for(tz)
    start = date(2025, 1, 1)
    total = 0
    by_label: dict[str, int] = {}
    for offset in range(365):
        day = start + timedelta(days=offset)
        assert expected_intervals(day, zone) in (92, 96, 100)
        intervals = _day_of_intervals(day, tz, wh=offset % 7 + 1)
        bill = compute_bill(TOU_TARIFF, intervals, BillingPeriod(day, day + timedelta(days=1), tz))
        total += sum(wh for _, wh in intervals)
        for item in bill.line_items:
            if item.kind == "energy":
                by_label[item.label] = by_label.get(item.label, 0) + int(item.quantity * 1000)
    assert sum(by_label.values()) == total
