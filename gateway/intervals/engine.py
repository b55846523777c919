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

Held suspects are kept in time order, all after the last accepted reading. A
reading at or before the newest held suspect is out of order: it is ``LATE``
(``DUPLICATE`` if it repeats a held one), never added to the held list — with
one exception: a reading that continues the current series and comes before
*every* held suspect is simply the series' next reading and is accepted (the
suspects stay held). So an epoch can only ever step forward in time.

**Glitch epochs.** Agreeing readings are not proof of a new register: a bridge
that reboots may publish 0, 0, 0 (or a low counter of its own) for a while. An
idle replaced meter shows exactly that pattern too, so it still confirms an
epoch (refusing flat readings would stall an idle meter's intervals for as long
as it stays idle). Instead the engine remembers the series it left — its last
reading (time, raw, virtual), the size of the jump, and the open interval's
grade — for up to :data:`MAX_FORMER_SERIES` epoch changes, until the new epoch
has counted as much energy as the jump (a genuinely reset register has then
come at least that far on its own). A reading **returns** to a former series
when it is at or above that series' last reading, the series could have got
there (within the meter's maximum power from that reading, when known), and
the current series explains it worse:

* a reading *on* the current series returns at once if it rises over the
  current series by more than all the energy counted since the change. This
  is the bridge that published 0, 0, 0 and now shows the real register again
  (without a maximum power, that rise is "plausible"). A reset register that
  climbs through its old value on its own rises by less, so it does not
  return. One reading is enough because a return credits less energy than the
  current series would have for the same reading;
* a reading *off* the current series (below it, or rising faster than the
  meter can measure) is held like any suspect. When :data:`CONFIRM_READINGS`
  held readings agree and the first of them returns to a former series, the
  epoch is reverted instead of a new one being started. So a single misread
  never undoes a real epoch (which could credit up to the maximum power over
  all the time since the change).

If several former series qualify, the one that credits the least energy wins.
A return **reverts** the epoch: no energy is credited for the jump, a
``register_epoch_reverted`` event is recorded, and

* if no interval boundary passed since the change, the glitch's readings are
  rejected outright: the state goes back to the former series' last reading
  and the new reading follows on from it as if nothing had happened;
* otherwise the intervals closed during the glitch stay as they are (credits
  may have left the box). The virtual register then goes on from the former
  series' value, ``raw + former offset``, and the span from the last
  glitch reading is substituted (S17/18). If the glitch itself counted more than
  that (a garbage counter that rose), the register cannot go back: the excess
  stays credited and the virtual register stays that much ahead. It never goes
  down, and the intervals still add up exactly to it.

The engine works on a *virtual* register (raw value plus the epoch offset)
that never decreases, so no interval is ever negative.

**Long gaps.** Moving from one reading to the next costs O(1) however many
intervals it closes: they come back as :class:`Run` descriptions, produced one
by one on demand, so the ledger writes a month's outage in bounded slices with
flat memory. A gap longer than :data:`MAX_FILL_GAP_MS` (a year) is not filled
at all: it can only be a clock that was never set or a meter that was
elsewhere, and filling it would mean hundreds of thousands of intervals from
one reading. The meter's timeline restarts at the reading instead, with the
register's movement across the gap recorded in a ``gap_not_filled`` event.

Every rise is judged against the meter's ceiling (``max_power_w``, see
:mod:`gateway.intervals.plausibility`); a reading without one is judged by
nothing, so the ledger never feeds one.

Readings are placed by their wall time in integer milliseconds; all
arithmetic is exact integer arithmetic.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from enum import StrEnum
from itertools import pairwise

from gateway.channels import Channel
from gateway.intervals.model import (
    ACTUAL,
    DEFAULT_ESTIMATE_GAP_MS,
    EPOCH_CHANGE,
    ESTIMATED_GAP,
    INTERVAL_MS,
    INTERVAL_S,
    SUBSTITUTED_GAP,
    Grade,
    Interval,
    Quality,
    Run,
    boundaries_between,
    interpolate,
    make_interval,
    segment_grade,
)
from gateway.intervals.plausibility import consistent, plausible_rise

