"""Totals of 15-minute intervals per hour, local day and billing period, with coverage and worst quality (pure).

Every total carries how many intervals it *should* hold next to how many it does, because a sum
over an incomplete day looks exactly like a day of low usage; the consumer decides whether to show,
bill or estimate it. The rules:

* Input is ``(start, wh, quality)``: ``start`` Unix seconds UTC on the 900 s grid, ``wh`` a
  non-negative integer, ``quality`` a NEM12 letter. A start seen twice is an error rather than
  being summed twice or silently dropped: duplicates mean an upstream bug, and energy is money.
* ``present`` counts intervals carrying data; an ``N`` (null) interval is not data, so it adds its
  (zero) energy and makes the worst quality ``N`` but does not count towards coverage.
* Worst quality ranks ``A < F < S < E < N`` by how far the number is from a measurement that will
  stand: ``F`` is a substitution agreed to be final, ``S`` a substitution that an actual read may
  still replace, ``E`` a forward estimate made before any read of the period existed, ``N`` no data.
* A local day is the half-open UTC range between two local midnights
  (``gateway.billing.period.local_midnight_utc``), so its expected count is 92/96/100 on DST days
  and an interval always lands in the day whose expected count includes it — also in zones whose
  DST change happens at midnight, where "the local date of the start" would disagree.
* Local hours are keyed by the hour's start as an aware datetime with a *fixed* offset: the two
  01:00 hours of a fall-back night are then different keys (a ``ZoneInfo`` datetime differing only
  by ``fold`` compares and hashes equal). The expected count of a local hour is the number of grid
  slots whose wall clock floors to it, so a 30-minute DST shift (Australia/Lord_Howe) yields hours
  of 2 and 6 slots rather than a wrong 4.
* Billing periods reuse ``gateway.billing.period`` (cycle start day, clamping, zone validation), so
  these totals and a bill always agree on which days belong to a period.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from fractions import Fraction
from typing import TypeVar
from zoneinfo import ZoneInfo

from gateway.billing.period import (
    BillingPeriod,
    billing_period_for,
    local_midnight_utc,
    zone_for,
)
from gateway.billing.period import (
    expected_intervals as _period_expected_intervals,
)
from gateway.errors import GatewayError
from gateway.intervals.engine import INTERVAL_S

QUALITY_RANK: dict[str, int] = {"A": 0, "F": 1, "S": 2, "E": 3, "N": 4}
"""NEM12 quality letters, best first (see module docstring for why this order)."""

_HOUR_S = 3600

IntervalTuple = tuple[int, int, str]
"""``(start, wh, quality)``: start Unix seconds UTC (multiple of 900), energy in Wh, NEM12 quality letter."""

K = TypeVar("K", bound=Hashable)


class AggregateError(GatewayError, ValueError):
    """Interval data cannot be aggregated as given (off-grid, duplicate, negative, unknown quality).

    A ``ValueError`` too, so generic callers that treat bad input as ``ValueError`` keep working.
    """


def worst_quality(qualities: Iterable[str]) -> str | None:
    """The least trustworthy letter among ``qualities``; ``None`` when there are none."""
    worst: str | None = None
    for q in qualities:
        if q not in QUALITY_RANK:
            raise AggregateError(f"unknown interval quality {q!r}: expected one of {', '.join(QUALITY_RANK)}")
        if worst is None or QUALITY_RANK[q] > QUALITY_RANK[worst]:
            worst = q
    return worst


@dataclass(frozen=True, slots=True)
class Totals:
    """Energy of a bucket with how complete and how trustworthy it is."""

    wh: int
    present: int
    """Intervals carrying data (quality other than ``N``)."""
    expected: int
    """Intervals a complete bucket holds (92/96/100 for a local day, 4 for a UTC hour)."""
    worst: str | None
    """Worst quality letter of the supplied intervals, ``None`` if none were supplied."""

    @property
    def coverage(self) -> Fraction:
        """``present / expected`` exactly, so "complete" is a comparison and not a float tolerance."""
        return Fraction(self.present, self.expected) if self.expected else Fraction(0)

    @property
    def complete(self) -> bool:
        return self.present == self.expected


def _check(item: IntervalTuple) -> IntervalTuple:
    start, wh, quality = item
    if isinstance(start, bool) or not isinstance(start, int) or start % INTERVAL_S:
        raise AggregateError(f"interval start {start!r} must be integer Unix seconds on the {INTERVAL_S} s grid")
    if isinstance(wh, bool) or not isinstance(wh, int) or wh < 0:
        raise AggregateError(f"interval at {start} must have non-negative integer Wh, got {wh!r}")
    if quality not in QUALITY_RANK:
        raise AggregateError(
            f"interval at {start} has unknown quality {quality!r}: expected one of {', '.join(QUALITY_RANK)}"
        )
    return start, wh, str(quality)


def _fold(
    intervals: Iterable[IntervalTuple],
    key_of: Callable[[int], K],
    expected_of: Callable[[K], int],
) -> dict[K, Totals]:
    """Group checked intervals by ``key_of(start)``; result ordered by first interval start."""
    seen: set[int] = set()
    wh: dict[K, int] = {}
    present: dict[K, int] = {}
    worst: dict[K, str] = {}
    for item in sorted(intervals, key=lambda i: i[0]):
        start, energy, quality = _check(item)
        if start in seen:
            raise AggregateError(f"interval starting at {start} appears more than once")
        seen.add(start)
        key = key_of(start)
        wh[key] = wh.get(key, 0) + energy
        present[key] = present.get(key, 0) + (quality != "N")
        if key not in worst or QUALITY_RANK[quality] > QUALITY_RANK[worst[key]]:
            worst[key] = quality
    return {k: Totals(wh[k], present[k], expected_of(k), worst[k]) for k in wh}


def _zone(tz: str | ZoneInfo) -> ZoneInfo:
    return tz if isinstance(tz, ZoneInfo) else zone_for(tz)


def expected_intervals(day: date, tz: str | ZoneInfo) -> int:
    """Quarter-hours in local ``day`` of zone ``tz``: 96, or 92/100 (or 94/98) on a DST change day."""
    return _period_expected_intervals(day, _zone(tz))


def local_day_of(start: int, zone: ZoneInfo) -> date:
    """The local day whose ``[midnight, next midnight)`` UTC range contains ``start``."""
    instant = datetime.fromtimestamp(start, UTC)
    day = instant.astimezone(zone).date()
    if instant < local_midnight_utc(day, zone):
        return day - timedelta(days=1)
    if instant >= local_midnight_utc(day + timedelta(days=1), zone):
        return day + timedelta(days=1)
    return day


def hourly_utc(intervals: Iterable[IntervalTuple]) -> dict[int, Totals]:
    """Totals per UTC hour, keyed by the hour's start in Unix seconds; hours without intervals are absent."""
    return _fold(intervals, lambda s: s - s % _HOUR_S, lambda _k: _HOUR_S // INTERVAL_S)


def _local_hour(start: int, zone: ZoneInfo) -> datetime:
    local = datetime.fromtimestamp(start, UTC).astimezone(zone)
    offset = local.utcoffset()
    assert offset is not None  # a ZoneInfo datetime always has one
    wall = local.replace(minute=0, second=0, microsecond=0, tzinfo=None)
    return wall.replace(tzinfo=timezone(offset))


def hourly_local(intervals: Iterable[IntervalTuple], tz: str | ZoneInfo) -> dict[datetime, Totals]:
    """Totals per local wall-clock hour, keyed by the hour's start with its fixed UTC offset."""
    zone = _zone(tz)

    def expected(hour: datetime) -> int:
        first = int(hour.timestamp())
        return sum(
            _local_hour(s, zone) == hour
            for s in range(first - first % INTERVAL_S, first + _HOUR_S, INTERVAL_S)
        )

    return _fold(intervals, lambda s: _local_hour(s, zone), expected)


def daily(intervals: Iterable[IntervalTuple], tz: str | ZoneInfo) -> dict[date, Totals]:
    """Totals per local calendar day of the site zone; days without intervals are absent."""
    zone = _zone(tz)
    return _fold(intervals, lambda s: local_day_of(s, zone), lambda d: _period_expected_intervals(d, zone))


def billing_periods(intervals: Iterable[IntervalTuple], tz: str, start_day: int = 1) -> dict[BillingPeriod, Totals]:
    """Totals per monthly billing cycle starting on ``start_day`` (29-31 clamp to short months' last day).

    ``expected`` covers the whole period, so a period still in progress reports partial coverage.
    """
    zone = zone_for(tz)

    def expected(period: BillingPeriod) -> int:
        return sum(_period_expected_intervals(d, zone) for d in period.dates())

    return _fold(intervals, lambda s: billing_period_for(local_day_of(s, zone), start_day, tz=tz), expected)
