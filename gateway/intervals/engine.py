"""Cumulative register readings → 15-minute interval energy (pure).

The rule that makes the output billing-grade: the register value at every
interval boundary is estimated once (linear interpolation between the
readings either side of it, rounded half-up to whole Wh), and an interval's
energy is the difference of its two boundary values. Consecutive intervals
therefore telescope: whatever the spacing of readings, the intervals between
two boundaries add up to exactly the difference of the register values at
those boundaries, and when a reading falls on a boundary that value *is* the
meter's register. Rounding never loses or creates a watt-hour.

Quality (NEM12 terms) follows from how each boundary value was obtained:

* ``A`` — a reading on the boundary, or readings no more than one interval apart around it;
* ``E`` method 54 (linear interpolation), reason 76 — the readings around it are further apart,
  up to ``estimate_gap_ms`` (default 1 h);
* ``S`` method 17 (linear interpolation), reason 76 — a longer gap, filled pro rata once the
  next reading arrived (never before: nothing is invented ahead of data);
* ``S`` method 17, reason 18 — the span where the register went down (new register epoch).

An interval is as good as the worse of its two boundaries.

Registers that go down: a fall that a counter wrap explains (the register's
width is known and the wrapped increase is small) is a **rollover**, counted on
through. Any other fall, and any rise faster than the meter's maximum power
allows, is held as *suspect*: one bad read must not start a
new epoch (its successor would then credit the whole register again). When
:data:`CONFIRM_READINGS` consecutive readings agree on the new, lower series,
the meter was **reset or replaced**: a new register epoch starts at the first
of them, with zero energy assumed across the change and an event recorded. A
reading that returns to the old series discards the suspects as glitches.

The engine works on a *virtual* register (raw value plus the epoch offset)
that never decreases, so no interval is ever negative.

Readings are placed by their wall time in integer milliseconds; all
arithmetic is exact integer arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from itertools import pairwise

INTERVAL_S = 900
INTERVAL_MS = INTERVAL_S * 1000
DEFAULT_ESTIMATE_GAP_MS = 3_600_000
CONFIRM_READINGS = 3
"""Consecutive readings on a lower series that prove a reset or replacement."""
ROLLOVER_MAX_FRACTION = 10
"""A fall is a rollover only if the wrapped increase is under 1/10 of the register's range."""

METHOD_ESTIMATE_LINEAR = 54
METHOD_SUBSTITUTE_LINEAR = 17
REASON_COMMS_FAULT = 76
REASON_READ_BELOW_PREVIOUS = 18


class Quality(StrEnum):
    """Interval quality in NEM12 terms."""

    ACTUAL = "A"
    ESTIMATED = "E"
    SUBSTITUTED = "S"


_BADNESS = {Quality.ACTUAL: 0, Quality.ESTIMATED: 1, Quality.SUBSTITUTED: 2}


@dataclass(frozen=True, slots=True)
class Grade:
    """How a boundary value (and so an interval) was obtained."""

    quality: Quality = Quality.ACTUAL
    method: int | None = None
    reason: int | None = None

    def worse(self, other: Grade) -> Grade:
        return other if _BADNESS[other.quality] > _BADNESS[self.quality] else self

    def encode(self) -> str:
        """Compact text for storage: ``A``, ``E54/76``, ``S17/18``."""
        if self.quality is Quality.ACTUAL:
            return "A"
        return f"{self.quality.value}{self.method or ''}/{self.reason or ''}"

    @classmethod
    def decode(cls, text: str | None) -> Grade:
        if not text or text == "A":
            return ACTUAL
        method, _, reason = text[1:].partition("/")
        return cls(Quality(text[0]), int(method) if method else None, int(reason) if reason else None)


ACTUAL = Grade()
ESTIMATED_GAP = Grade(Quality.ESTIMATED, METHOD_ESTIMATE_LINEAR, REASON_COMMS_FAULT)
SUBSTITUTED_GAP = Grade(Quality.SUBSTITUTED, METHOD_SUBSTITUTE_LINEAR, REASON_COMMS_FAULT)
EPOCH_CHANGE = Grade(Quality.SUBSTITUTED, METHOD_SUBSTITUTE_LINEAR, REASON_READ_BELOW_PREVIOUS)