__all__ = [
    "ACTUAL",
    "CONFIRM_READINGS",
    "DEFAULT_ESTIMATE_GAP_MS",
    "EPOCH_CHANGE",
    "ESTIMATED_GAP",
    "INTERVAL_MS",
    "INTERVAL_S",
    "MAX_FILL_GAP_MS",
    "SUBSTITUTED_GAP",
    "BoundaryValue",
    "Disposition",
    "EngineError",
    "Event",
    "FormerSeries",
    "Grade",
    "Interval",
    "MeterState",
    "Quality",
    "Reading",
    "Run",
    "Step",
    "boundaries_between",
    "feed",
    "feed_many",
    "formers_from_json",
    "formers_to_json",
    "interpolate",
    "make_interval",
    "reinterpolate",
    "segment_grade",
]

CONFIRM_READINGS = 3
"""Consecutive readings on a lower series that prove a reset or replacement."""
ROLLOVER_MAX_FRACTION = 10
"""A fall is a rollover only if the wrapped increase is under 1/10 of the register's range."""
MAX_FORMER_SERIES = 4
"""How many series left at an epoch change are remembered, to recognise a return to one of them."""
MAX_FILL_GAP_MS = 366 * 86_400_000
"""The longest gap between two readings that is filled with intervals: a year, so no reading can ever
close more than 35 136 of them. A longer silence is not an outage any bill could still use but a
clock that was never set (a meter's first reading stamped 1970) or a meter that was elsewhere: the
timeline restarts at the reading (see :func:`_restart`)."""


class EngineError(RuntimeError):
    """An internal invariant of the interval engine broke: a bug, never a property of the data."""


@dataclass(frozen=True, slots=True)
class Reading:
    """One cumulative register value as read from a meter."""

    meter: str
    t_ms: int
    """Wall time of the reading, Unix milliseconds UTC."""
    register_wh: int
    """Cumulative energy of the reading's channel in whole Wh, as the meter shows it (raw)."""
    source: str = "modbus"
    meter_clock: bool = False
    """True when ``t_ms`` comes from the meter's own clock (e.g. an MQTT payload's
    timestamp), not the gateway's: then a step of the gateway's clock does not move it."""
    register_modulus_wh: int | None = None
    """Where the register wraps to zero (from the profile's data type), if it is a counter that wraps."""
    max_power_w: float | None = None
    """The most the meter can measure: a rise faster than this is a misread until confirmed."""
    channel: Channel = Channel.IMPORT
    """Which cumulative register this is (:mod:`gateway.channels`): each channel is a series of its own."""


@dataclass(frozen=True, slots=True)
class MeterState:
    """What the engine remembers about one channel of a meter between readings.

    Each (meter, channel) has a state of its own: an export register's epochs, rollovers, held
    suspects and open interval never touch the import register's.
    """

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
    """Suspect (t_ms, raw) readings off the current series, awaiting confirmation: in time order,
    all after ``last_t_ms``."""
    formers: tuple[FormerSeries, ...] = ()
    """Series left at recent epoch changes (oldest first): a reading that returns to one reverts the
    epoch. Persist with :func:`formers_to_json` / :func:`formers_from_json`."""
    channel: Channel = Channel.IMPORT
    """The register this state follows; :func:`feed` refuses a reading of another channel."""


@dataclass(frozen=True, slots=True)
class FormerSeries:
    """The series a meter left at an epoch change: where it stood, to recognise a return to it."""

    t_ms: int
    """Time of the series' last reading before the change."""
    raw_wh: int
    """Its raw register value."""
    virtual_wh: int
    """Its virtual register value (also where the new epoch's virtual register began)."""
    jump_wh: int
    """How far the register jumped at the change; once the new epoch has counted this much, it stands."""
    anchor_grade: Grade = ACTUAL
    """The open interval's start grade before the change flagged it (restored if the change is undone)."""

    @property
    def offset_wh(self) -> int:
        return self.virtual_wh - self.raw_wh


