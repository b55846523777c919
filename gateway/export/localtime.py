"""ESPI LocalTimeParameters from an IANA zone: standard offset, DST offset and the two DST rules.

ESPI describes a zone the POSIX way (one standard offset, one DST shift, a yearly start and end
rule), which cannot express everything tzdata knows. The simplification, chosen because Green
Button timestamps are UTC epoch seconds anyway and consumers use these parameters only to render
local time:

* Rules are derived from the actual transitions of one *reference year* (the year of the first
  exported interval). A zone that changed its rules in other years is described as in that year.
* ``tzOffset`` is the smaller of the year's offsets and ``dstOffset`` the difference to the larger,
  so a zone with "negative DST" in tzdata (Europe/Dublin) still gets a positive summer shift.
* A rule is "the n-th weekday of the month" (operators 2-5) or "the last weekday" (7), at the wall
  time just before the change (2:00 for a US spring change, 2:00 daylight time for the autumn one),
  which reproduces the well-known US rules ``360E2000``/``B40E2000``. If a year has more than two
  transitions (a Ramadan suspension) the first change in each direction is used.
* A zone without DST in the reference year gets ``dstOffset`` 0 and both rules ``FFFFFFFF``, the
  value Green Button readers treat as "no rule".

Rule bits (Green Button Alliance "Daylight Savings Time" note): 0-11 seconds, 12-16 hours,
17-19 day of week (1 = Monday), 20-24 day of month (0 = not used), 25-27 operator, 28-31 month.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

NO_RULE = "FFFFFFFF"
_OP_NTH_BASE = 2
"""Operator 2 is the first occurrence of the weekday in the month, 3 the second, ..."""
_OP_LAST = 7
_SCAN_STEP = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class LocalTimeParameters:
    tz_offset: int
    """Standard-time offset from UTC in seconds."""
    dst_offset: int
    """Seconds added during DST (0 when the zone has none)."""
    dst_start_rule: str
    dst_end_rule: str


def _offset_s(instant: datetime, zone: ZoneInfo) -> int:
    offset = instant.astimezone(zone).utcoffset()
    assert offset is not None  # ZoneInfo always answers for an aware instant
    return int(offset.total_seconds())


def _transitions(year: int, zone: ZoneInfo) -> list[tuple[datetime, int, int]]:
    """``(instant UTC, offset before, offset after)`` for every offset change in ``year`` (UTC)."""
    found: list[tuple[datetime, int, int]] = []
    t = datetime(year, 1, 1, tzinfo=UTC)
    end = datetime(year + 1, 1, 1, tzinfo=UTC)
    before = _offset_s(t, zone)
    while t < end:
        nxt = t + _SCAN_STEP
        after = _offset_s(nxt, zone)
        if after != before:
            lo, hi = t, nxt  # offset(lo) == before, offset(hi) == after; bisect to the second
            while hi - lo > timedelta(seconds=1):
                mid = lo + (hi - lo) / 2
                if _offset_s(mid, zone) == before:
                    lo = mid
                else:
                    hi = mid
            found.append((hi, before, after))
            before = after
        t = nxt
    return found


def encode_rule(instant: datetime, offset_before: int) -> str:
    """The 8-hex-digit ESPI rule for a change at ``instant`` given the offset in force just before it."""
    wall = instant.astimezone(UTC) + timedelta(seconds=offset_before)
    days_in_month = calendar.monthrange(wall.year, wall.month)[1]
    operator = _OP_LAST if wall.day + 7 > days_in_month else _OP_NTH_BASE + (wall.day - 1) // 7
    seconds = wall.minute * 60 + wall.second
    value = seconds | wall.hour << 12 | wall.isoweekday() << 17 | operator << 25 | wall.month << 28
    return f"{value:08X}"


def local_time_parameters(zone: ZoneInfo, year: int) -> LocalTimeParameters:
    """ESPI parameters describing ``zone`` as it behaves in ``year`` (see module docstring)."""
    changes = _transitions(year, zone)
    offsets = {_offset_s(datetime(year, 1, 1, tzinfo=UTC), zone)} | {after for _, _, after in changes}
    standard, summer = min(offsets), max(offsets)
    start = next((c for c in changes if c[2] > c[1]), None)
    end = next((c for c in changes if c[2] < c[1]), None)
    if start is None or end is None:
        return LocalTimeParameters(_offset_s(datetime(year, 7, 1, tzinfo=UTC), zone), 0, NO_RULE, NO_RULE)
    return LocalTimeParameters(
        standard, summer - standard, encode_rule(start[0], start[1]), encode_rule(end[0], end[1])
    )