def segment_grade(spacing_ms: int, estimate_gap_ms: int) -> Grade:
    """The grade of a boundary interpolated between two readings ``spacing_ms`` apart."""
    if spacing_ms <= INTERVAL_MS:
        return ACTUAL
    if spacing_ms <= estimate_gap_ms:
        return ESTIMATED_GAP
    return SUBSTITUTED_GAP


@dataclass(frozen=True, slots=True)
class Reading:
    """One cumulative register value as read from a meter."""

    meter: str
    t_ms: int
    """Wall time of the reading, Unix milliseconds UTC."""
    register_wh: int
    """Cumulative import energy in whole Wh, as the meter shows it (raw)."""
    source: str = "modbus"
    meter_clock: bool = False
    """True when ``t_ms`` comes from the meter's own clock (e.g. an MQTT payload's
    timestamp), not the gateway's: then a step of the gateway's clock does not move it."""
    register_modulus_wh: int | None = None
    """Where the register wraps to zero (from the profile's data type), if it is a counter that wraps."""
    max_power_w: float | None = None
    """The most the meter can measure: a rise faster than this is a misread until confirmed."""


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
    """Virtual register at ``start`` (raw value plus the epoch offset)."""
    register_end_wh: int
    method: int | None = None
    reason: int | None = None
    start_grade: Grade = ACTUAL
    end_grade: Grade = ACTUAL


def make_interval(meter: str, start: int, start_wh: int, start_grade: Grade, end_wh: int,
                  end_grade: Grade) -> Interval:
    grade = start_grade.worse(end_grade)
    return Interval(meter, start, start + INTERVAL_S, end_wh - start_wh, grade.quality, start_wh, end_wh,
                    grade.method, grade.reason, start_grade, end_grade)


@dataclass(frozen=True, slots=True)
class MeterState:
    """What the engine remembers about a meter between readings."""

    meter: str
    last_t_ms: int | None = None
    last_wh: int | None = None
    """Virtual register of the last accepted reading."""
    anchor_s: int | None = None
    """The last boundary whose register value is fixed (intervals are closed up to here)."""
    anchor_wh: int | None = None
    anchor_grade: Grade = ACTUAL
    offset_wh: int = 0
    """Added to raw register values: grows by the modulus at a rollover, resets at a new epoch."""
    last_raw_wh: int | None = None
    pending: tuple[tuple[int, int], ...] = ()
    """Suspect (t_ms, raw) readings below the current series, awaiting confirmation."""