def formers_to_json(formers: tuple[FormerSeries, ...]) -> str:
    """Compact text for storage, e.g. ``[[t_ms, raw, virtual, jump, "A"], ...]``."""
    return json.dumps([[f.t_ms, f.raw_wh, f.virtual_wh, f.jump_wh, f.anchor_grade.encode()] for f in formers],
                      separators=(",", ":"))


def formers_from_json(text: str | None) -> tuple[FormerSeries, ...]:
    if not text:
        return ()
    return tuple(FormerSeries(int(t), int(raw), int(virtual), int(jump), Grade.decode(grade))
                 for t, raw, virtual, jump, grade in json.loads(text))


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
    """Result of feeding one reading: the new state, intervals it closed, what happened.

    The intervals are kept as :class:`Run` descriptions: after a long gap a reading closes
    thousands of them, and the ledger writes them in bounded slices instead of holding them all.
    """

    state: MeterState
    runs: tuple[Run, ...]
    disposition: Disposition
    events: tuple[Event, ...] = ()
    virtual_wh: int | None = None
    """The reading's value on the virtual register, when it was used."""

    @property
    def interval_count(self) -> int:
        return sum(len(run) for run in self.runs)

    @property
    def intervals(self) -> tuple[Interval, ...]:
        """Every interval closed, in time order (all at once: for small steps and tests)."""
        return tuple(interval for run in self.runs for interval in run.intervals())


def _advance(state: MeterState, meter: str, t1: int, v1: int, raw1: int, estimate_gap_ms: int,
             forced: Grade | None = None, *, pending: tuple[tuple[int, int], ...] = (),
             formers: tuple[FormerSeries, ...] | None = None) -> tuple[MeterState, Run | None]:
    """Move forward from the last reading to (t1, v1); return the run of intervals it completes.

    O(1) however long the gap: the run describes its intervals, it does not list them.
    ``pending`` becomes the new state's held suspects (all after ``t1``); ``formers`` its former
    series (default: the state's), less those the new epoch has outgrown.
    """
    assert state.last_t_ms is not None
    assert state.last_wh is not None
    t0, v0 = state.last_t_ms, state.last_wh
    if t1 <= t0:
        raise EngineError(f"interval engine for meter {meter} asked to step from t={t0} ms back to t={t1} ms: "
                          "refusing rather than closing an interval twice (this is a bug)")
    if v1 < v0:
        raise EngineError(f"interval engine for meter {meter} asked to move the virtual register down from "
                          f"{v0} to {v1} Wh at t={t1} ms: refusing rather than emitting negative energy (a bug)")
    anchor = None
    if state.anchor_s is not None and state.anchor_wh is not None:
        anchor = (state.anchor_s, state.anchor_wh, state.anchor_grade)
    run = Run(meter, anchor, t0, v0, t1, v1, forced or segment_grade(t1 - t0, estimate_gap_ms), forced,
              state.channel)
    anchor_s, anchor_wh, anchor_grade = run.last_boundary() or (state.anchor_s, state.anchor_wh, state.anchor_grade)
    if formers is None:
        formers = state.formers
    if formers:
        formers = tuple(f for f in formers if v1 - f.virtual_wh < f.jump_wh)
    # Built directly, not with dataclasses.replace: this runs for every reading of every meter.
    new = MeterState(state.meter, t1, v1, anchor_s, anchor_wh, anchor_grade, state.offset_wh, raw1, pending,
                     formers, state.channel)
    return new, run if len(run) else None


def _runs(*runs: Run | None) -> tuple[Run, ...]:
    return tuple(run for run in runs if run is not None)


