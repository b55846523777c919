"""Cumulative register readings → 15-minute interval energy (pure).

The rule that makes the output billing-grade: the register value at every
interval boundary is estimated once (linear interpolation between the
readings either side of it, rounded half-up to whole Wh), and an interval's
energy is the difference of its two boundary values. Consecutive intervals
therefore telescope: whatever the spacing of readings, the intervals between
two boundaries add up to exactly the difference of the register values at
those boundaries, and when a reading falls on a boundary that value *is* the
meter's register. Rounding never loses or creates a watt-hour.

The engine keeps one small state per meter channel (its last reading and the
last closed boundary) that the ledger persists in the same transaction as the
intervals it produced, so a restart continues exactly where it left off.

Readings are placed by their wall time in integer milliseconds, so the
arithmetic is exact integer arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

INTERVAL_S = 900
_INTERVAL_MS = INTERVAL_S * 1000


class Quality(StrEnum):
    """Interval quality in NEM12 terms."""

    ACTUAL = "A"
    """Both boundary values come from readings no more than one interval apart."""
    SUBSTITUTED = "S"
    """A boundary lies in a gap between readings longer than one interval: pro rata share of the gap."""


@dataclass(frozen=True, slots=True)
class Reading:
    """One cumulative register value as read from a meter."""

    meter: str
    t_ms: int
    """Wall time of the reading, Unix milliseconds UTC."""
    register_wh: int
    """Cumulative import energy in whole Wh."""
    source: str = "modbus"
    meter_clock: bool = False
    """True when ``t_ms`` comes from the meter's own clock (e.g. an MQTT payload's
    timestamp), not the gateway's: then a step of the gateway's clock does not move it."""


@dataclass(frozen=True, slots=True)
class Interval:
    """Energy of one meter in one 15-minute interval aligned to UTC."""

    meter: str
    start: int
    """Unix seconds, a multiple of 900."""
    end: int
    wh: int
    quality: Quality
    register_start_wh: int
    register_end_wh: int


@dataclass(frozen=True, slots=True)
class MeterState:
    """What the engine remembers about a meter between readings."""

    meter: str
    last_t_ms: int | None = None
    last_wh: int | None = None
    anchor_s: int | None = None
    """The last boundary whose register value is fixed (intervals are closed up to here)."""
    anchor_wh: int | None = None
    anchor_quality: Quality = Quality.ACTUAL


class Disposition(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    """Same instant as the last reading (or older): nothing new to learn."""
    BACKWARDS = "backwards"
    """The register went down: a reset, a replaced meter or a bad read."""


@dataclass(frozen=True, slots=True)
class Step:
    """Result of feeding one reading: the new state and any intervals it closed."""

    state: MeterState
    intervals: tuple[Interval, ...]
    disposition: Disposition


def _round_div(numerator: int, denominator: int) -> int:
    """numerator/denominator rounded half-up, exact for integers (denominator > 0)."""
    return (2 * numerator + denominator) // (2 * denominator)


def _interpolate(t0: int, e0: int, t1: int, e1: int, t: int) -> int:
    return e0 + _round_div((e1 - e0) * (t - t0), t1 - t0)


def feed(state: MeterState, reading: Reading) -> Step:
    """Add one reading to a meter's state; return the intervals it closes."""
    if state.last_t_ms is None or state.last_wh is None:
        anchor_s = None
        anchor_wh = None
        if reading.t_ms % _INTERVAL_MS == 0:
            anchor_s, anchor_wh = reading.t_ms // 1000, reading.register_wh
        new = replace(state, last_t_ms=reading.t_ms, last_wh=reading.register_wh,
                      anchor_s=anchor_s, anchor_wh=anchor_wh)
        return Step(new, (), Disposition.ACCEPTED)
    if reading.t_ms <= state.last_t_ms:
        return Step(state, (), Disposition.DUPLICATE)
    if reading.register_wh < state.last_wh:
        return Step(state, (), Disposition.BACKWARDS)

    t0, e0, t1, e1 = state.last_t_ms, state.last_wh, reading.t_ms, reading.register_wh
    gap = t1 - t0 > _INTERVAL_MS
    quality = Quality.SUBSTITUTED if gap else Quality.ACTUAL
    anchor_s, anchor_wh, anchor_quality = state.anchor_s, state.anchor_wh, state.anchor_quality
    closed: list[Interval] = []
    # Boundaries b with t0 < b <= t1, in milliseconds.
    first = (t0 // _INTERVAL_MS + 1) * _INTERVAL_MS
    for b_ms in range(first, t1 + 1, _INTERVAL_MS):
        wh_at_b = e1 if b_ms == t1 else _interpolate(t0, e0, t1, e1, b_ms)
        b_s = b_ms // 1000
        if anchor_s is not None and anchor_wh is not None:
            # An interval is as good as the worse of its two boundary estimates.
            q = Quality.SUBSTITUTED if Quality.SUBSTITUTED in (quality, anchor_quality) else Quality.ACTUAL
            closed.append(Interval(reading.meter, anchor_s, b_s, wh_at_b - anchor_wh, q, anchor_wh, wh_at_b))
        anchor_s, anchor_wh, anchor_quality = b_s, wh_at_b, quality
    new = MeterState(reading.meter, t1, e1, anchor_s, anchor_wh, anchor_quality)
    return Step(new, tuple(closed), Disposition.ACCEPTED)


def feed_many(state: MeterState, readings: list[Reading]) -> tuple[MeterState, list[Interval]]:
    """Feed readings in order; convenience for tests and replays."""
    out: list[Interval] = []
    for reading in readings:
        step = feed(state, reading)
        state = step.state
        out.extend(step.intervals)
    return state, out
