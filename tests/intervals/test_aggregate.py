"""Aggregation: energy is conserved, coverage is honest on DST days, worst quality is reported."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from fractions import Fraction
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.billing.period import BillingPeriod, local_midnight_utc
from gateway.errors import GatewayError
from gateway.intervals.aggregate import (
    QUALITY_RANK,
    AggregateError,
    Totals,
    billing_periods,
    daily,
    expected_intervals,
    hourly_local,
    hourly_utc,
    local_day_of,
    worst_quality,
)
from gateway.intervals.engine import INTERVAL_S, Quality

BERLIN = "Europe/Berlin"
SYDNEY = "Australia/Sydney"


def _ts(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp())


def _full_local_day(day: date, tz: str, wh: int = 10, quality: str = "A") -> list[tuple[int, int, str]]:
    zone = ZoneInfo(tz)
    start = int(local_midnight_utc(day, zone).timestamp())
    end = int(local_midnight_utc(day + timedelta(days=1), zone).timestamp())
    return [(s, wh, quality) for s in range(start, end, INTERVAL_S)]


@pytest.mark.parametrize(
    ("tz", "day", "slots"),
    [
        (BERLIN, date(2025, 3, 30), 92),
        (BERLIN, date(2025, 10, 26), 100),
        (BERLIN, date(2025, 7, 1), 96),
        (SYDNEY, date(2025, 4, 6), 100),
        (SYDNEY, date(2025, 10, 5), 92),
        (SYDNEY, date(2025, 1, 1), 96),
        ("Australia/Lord_Howe", date(2025, 10, 5), 94),  # a 30-minute DST shift
        ("Australia/Lord_Howe", date(2025, 4, 6), 98),
        ("UTC", date(2025, 3, 30), 96),
    ],
)
def test_expected_intervals_on_dst_days(tz: str, day: date, slots: int) -> None:
    assert expected_intervals(day, tz) == slots
    assert expected_intervals(day, ZoneInfo(tz)) == slots


@given(st.dates(date(2000, 1, 1), date(2037, 12, 31)), st.sampled_from([BERLIN, SYDNEY]))
def test_every_day_has_92_96_or_100_slots_and_years_balance(day: date, tz: str) -> None:
    assert expected_intervals(day, tz) in (92, 96, 100)
    year = [date(day.year, 1, 1) + timedelta(days=i) for i in range(366 if day.year % 4 == 0 else 365)]
    assert sum(expected_intervals(d, tz) for d in year) == 96 * len(year), "DST hours given back within the year"


def test_full_dst_days_are_complete() -> None:
    for tz, day, slots in [(BERLIN, date(2025, 3, 30), 92), (BERLIN, date(2025, 10, 26), 100),
                           (SYDNEY, date(2025, 10, 5), 92), (SYDNEY, date(2025, 4, 6), 100)]:
        totals = daily(_full_local_day(day, tz), tz)
        assert list(totals) == [day]
        t = totals[day]
        assert (t.wh, t.present, t.expected, t.complete, t.coverage) == (10 * slots, slots, slots, True, Fraction(1))


_WINDOW_START = _ts("2025-03-27T00:00:00+00:00")  # spans Berlin's spring change and Sydney's April change
_WINDOW_SLOTS = 14 * 96
_intervals = st.dictionaries(
    st.integers(0, _WINDOW_SLOTS - 1).map(lambda i: _WINDOW_START + i * INTERVAL_S),
    st.tuples(st.integers(0, 10_000), st.sampled_from(sorted(QUALITY_RANK))),
    max_size=400,
).map(lambda d: [(s, wh, q) for s, (wh, q) in d.items()])


@given(_intervals, st.sampled_from([BERLIN, SYDNEY, "Australia/Lord_Howe", "Asia/Kolkata", "UTC"]),
       st.integers(1, 31))
@settings(max_examples=150, deadline=None)
def test_every_aggregation_conserves_energy_and_bounds_coverage(
    intervals: list[tuple[int, int, str]], tz: str, start_day: int
) -> None:
    total_wh = sum(wh for _, wh, _ in intervals)
    with_data = sum(q != "N" for _, _, q in intervals)
    results: list[list[Totals]] = [
        list(hourly_utc(intervals).values()), list(hourly_local(intervals, tz).values()),
        list(daily(intervals, tz).values()), list(billing_periods(intervals, tz, start_day).values()),
    ]
    for buckets in results:
        assert sum(t.wh for t in buckets) == total_wh
        assert sum(t.present for t in buckets) == with_data
        for t in buckets:
            assert 0 <= t.present <= t.expected
            assert t.worst is not None
    worst_overall = worst_quality(q for _, _, q in intervals)
    for buckets in results:
        assert worst_quality(t.worst for t in buckets if t.worst) == worst_overall


@given(st.integers(_ts("1990-01-01T00:00:00+00:00") // INTERVAL_S, _ts("2037-01-01T00:00:00+00:00") // INTERVAL_S),
       st.sampled_from([BERLIN, SYDNEY, "America/Havana", "America/Santiago", "Asia/Beirut", "America/Sao_Paulo"]))
def test_local_day_contains_the_interval_even_when_dst_changes_at_midnight(slot: int, tz: str) -> None:
    zone = ZoneInfo(tz)
    start = slot * INTERVAL_S
    day = local_day_of(start, zone)
    begins, ends = local_midnight_utc(day, zone), local_midnight_utc(day + timedelta(days=1), zone)
    assert begins.timestamp() <= start < ends.timestamp()


def test_berlin_fall_back_has_two_two_oclock_hours() -> None:
    hours = hourly_local(_full_local_day(date(2025, 10, 26), BERLIN), BERLIN)
    assert len(hours) == 25
    cest, cet = timezone(timedelta(hours=2)), timezone(timedelta(hours=1))
    first, second = datetime(2025, 10, 26, 2, tzinfo=cest), datetime(2025, 10, 26, 2, tzinfo=cet)
    assert hours[first].present == hours[second].present == 4
    assert hours[first].wh == hours[second].wh == 40
    assert all(t.expected == 4 and t.complete for t in hours.values())


def test_berlin_spring_forward_has_no_two_oclock_hour() -> None:
    hours = hourly_local(_full_local_day(date(2025, 3, 30), BERLIN), BERLIN)
    assert len(hours) == 23
    assert [h.hour for h in hours] == [0, 1, *range(3, 24)]


def test_lord_howe_half_hour_shift_makes_short_and_long_hours() -> None:
    tz = "Australia/Lord_Howe"
    spring = hourly_local(_full_local_day(date(2025, 10, 5), tz), tz)
    assert sorted(t.expected for t in spring.values()).count(2) == 1  # 02:00 holds only 02:30-03:00
    autumn = hourly_local(_full_local_day(date(2025, 4, 6), tz), tz)
    assert sum(t.expected for t in autumn.values()) == 98
    assert all(t.complete for t in (*spring.values(), *autumn.values()))


def test_kolkata_local_hours_are_offset_by_half_an_hour_from_utc() -> None:
    start = _ts("2025-06-01T00:00:00+00:00")  # 05:30 in Kolkata
    hours = hourly_local([(start + i * INTERVAL_S, 1, "A") for i in range(4)], "Asia/Kolkata")
    ist = timezone(timedelta(hours=5, minutes=30))
    assert {k: (t.present, t.expected) for k, t in hours.items()} == {
        datetime(2025, 6, 1, 5, tzinfo=ist): (2, 4),
        datetime(2025, 6, 1, 6, tzinfo=ist): (2, 4),
    }


def test_hourly_utc_partial_hour_and_worst_quality() -> None:
    h = _ts("2025-06-01T10:00:00+00:00")
    totals = hourly_utc([(h, 5, "A"), (h + 900, 7, Quality.SUBSTITUTED), (h + 2700, 0, "N")])
    t = totals[h]
    assert (t.wh, t.present, t.expected, t.worst) == (12, 2, 4, "N")
    assert t.coverage == Fraction(1, 2)
    assert not t.complete


def test_billing_periods_use_the_configured_cycle() -> None:
    tz = "America/Detroit"
    intervals = _full_local_day(date(2025, 11, 14), tz, 3) + _full_local_day(date(2025, 11, 15), tz, 5, "E")
    totals = billing_periods(intervals, tz, start_day=15)
    oct_nov = BillingPeriod(date(2025, 10, 15), date(2025, 11, 15), tz)
    nov_dec = BillingPeriod(date(2025, 11, 15), date(2025, 12, 15), tz)
    assert list(totals) == [oct_nov, nov_dec]
    assert (totals[oct_nov].wh, totals[oct_nov].present, totals[oct_nov].worst) == (288, 96, "A")
    assert totals[oct_nov].expected == 31 * 96 + 4  # includes the 25-hour day of 2 November
    assert (totals[nov_dec].wh, totals[nov_dec].worst, totals[nov_dec].expected) == (480, "E", 30 * 96)


def test_december_period_in_berlin_expects_31_days() -> None:
    start = int(local_midnight_utc(date(2025, 12, 1), ZoneInfo(BERLIN)).timestamp())
    totals = billing_periods([(start, 1, "A")], BERLIN)
    (period, t), = totals.items()
    assert period == BillingPeriod(date(2025, 12, 1), date(2026, 1, 1), BERLIN)
    assert t.expected == 31 * 96


def test_null_intervals_count_for_quality_not_coverage() -> None:
    day = date(2025, 6, 1)
    intervals = _full_local_day(day, "UTC")
    intervals[5] = (intervals[5][0], 0, "N")
    t = daily(intervals, "UTC")[day]
    assert (t.present, t.expected, t.worst, t.complete) == (95, 96, "N", False)


def test_quality_ranking() -> None:
    assert worst_quality(["A", "F"]) == "F"
    assert worst_quality(["F", "S"]) == "S"
    assert worst_quality(["S", "E", "A"]) == "E"
    assert worst_quality(["E", "N"]) == "N"
    assert worst_quality([]) is None
    with pytest.raises(AggregateError):
        worst_quality(["X"])


@pytest.mark.parametrize(
    ("intervals", "message"),
    [
        ([(1, 1, "A")], "grid"),
        ([(900, -1, "A")], "non-negative"),
        ([(900, 1.5, "A")], "non-negative"),
        ([(900, True, "A")], "non-negative"),
        ([(True, 1, "A")], "grid"),
        ([(900, 1, "Q")], "quality"),
        ([(900, 1, "A"), (900, 2, "S")], "more than once"),
    ],
)
def test_bad_input_is_refused(intervals: list[tuple[int, int, str]], message: str) -> None:
    with pytest.raises(AggregateError, match=message) as info:
        daily(intervals, "UTC")
    assert isinstance(info.value, GatewayError)
    assert isinstance(info.value, ValueError)


def test_unknown_zone_is_refused() -> None:
    with pytest.raises(GatewayError, match="IANA"):
        daily([(900, 1, "A")], "Mars/Olympus")


def test_results_are_ordered_by_time_whatever_the_input_order() -> None:
    day1 = _full_local_day(date(2025, 6, 2), "UTC")
    day0 = _full_local_day(date(2025, 6, 1), "UTC")
    assert list(daily([*day1, *day0], "UTC")) == [date(2025, 6, 1), date(2025, 6, 2)]
    assert list(hourly_utc([*day1, *day0])) == sorted(hourly_utc([*day1, *day0]))
    assert datetime.fromtimestamp(next(iter(hourly_utc(day0))), UTC) == datetime(2025, 6, 1, tzinfo=UTC)