def _held(state: MeterState) -> tuple[tuple[int, int], ...]:
    """The held suspects, in time order and all after the last accepted reading.

    Always true of what this engine stores; enforced here for state saved by older versions,
    which kept the held list in arrival order.
    """
    pending, last_t = state.pending, state.last_t_ms
    if not pending or last_t is None:
        return pending
    if pending[0][0] > last_t and all(a[0] < b[0] for a, b in pairwise(pending)):
        return pending
    by_time = {t: raw for t, raw in sorted(pending) if t > last_t}
    return tuple(by_time.items())


def _return_to(state: MeterState, t: int, raw: int, continued: int, max_power_w: float | None, *,
               confirmed: bool = False) -> FormerSeries | None:
    """The former series this reading returns to, if any (see the module docstring).

    A reading off the current series can only return once ``confirmed`` by agreeing successors.
    """
    assert state.last_t_ms is not None
    assert state.last_raw_wh is not None
    assert state.last_wh is not None
    on_current = plausible_rise(state.last_t_ms, state.last_raw_wh, t, continued, max_power_w)
    if not on_current and not confirmed:
        return None
    best: FormerSeries | None = None
    for former in state.formers:
        if not plausible_rise(former.t_ms, former.raw_wh, t, raw, max_power_w):
            continue  # below the former series, or further above it than it could have got
        if on_current and continued - state.last_raw_wh <= state.last_wh - former.virtual_wh:
            continue  # the current series explains it at least as well
        if best is None or raw - former.raw_wh <= raw - best.raw_wh:
            best = former  # the least energy; the newest on a tie
    return best


def feed(state: MeterState, reading: Reading, *, estimate_gap_ms: int = DEFAULT_ESTIMATE_GAP_MS) -> Step:
    """Add one reading to its (meter, channel)'s state; return the intervals it closes."""
    raw, t = reading.register_wh, reading.t_ms
    if reading.channel != state.channel:
        raise EngineError(f"interval engine for meter {reading.meter}: a {reading.channel} reading fed to the "
                          f"{state.channel} channel's state; the channels never mix (this is a bug)")
    if state.last_t_ms is None or state.last_wh is None or state.last_raw_wh is None:
        virtual = raw + state.offset_wh
        on_boundary = t % INTERVAL_MS == 0
        new = replace(state, last_t_ms=t, last_wh=virtual, last_raw_wh=raw,
                      anchor_s=t // 1000 if on_boundary else None, anchor_wh=virtual if on_boundary else None,
                      anchor_grade=ACTUAL)
        return Step(new, (), Disposition.ACCEPTED, virtual_wh=virtual)
    last_t, last_raw = state.last_t_ms, state.last_raw_wh
    if t <= last_t:
        if t == last_t and raw == last_raw:
            return Step(state, (), Disposition.DUPLICATE)
        return Step(state, (), Disposition.LATE)
    if t - last_t > MAX_FILL_GAP_MS:
        return _restart(state, reading)
    held = _held(state)
    if held != state.pending:
        state = replace(state, pending=held)

    events: list[Event] = []
    offset = state.offset_wh
    modulus = reading.register_modulus_wh
    wrapped = bool(modulus) and raw < last_raw and \
        0 <= raw + (modulus or 0) - last_raw <= (modulus or 0) // ROLLOVER_MAX_FRACTION
    continued = raw + (modulus or 0) if wrapped else raw
    plausible = plausible_rise(last_t, last_raw, t, continued, reading.max_power_w)
    early = bool(held) and t <= held[-1][0]
    if early:
        # Out of order with the held suspects. Only a reading before every one of them may
        # go on (the series' own next reading, or a return to a former series); anything
        # else would put the held list, and so an epoch change, out of time order.
        if (t, raw) in held:
            return Step(state, (), Disposition.DUPLICATE)
        if t >= held[0][0]:
            return Step(state, (), Disposition.LATE)
    if state.formers:
        former = _return_to(state, t, raw, continued, reading.max_power_w)
        if former is not None:
            return _revert(state, reading, former, ((t, raw),), estimate_gap_ms)
    keep: tuple[tuple[int, int], ...] = ()
    if early:
        if not plausible:
            return Step(state, (), Disposition.LATE)
        keep = held  # still later than this reading: they wait for their own successors
    if not plausible:
        # Below the series, or rising faster than the meter can measure: one bad read must
        # not start a new epoch (nor be billed); wait for the next readings to tell.
        pending = (*held, (t, raw))[-CONFIRM_READINGS:]
        if len(pending) < CONFIRM_READINGS or not consistent(pending, reading.max_power_w):
            return Step(replace(state, pending=pending), (), Disposition.SUSPECT)
        if state.formers:
            first_t, first_raw = pending[0]
            former = _return_to(state, first_t, first_raw, first_raw, reading.max_power_w, confirmed=True)
            if former is not None:
                return _revert(state, reading, former, pending, estimate_gap_ms)
        return _new_epoch(state, reading, pending, estimate_gap_ms)
    if wrapped:
        offset += modulus or 0
        events.append(Event("rollover", f"register wrapped from {last_raw} to {raw} Wh"))
    if held and not keep:
        events.append(Event("suspects_discarded",
                            f"{len(held)} reading(s) off the series were glitches"))
    virtual = raw + offset
    if offset != state.offset_wh:
        state = replace(state, offset_wh=offset)
    new, run = _advance(state, reading.meter, t, virtual, raw, estimate_gap_ms, pending=keep)
    return Step(new, _runs(run), Disposition.ACCEPTED, tuple(events), virtual)


