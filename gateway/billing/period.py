"""Billing periods: which local days a bill covers, and how long each of those days really is.

Conventions (utility practice, FIELD_NOTES "Tariff proration"):

* A period is a half-open range of *local calendar dates* ``[start, end)`` in the site's IANA zone:
  the start read date is a consumption day, the end read date is not. "December 2025" is
  ``BillingPeriod(date(2025, 12, 1), date(2026, 1, 1), "America/Detroit")``: 31 consumption days.
* A monthly cycle starts on a configurable day of the month; for 29-31 the start is clamped to the
  last day of shorter months, so a cycle with start day 31 runs Jan 31 → Feb 28 → Mar 31 → Apr 30.
* A *full cycle* is a period that is exactly one such monthly cycle for some start day. Full cycles
  are billed one whole standard period of fixed charges and tier allowances whatever their length
  (28-31 days); anything else is prorated by days (see ``gateway.billing.tariff.proration_factor``).
  Detecting this from the dates, rather than trusting a flag, means a December bill cannot be
  accidentally charged 31/30 of a month.
* Local days are not all 24 hours: a DST change makes a 23- or 25-hour day, so the number of
  15-minute intervals a day should hold (92/96/100) is computed from the zone, never assumed.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.billing.errors import BillingError

INTERVAL = timedelta(minutes=15)
"""Billing-grade interval length: the settlement interval the interval engine closes."""


def zone_for(key: str) -> ZoneInfo:
    """Resolve an IANA zone name with an error that tells the installer what to write instead."""
    try:
        return ZoneInfo(key)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise BillingError(
            f"unknown time zone {key!r}: use an IANA zone name such as 'Europe/Berlin' or 'America/Detroit'"
        ) from exc


def local_midnight_utc(day: date, zone: ZoneInfo) -> datetime:
    """The UTC instant a local calendar day begins.

    Converting through UTC matters: subtracting two aware datetimes that share a ``tzinfo`` ignores
    their offsets, which would make every DST day look 24 hours long.
    """
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def expected_intervals(day: date, zone: ZoneInfo, interval: timedelta = INTERVAL) -> int:
    """How many intervals a complete local day holds (96 normally, 92 or 100 on DST days)."""
    length = local_midnight_utc(day + timedelta(days=1), zone) - local_midnight_utc(day, zone)
    return length // interval


def _last_day(year: int, month: int) -> int:
    return calendar.monthrange(year, month)[1]


def _cycle_start(year: int, month: int, start_day: int) -> date:
    return date(year, month, min(start_day, _last_day(year, month)))


def _shift_month(year: int, month: int, delta: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + delta
    return index // 12, index % 12 + 1


def _check_date(name: str, value: object) -> date:
    # datetime is a subclass of date; accepting one would silently drop its time and zone.
    if isinstance(value, datetime) or not isinstance(value, date):
        raise BillingError(f"billing period {name} must be a calendar date (datetime.date), got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class BillingPeriod:
    """Consumption days ``[start, end)`` in zone ``tz``; validated on construction."""

    start: date
    end: date
    tz: str = "UTC"

    def __post_init__(self) -> None:
        _check_date("start", self.start)
        _check_date("end", self.end)
        if self.end <= self.start:
            raise BillingError(
                f"billing period end {self.end} must be after start {self.start} "
                "(end is exclusive: the December 2025 period is 2025-12-01 to 2026-01-01)"
            )
        zone_for(self.tz)

    @property
    def zone(self) -> ZoneInfo:
        return zone_for(self.tz)

    @property
    def days(self) -> int:
        """Consumption days: start included, end excluded."""
        return (self.end - self.start).days

    @property
    def start_utc(self) -> datetime:
        return local_midnight_utc(self.start, self.zone)

    @property
    def end_utc(self) -> datetime:
        return local_midnight_utc(self.end, self.zone)

    def contains(self, day: date) -> bool:
        return self.start <= day < self.end

    def dates(self) -> Iterator[date]:
        day = self.start
        while day < self.end:
            yield day
            day += timedelta(days=1)

    @property
    def is_full_cycle(self) -> bool:
        """True when the period is exactly one monthly cycle for some start day of month.

        Tries every start day rather than just ``start.day`` because a clamped cycle (start day 31 in
        a 30-day month) begins on a day number that differs from its configured start day.
        """
        return any(_cycle_bounds(self.start, sd) == (self.start, self.end) for sd in range(1, 32))

    def to_dict(self) -> dict[str, object]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat(), "tz": self.tz, "days": self.days}


def billing_period_for(day: date, start_day: int = 1, *, tz: str = "UTC") -> BillingPeriod:
    """The monthly cycle containing local date ``day``, cycles starting on ``start_day`` of each month.

    Start days 29-31 are clamped to the month's last day so every month has exactly one cycle start
    (utilities read on "the 31st or the last day of the month").
    """
    _check_date("day", day)
    if isinstance(start_day, bool) or not isinstance(start_day, int) or not 1 <= start_day <= 31:
        raise BillingError(f"billing cycle start_day must be an integer from 1 to 31, got {start_day!r}")
    start, end = _cycle_bounds(day, start_day)
    return BillingPeriod(start, end, tz)


def _cycle_bounds(day: date, start_day: int) -> tuple[date, date]:
    this_start = _cycle_start(day.year, day.month, start_day)
    if day >= this_start:
        ny, nm = _shift_month(day.year, day.month, 1)
        return this_start, _cycle_start(ny, nm, start_day)
    py, pm = _shift_month(day.year, day.month, -1)
    return _cycle_start(py, pm, start_day), this_start
