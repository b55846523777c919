"""Which intervals a late reading changes (pure).

A late reading only moves the boundary values between its stored
neighbours (see :func:`gateway.intervals.engine.reinterpolate`). This module
turns those new boundary values into interval changes: intervals whose energy
or quality changed, and intervals that can now be closed for the first time
(a reading older than everything known opens boundaries before the first one).
The ledger decides what each change becomes: an in-place revision while the
interval's credit has not left the box, a correction credit once it has.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from gateway.channels import Channel
from gateway.intervals.engine import INTERVAL_S, BoundaryValue, Interval, make_interval


@dataclass(frozen=True, slots=True)
class Change:
    interval: Interval
    previous: Interval | None
    """The stored interval it replaces; None for an interval closed for the first time."""


def plan_changes(meter: str, new_values: Iterable[BoundaryValue], known: Mapping[int, BoundaryValue],
                 stored: Mapping[int, Interval], anchor_s: int | None, *,
                 channel: Channel = Channel.IMPORT) -> tuple[list[Change], int | None]:
    """Interval changes implied by new boundary values.

    ``known`` holds the stored boundary values (interval edges and the anchor),
    ``stored`` the stored intervals by start, ``anchor_s`` the last fixed boundary.
    Returns the changes in time order and the anchor after them; the intervals are ``channel``'s
    (all of ``known`` and ``stored`` are of that one channel).
    """
    merged = dict(known)
    touched: set[int] = set()
    for value in new_values:
        if merged.get(value.t_s) != value:
            touched.add(value.t_s)
        merged[value.t_s] = value
    if not touched:
        return [], anchor_s
    anchor = max(touched) if anchor_s is None else max(anchor_s, max(touched))
    starts = sorted({s for b in touched for s in (b - INTERVAL_S, b)})
    changes: list[Change] = []
    for start in starts:
        end = start + INTERVAL_S
        a, b = merged.get(start), merged.get(end)
        if a is None or b is None or end > anchor:
            continue
        interval = make_interval(meter, start, a.wh, a.grade, b.wh, b.grade, channel)
        previous = stored.get(start)
        if previous is None or (previous.wh, previous.start_grade, previous.end_grade,
                                previous.register_start_wh) != (interval.wh, interval.start_grade,
                                                                interval.end_grade, interval.register_start_wh):
            changes.append(Change(interval, previous))
    return changes, anchor