def _restart(state: MeterState, reading: Reading) -> Step:
    """The meter was silent longer than any gap is filled: its timeline starts again at this reading.

    Like a first reading (nothing before it is closed), except that the virtual register goes on
    from where it stood, so it never goes down. The register's movement across the silence is
    recorded in the event, not credited: no interval of it could be placed.
    """
    assert state.last_t_ms is not None
    assert state.last_wh is not None
    t, raw = reading.t_ms, reading.register_wh
    on_boundary = t % INTERVAL_MS == 0
    event = Event("gap_not_filled",
                  f"no reading for {(t - state.last_t_ms) / 86_400_000:.0f} days, longer than the "
                  f"{MAX_FILL_GAP_MS // 86_400_000} days a gap is filled (a clock that was never set, or a meter "
                  f"that was elsewhere): the register went from {state.last_raw_wh} to {raw} Wh meanwhile, "
                  "not credited; the meter's intervals start again here")
    new = MeterState(state.meter, t, state.last_wh, t // 1000 if on_boundary else None,
                     state.last_wh if on_boundary else None, ACTUAL, state.last_wh - raw, raw, channel=state.channel)
    return Step(new, (), Disposition.ACCEPTED, (event,), state.last_wh)


def _new_epoch(state: MeterState, reading: Reading, pending: tuple[tuple[int, int], ...],
               estimate_gap_ms: int) -> Step:
    """Confirmed reset/replacement: continue the virtual register from where it stood."""
    assert state.last_t_ms is not None
    assert state.last_wh is not None
    assert state.last_raw_wh is not None
    first_t, first_raw = pending[0]
    offset = state.last_wh - first_raw
    event = Event("register_epoch", f"register went from {state.last_raw_wh} to {first_raw} Wh and stayed there: "
                                    "meter reset or replaced; zero energy assumed across the change")
    former = FormerSeries(state.last_t_ms, state.last_raw_wh, state.last_wh, abs(state.last_raw_wh - first_raw),
                          state.anchor_grade)
    formers = (*state.formers, former)[-MAX_FORMER_SERIES:]
    current = replace(state, offset_wh=offset)
    current, run = _advance(current, reading.meter, first_t, first_raw + offset, first_raw, estimate_gap_ms,
                            forced=EPOCH_CHANGE, formers=formers)
    runs = [run]
    if run is None and current.anchor_s is not None:
        # The change fell inside the still-open interval: flag it through its start boundary.
        current = replace(current, anchor_grade=current.anchor_grade.worse(EPOCH_CHANGE))
    virtual = first_raw + offset
    for t, raw in pending[1:]:
        virtual = raw + offset
        current, run = _advance(current, reading.meter, t, virtual, raw, estimate_gap_ms)
        runs.append(run)
    return Step(current, _runs(*runs), Disposition.ACCEPTED, (event,), virtual)