class Disposition(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    """The same reading again: nothing new to learn."""
    LATE = "late"
    """Older than the newest reading: the ledger revises the intervals it touches."""
    SUSPECT = "suspect"
    """Off the current series (below it, or rising faster than the meter can measure): held until
    confirmed as a new epoch or discarded as a glitch."""


@dataclass(frozen=True, slots=True)
class Event:
    kind: str
    detail: str


@dataclass(frozen=True, slots=True)
class Step:
    """Result of feeding one reading: the new state, intervals it closed, what happened."""

    state: MeterState
    intervals: tuple[Interval, ...]
    disposition: Disposition
    events: tuple[Event, ...] = ()
    virtual_wh: int | None = None
    """The reading's value on the virtual register, when it was used."""


def _round_div(numerator: int, denominator: int) -> int:
    """numerator/denominator rounded half-up, exact for integers (denominator > 0)."""
    return (2 * numerator + denominator) // (2 * denominator)


def interpolate(t0: int, e0: int, t1: int, e1: int, t: int) -> int:
    return e0 + _round_div((e1 - e0) * (t - t0), t1 - t0)


def boundaries_between(t0_ms: int, t1_ms: int) -> range:
    """Boundaries (ms) b with t0 < b <= t1."""
    return range((t0_ms // INTERVAL_MS + 1) * INTERVAL_MS, t1_ms + 1, INTERVAL_MS)


def _advance(state: MeterState, meter: str, t1: int, v1: int, raw1: int, estimate_gap_ms: int,
             forced: Grade | None = None) -> tuple[MeterState, list[Interval]]:
    """Move forward from the last reading to (t1, v1), closing the intervals it completes."""
    assert state.last_t_ms is not None
    assert state.last_wh is not None
    t0, v0 = state.last_t_ms, state.last_wh
    grade = forced or segment_grade(t1 - t0, estimate_gap_ms)
    anchor_s, anchor_wh, anchor_grade = state.anchor_s, state.anchor_wh, state.anchor_grade
    closed: list[Interval] = []
    for b_ms in boundaries_between(t0, t1):
        on_reading = b_ms == t1
        value = v1 if on_reading else interpolate(t0, v0, t1, v1, b_ms)
        b_grade = ACTUAL if on_reading else grade
        b_s = b_ms // 1000
        if anchor_s is not None and anchor_wh is not None:
            # A forced grade (an epoch change) marks the interval ending on the reading that
            # proves it, even though the reading itself is an actual value.
            end_grade = b_grade.worse(forced) if forced and on_reading else b_grade
            closed.append(make_interval(meter, anchor_s, anchor_wh, anchor_grade, value, end_grade))
        anchor_s, anchor_wh, anchor_grade = b_s, value, b_grade
    # Built directly, not with dataclasses.replace: this runs for every reading of every meter.
    new = MeterState(state.meter, t1, v1, anchor_s, anchor_wh, anchor_grade, state.offset_wh, raw1, ())
    return new, closed


def _plausible_rise(t0: int, raw0: int, t1: int, raw1: int, max_power_w: float | None) -> bool:
    if raw1 < raw0:
        return False
    return max_power_w is None or raw1 - raw0 <= max_power_w * (t1 - t0) / 3_600_000 + 1


def _consistent(series: tuple[tuple[int, int], ...], max_power_w: float | None) -> bool:
    """Do these readings form a believable series of their own?"""
    return all(_plausible_rise(t0, r0, t1, r1, max_power_w) for (t0, r0), (t1, r1) in pairwise(series))


def feed(state: MeterState, reading: Reading, *, estimate_gap_ms: int = DEFAULT_ESTIMATE_GAP_MS) -> Step:
    """Add one reading to a meter's state; return the intervals it closes."""
    raw, t = reading.register_wh, reading.t_ms
    if state.last_t_ms is None or state.last_wh is None or state.last_raw_wh is None:
        virtual = raw + state.offset_wh
        on_boundary = t % INTERVAL_MS == 0
        new = replace(state, last_t_ms=t, last_wh=virtual, last_raw_wh=raw,
                      anchor_s=t // 1000 if on_boundary else None, anchor_wh=virtual if on_boundary else None,
                      anchor_grade=ACTUAL)
        return Step(new, (), Disposition.ACCEPTED, virtual_wh=virtual)
    if t <= state.last_t_ms:
        if t == state.last_t_ms and raw == state.last_raw_wh:
            return Step(state, (), Disposition.DUPLICATE)
        return Step(state, (), Disposition.LATE)

    events: list[Event] = []
    offset = state.offset_wh
    modulus = reading.register_modulus_wh
    wrapped = bool(modulus) and raw < state.last_raw_wh and \
        0 <= raw + (modulus or 0) - state.last_raw_wh <= (modulus or 0) // ROLLOVER_MAX_FRACTION
    continued = raw + (modulus or 0) if wrapped else raw
    if not _plausible_rise(state.last_t_ms, state.last_raw_wh, t, continued, reading.max_power_w):
        # Below the series, or rising faster than the meter can measure: one bad read must
        # not start a new epoch (nor be billed); wait for the next readings to tell.
        pending = (*state.pending, (t, raw))[-CONFIRM_READINGS:]
        if len(pending) < CONFIRM_READINGS or not _consistent(pending, reading.max_power_w):
            return Step(replace(state, pending=pending), (), Disposition.SUSPECT)
        return _new_epoch(state, reading, pending, estimate_gap_ms)
    if wrapped:
        offset += modulus or 0
        events.append(Event("rollover", f"register wrapped from {state.last_raw_wh} to {raw} Wh"))
    if state.pending:
        events.append(Event("suspects_discarded",
                            f"{len(state.pending)} reading(s) below the series were glitches"))
    virtual = raw + offset
    if offset != state.offset_wh:
        state = replace(state, offset_wh=offset)
    new, closed = _advance(state, reading.meter, t, virtual, raw, estimate_gap_ms)
    return Step(new, tuple(closed), Disposition.ACCEPTED, tuple(events), virtual)


def _new_epoch(state: MeterState, reading: Reading, pending: tuple[tuple[int, int], ...],
               estimate_gap_ms: int) -> Step:
    """Confirmed reset/replacement: continue the virtual register from where it stood."""
    assert state.last_wh is not None
    assert state.last_raw_wh is not None
    first_t, first_raw = pending[0]
    offset = state.last_wh - first_raw
    event = Event("register_epoch", f"register went from {state.last_raw_wh} to {first_raw} Wh and stayed there: "
                                    "meter reset or replaced; zero energy assumed across the change")
    current = replace(state, offset_wh=offset)
    closed: list[Interval] = []
    current, out = _advance(current, reading.meter, first_t, first_raw + offset, first_raw, estimate_gap_ms,
                            forced=EPOCH_CHANGE)
    closed.extend(out)
    if not out and current.anchor_s is not None:
        # The change fell inside the still-open interval: flag it through its start boundary.
        current = replace(current, anchor_grade=current.anchor_grade.worse(EPOCH_CHANGE))
    virtual = first_raw + offset
    for t, raw in pending[1:]:
        virtual = raw + offset
        current, out = _advance(current, reading.meter, t, virtual, raw, estimate_gap_ms)
        closed.extend(out)
    return Step(current, tuple(closed), Disposition.ACCEPTED, (event,), virtual)


@dataclass(frozen=True, slots=True)
class BoundaryValue:
    t_s: int
    wh: int
    grade: Grade


def reinterpolate(before: tuple[int, int] | None, late: tuple[int, int], after: tuple[int, int], *,
                  estimate_gap_ms: int = DEFAULT_ESTIMATE_GAP_MS) -> list[BoundaryValue]:
    """Boundary values between two stored readings once a late reading lands between them.

    Arguments are (t_ms, virtual Wh). Returns every boundary b with
    before < b < after (or late <= b < after when there is no reading before),
    valued from the reading pair that now brackets it. A boundary exactly on
    ``after`` keeps its value (``after`` itself did not change).
    """
    out: list[BoundaryValue] = []
    lt, lv = late
    at, av = after
    start = before[0] if before else lt - 1
    for b_ms in boundaries_between(start, at - 1):
        if b_ms == lt:
            out.append(BoundaryValue(b_ms // 1000, lv, ACTUAL))
        elif b_ms < lt:
            assert before is not None
            bt, bv = before
            out.append(BoundaryValue(b_ms // 1000, interpolate(bt, bv, lt, lv, b_ms),
                                     segment_grade(lt - bt, estimate_gap_ms)))
        else:
            out.append(BoundaryValue(b_ms // 1000, interpolate(lt, lv, at, av, b_ms),
                                     segment_grade(at - lt, estimate_gap_ms)))
    return out


def feed_many(state: MeterState, readings: list[Reading], *,
              estimate_gap_ms: int = DEFAULT_ESTIMATE_GAP_MS) -> tuple[MeterState, list[Interval]]:
    """Feed readings in order (late ones are ignored here; the ledger revises for them)."""
    out: list[Interval] = []
    for reading in readings:
        step = feed(state, reading, estimate_gap_ms=estimate_gap_ms)
        state = step.state
        out.extend(step.intervals)
    return state, out