def _revert(state: MeterState, reading: Reading, former: FormerSeries, series: tuple[tuple[int, int], ...],
            estimate_gap_ms: int) -> Step:
    """The register came back to a series it left: the epochs since were a glitch (see the module docstring).

    ``series`` are the (t_ms, raw) readings on the former series, in time order: the one that returns
    first, then those that confirmed it; ``reading`` is the last of them.
    """
    assert state.last_t_ms is not None
    assert state.last_wh is not None
    first_t, first_raw = series[0]
    index = state.formers.index(former)
    older = state.formers[:index]
    dropped = len(state.formers) - index
    detail = (f"register returned to {first_raw} Wh, at or above the {former.raw_wh} Wh it stood at before "
              f"{'an epoch change' if dropped == 1 else f'{dropped} epoch changes'}: "
              "a glitch, not a new register; no energy credited for the jump")
    if not boundaries_between(former.t_ms, state.last_t_ms):
        # Nothing was closed since the change: reject the glitch's readings outright and go
        # on from the former series' last reading as if they never came.
        flagged = former.anchor_grade.worse(EPOCH_CHANGE)
        current = replace(state, last_t_ms=former.t_ms, last_wh=former.virtual_wh, last_raw_wh=former.raw_wh,
                          offset_wh=former.offset_wh, pending=(), formers=older,
                          anchor_grade=former.anchor_grade if state.anchor_grade == flagged else state.anchor_grade)
        runs: list[Run | None] = []
        events = [Event("register_epoch_reverted", detail + "; its readings are rejected")]
        virtual: int | None = None
        for t, raw in series:
            step = feed(current, replace(reading, t_ms=t, register_wh=raw), estimate_gap_ms=estimate_gap_ms)
            if step.disposition is not Disposition.ACCEPTED:
                raise EngineError(f"interval engine for meter {reading.meter}: reading {raw} Wh at t={t} ms was "
                                  f"{step.disposition} on the series it returned to (this is a bug)")
            current, virtual = step.state, step.virtual_wh
            runs.extend(step.runs)
            events.extend(step.events)
        return Step(current, _runs(*runs), Disposition.ACCEPTED, tuple(events), virtual)
    # Intervals were closed on the glitch's series: they stand. Go on from the former series'
    # value, substituting the span since the glitch's last reading; never down.
    virtual = max(state.last_wh, first_raw + former.offset_wh)
    offset = virtual - first_raw
    current = replace(state, offset_wh=offset)
    current, run = _advance(current, reading.meter, first_t, virtual, first_raw, estimate_gap_ms,
                            forced=EPOCH_CHANGE, formers=older)
    runs = [run]
    if run is None and current.anchor_s is not None:
        current = replace(current, anchor_grade=current.anchor_grade.worse(EPOCH_CHANGE))
    for t, raw in series[1:]:
        virtual = raw + offset
        current, run = _advance(current, reading.meter, t, virtual, raw, estimate_gap_ms)
        runs.append(run)
    excess = offset - former.offset_wh
    detail += "; intervals closed during it stand and the span since its last reading is substituted"
    if excess:
        detail += f"; it had counted {excess} Wh more than the former series, which stay credited"
    return Step(current, _runs(*runs), Disposition.ACCEPTED, (Event("register_epoch_reverted", detail),), virtual)


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
