"""Glitch epochs and out-of-order suspects: no jump is billed, no interval is closed twice.

A register that goes down and is confirmed by three agreeing readings starts a
new epoch, but a bridge that reboots publishes exactly that (0, 0, 0). When the
real register comes back, the epoch must be reverted, not the jump billed. And
suspect readings that arrive out of time order must never make an epoch change
step back over intervals that are already closed.
"""

from __future__ import annotations

import asyncio
import itertools
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stellar_sdk import Keypair

from gateway.intervals import INTERVAL_S, Disposition, Interval, MeterState, Quality, Reading, feed
from gateway.intervals.engine import (
    ACTUAL,
    CONFIRM_READINGS,
    EPOCH_CHANGE,
    EngineError,
    FormerSeries,
    _advance,
    formers_from_json,
    formers_to_json,
)
from gateway.ledger.store import Ledger

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z in ms, a boundary
S = 1000


def _run(readings: list[Reading], state: MeterState | None = None) -> tuple[MeterState, list[Interval], list[str],
                                                                            list[Disposition]]:
    state = state or MeterState("m")
    intervals: list[Interval] = []
    events: list[str] = []
    dispositions: list[Disposition] = []
    for reading in readings:
        step = feed(state, reading)
        state = step.state
        intervals.extend(step.intervals)
        events.extend(e.kind for e in step.events)
        dispositions.append(step.disposition)
    return state, intervals, events, dispositions


def _check_series(intervals: list[Interval]) -> None:
    """No duplicate or missing starts, no negative energy, and the intervals telescope."""
    starts = [i.start for i in intervals]
    assert len(starts) == len(set(starts)), "an interval was closed twice"
    for a, b in itertools.pairwise(intervals):
        assert a.end == b.start, "intervals are contiguous"
        assert a.register_end_wh == b.register_start_wh, "boundary value shared by neighbours"
    for i in intervals:
        assert i.wh >= 0
        assert i.wh == i.register_end_wh - i.register_start_wh
        assert i.start % INTERVAL_S == 0
    if intervals:
        assert sum(i.wh for i in intervals) == intervals[-1].register_end_wh - intervals[0].register_start_wh


def _readings(seq: list[tuple[int, int]], **kw: float) -> list[Reading]:
    return [Reading("m", T0 + t * S, wh, max_power_w=kw.get("max_power_w")) for t, wh in seq]


# ---- defect 1: a glitch epoch must not bill the jump back -------------------------------------------------------

ZERO_GLITCH = [(0, 5_000_000), (300, 5_000_050), (600, 5_000_100), (660, 0), (720, 0), (780, 0),
               (900, 5_000_160), (1800, 5_000_300), (2700, 5_000_450)]


@pytest.mark.parametrize("max_power_w", [None, 20_000.0])
def test_a_bridge_publishing_zero_after_a_reboot_does_not_bill_the_jump_back(max_power_w: float | None) -> None:
    state, intervals, events, dispositions = _run(_readings(ZERO_GLITCH, max_power_w=max_power_w))
    assert events == ["register_epoch", "register_epoch_reverted"]
    _check_series(intervals)
    assert sum(i.wh for i in intervals) == 5_000_450 - 5_000_000, "exactly the true consumption"
    assert [(i.start - T0 // S, i.wh) for i in intervals] == [(0, 160), (900, 140), (1800, 150)]
    # No boundary passed during the glitch: its readings are rejected as if they never came.
    assert all(i.quality is Quality.ACTUAL for i in intervals)
    assert state.offset_wh == 0
    assert state.last_wh == 5_000_450
    assert state.formers == ()
    if max_power_w is None:
        # The return is a rise on the glitch's series: taken at once (it credits less than the glitch would).
        assert dispositions[6:] == [Disposition.ACCEPTED] * 3
    else:
        # Off the glitch's series (too fast): held like any suspect until three agree, then reverted.
        assert dispositions[6:] == [Disposition.SUSPECT, Disposition.SUSPECT, Disposition.ACCEPTED]


def test_the_reviewers_zero_glitch_credits_the_true_consumption() -> None:
    _, intervals, _, _ = _run(_readings(ZERO_GLITCH[:8]))
    assert [(i.start - T0 // S, i.wh) for i in intervals] == [(0, 160), (900, 140)]


@pytest.mark.parametrize("max_power_w", [None, 20_000.0])
def test_a_long_zero_glitch_that_closed_intervals_still_bills_only_true_consumption(
        max_power_w: float | None) -> None:
    seq = [(0, 5_000_000), (300, 5_000_050), (600, 5_000_100)]
    seq += [(660 + k * 300, 0) for k in range(24)]  # two hours of zeros: eight intervals close on them
    seq += [(8400, 5_001_400), (9000, 5_001_500), (9060, 5_001_510)]
    state, intervals, events, _ = _run(_readings(seq, max_power_w=max_power_w))
    assert events == ["register_epoch", "register_epoch_reverted"]
    _check_series(intervals)
    assert sum(i.wh for i in intervals) == 5_001_500 - 5_000_000, "up to the last closed boundary"
    assert state.last_wh == 5_001_510
    assert max(i.wh for i in intervals) < 2_000, "never the register's whole value"
    assert state.offset_wh == 0, "the virtual register is back on the real one"
    by_start = {i.start - T0 // S: i for i in intervals}
    # The interval of the change and the span from the glitch's last reading to the return
    # are substituted; intervals closed on the glitch's own readings stand as they were sent
    # (0 Wh): the consumption they missed is credited in the substituted span instead.
    for start in (0, 7200, 8100):
        assert (by_start[start].quality, by_start[start].reason) == (Quality.SUBSTITUTED, 18)
    assert [by_start[s].wh for s in range(900, 7200, 900)] == [0] * 7
    assert by_start[7200].wh + by_start[8100].wh == 5_001_500 - 5_000_100


def test_a_garbage_counter_during_the_glitch_is_never_billed_as_the_jump() -> None:
    seq = [(0, 5_000_000), (600, 5_000_100)]
    seq += [(660 + k * 300, 10 * k) for k in range(12)]  # the bridge counts up from 0 on its own
    seq += [(4500, 5_000_160), (5400, 5_000_300)]
    state, intervals, events, _ = _run(_readings(seq))
    assert events == ["register_epoch", "register_epoch_reverted"]
    _check_series(intervals)
    garbage = 10 * 11
    assert sum(i.wh for i in intervals) <= 5_000_300 - 5_000_000 + garbage
    assert state.last_wh - state.offset_wh == 5_000_300


def test_a_reset_register_climbing_through_its_old_value_is_not_a_return() -> None:
    seq = [(0, 50), (300, 100)] + [(600 + k * 300, 10 * k) for k in range(40)]  # reset to 0, then up to 390
    state, intervals, events, _ = _run(_readings(seq))
    assert events == ["register_epoch"]
    _check_series(intervals)
    assert state.last_wh == 100 + 390, "everything the new register counted is credited"
    assert state.formers == (), "once the new register has come as far as the jump, the old one is forgotten"


def test_a_real_replacement_then_a_glitch_returns_to_the_replacement_not_the_old_meter() -> None:
    seq = [(0, 5_000_000), (300, 5_000_050)]
    seq += [(600, 3_000_000), (900, 3_000_020), (1200, 3_000_040), (1500, 3_000_060)]  # a used meter goes in
    seq += [(1800, 0), (2100, 0), (2400, 0)]  # then its bridge reboots
    seq += [(2700, 3_000_100), (3600, 3_000_200)]
    state, intervals, events, _ = _run(_readings(seq))
    assert events == ["register_epoch", "register_epoch", "register_epoch_reverted"]
    _check_series(intervals)
    # Old meter 50 Wh, nothing across the replacement, the new one 200 - 0 ... 3_000_200 - 3_000_000.
    assert sum(i.wh for i in intervals) <= 50 + 200
    assert state.last_wh - state.offset_wh == 3_000_200


def test_two_glitch_epochs_in_a_row_return_to_the_real_register() -> None:
    seq = [(0, 5_000_000), (300, 5_000_050)]
    seq += [(600, 1_000), (660, 1_000), (720, 1_000)]  # the bridge publishes a stale value ...
    seq += [(780, 0), (840, 0), (880, 0)]  # ... then zeros
    seq += [(900, 5_000_100), (1800, 5_000_200)]
    state, intervals, events, _ = _run(_readings(seq))
    assert events == ["register_epoch", "register_epoch", "register_epoch_reverted"]
    _check_series(intervals)
    assert sum(i.wh for i in intervals) == 5_000_200 - 5_000_000
    assert state.offset_wh == 0
    assert state.formers == ()


def test_a_jump_up_glitch_epoch_is_reverted_by_the_real_register() -> None:
    seq = [(0, 10_000), (300, 10_050), (600, 90_000_000), (660, 90_000_000), (720, 90_000_000),
           (900, 10_150), (1800, 10_300), (2700, 10_450)]
    state, intervals, events, _ = _run(_readings(seq, max_power_w=20_000.0))
    assert events == ["register_epoch", "register_epoch_reverted"]
    _check_series(intervals)
    assert sum(i.wh for i in intervals) == 10_450 - 10_000
    assert state.offset_wh == 0


def test_one_misread_cannot_undo_a_real_jump_up_replacement() -> None:
    """A day after a meter with a higher register went in, one read lands just above the old one."""
    seq = [(0, 10_000), (300, 10_050), (600, 5_000_000), (900, 5_000_100), (1200, 5_000_200)]
    seq += [(1500 + k * 900, 5_000_200 + 300 * k) for k in range(1, 97)]
    last_t, last_wh = seq[-1]
    seq += [(last_t + 60, 400_000)]  # 390 kWh above the old register: within 20 kW over a day
    seq += [(last_t + 900 * k, last_wh + 300 * k) for k in range(1, 4)]
    state, intervals, events, dispositions = _run(_readings(seq, max_power_w=20_000.0))
    assert events == ["register_epoch", "suspects_discarded"]
    assert dispositions[-4] is Disposition.SUSPECT
    _check_series(intervals)
    assert max(i.wh for i in intervals) <= 300
    assert state.last_wh - state.offset_wh == last_wh + 900


def test_the_confirmed_epochs_of_the_existing_rules_still_stand() -> None:
    """A replaced meter idle at 0 still starts an epoch, and stays on it while it counts."""
    seq = [(k * 300, 1_000_000 + 10 * k) for k in range(4)] + [(1200 + k * 300, 0) for k in range(4)]
    seq += [(2400 + k * 300, 5 * k) for k in range(10)]
    state, intervals, events, _ = _run(_readings(seq))
    assert events == ["register_epoch"]
    _check_series(intervals)
    assert state.last_wh == 1_000_030 + 45
    assert len(state.formers) == 1


def test_former_series_round_trip_through_text() -> None:
    formers = (FormerSeries(T0, 5_000_100, 5_000_100, 5_000_100), FormerSeries(T0 + 1, 7, 9, 3, EPOCH_CHANGE))
    assert formers_from_json(formers_to_json(formers)) == formers
    assert formers_from_json(formers_to_json(())) == ()
    assert formers_from_json(None) == ()
    assert formers[0].anchor_grade == ACTUAL


# ---- defect 2: suspects out of time order ------------------------------------------------------------------------

T1_SEQUENCE = [(0, 1000), (900, 2000), (1850, 500), (950, 600), (2000, 700), (2800, 800), (3700, 900)]


def test_a_suspect_older_than_a_held_one_is_late_and_nothing_is_closed_twice() -> None:
    state, intervals, events, dispositions = _run(_readings(T1_SEQUENCE))
    assert dispositions[3] is Disposition.LATE, "600 @ 950 s came after the suspect at 1850 s"
    assert events == ["register_epoch"]
    _check_series(intervals)
    assert [i.start - T0 // S for i in intervals] == [0, 900, 1800, 2700]
    assert state.pending == ()


def test_the_series_next_reading_before_every_held_suspect_is_accepted_and_they_stay_held() -> None:
    seq = [(0, 1000), (900, 2000), (1850, 500), (1860, 510)]
    state, _, _, _ = _run(_readings(seq))
    assert state.pending == ((T0 + 1850 * S, 500), (T0 + 1860 * S, 510))
    step = feed(state, Reading("m", T0 + 1000 * S, 2010))
    assert step.disposition is Disposition.ACCEPTED
    assert step.state.pending == state.pending
    assert step.state.last_t_ms == T0 + 1000 * S
    assert feed(state, Reading("m", T0 + 1855 * S, 2010)).disposition is Disposition.LATE, "between held ones"
    assert feed(state, Reading("m", T0 + 1000 * S, 400)).disposition is Disposition.LATE, "an older suspect"
    assert feed(state, Reading("m", T0 + 1850 * S, 500)).disposition is Disposition.DUPLICATE
    # The third agreeing suspect confirms the epoch at the first of them, forward in time.
    after = feed(step.state, Reading("m", T0 + 1870 * S, 520))
    assert [e.kind for e in after.events] == ["register_epoch"]
    _check_series(list(after.intervals))


def test_held_suspects_saved_out_of_order_by_an_older_engine_are_repaired() -> None:
    """The state the ledger stored for a meter wedged by the old engine resumes cleanly."""
    wedged = MeterState("m", T0 + 900 * S, 2000, (T0 + 900 * S) // S, 2000, ACTUAL, 0, 2000,
                        ((T0 + 1850 * S, 500), (T0 + 950 * S, 600)))
    seq = [(2000, 700)] + [(2000 + k * 900, 700 + 50 * k) for k in range(1, 12)]
    _, intervals, _, _ = _run(_readings(seq), wedged)
    _check_series(intervals)
    assert intervals, "the meter is not stuck"


def test_the_advancing_step_refuses_to_go_back_in_time() -> None:
    state = MeterState("m", T0 + 1850 * S, 2000, (T0 + 900 * S) // S, 2000, ACTUAL, 0, 2000)
    with pytest.raises(EngineError, match="step from"):
        _advance(state, "m", T0 + 950 * S, 2100, 2100, 3_600_000)
    with pytest.raises(EngineError, match="step from"):
        _advance(state, "m", T0 + 1850 * S, 2100, 2100, 3_600_000)


async def _wedge(path: Path) -> tuple[int, list[int]]:
    key = Keypair.random()
    ledger = await Ledger.open(path, gateway_id="gw", keypair=key)
    try:
        for t, wh in [(0, 1000), (900, 2000), (1850, 500), (950, 600), (2000, 700)]:
            await ledger.commit_readings([Reading("m", T0 + t * S, wh)], now_ms=1)
    finally:
        await ledger.close()
    ledger = await Ledger.open(path, gateway_id="gw", keypair=key)  # a restart
    committed = 0
    try:
        for k in range(1, 60):
            await ledger.commit_readings([Reading("m", T0 + 2000 * S + k * 900_000, 700 + 50 * k)], now_ms=2)
            committed += 1
        rows = await ledger.stored_intervals("m", 0, 2**40)
    finally:
        await ledger.close()
    return committed, [r.start for r in rows]


def test_out_of_order_suspects_do_not_wedge_the_ledger() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        committed, starts = asyncio.run(_wedge(Path(tmp)))
    assert committed == 59
    assert len(starts) == len(set(starts))
    assert starts == list(range(starts[0], starts[0] + INTERVAL_S * len(starts), INTERVAL_S))


# ---- property: glitches, suspects and out-of-order arrival -------------------------------------------------------

GLITCH_MAX = 5_000
START_WH = 5_000_000


ANY_MAX_POWER: st.SearchStrategy[float | None] = st.sampled_from([None, 50_000.0])


@st.composite
def glitchy_meter(draw: st.DrawFn, max_power: st.SearchStrategy[float | None] = ANY_MAX_POWER,
                  ) -> tuple[list[Reading], list[Reading], int, int]:
    """(arrivals, in-order readings, true consumption, glitch readings) of one meter.

    True readings rise at most 36 kW; between two of them the meter may publish one
    low glitch, a run of one repeated low value (a rebooting bridge: 3+ agree and
    confirm an epoch), a low counter that rises on its own, or, when the maximum power
    is known, a run of one value far above the register. The last CONFIRM_READINGS readings
    are real and arrive in order (a return off the current series needs that many).
    """
    max_power_w = draw(max_power)
    kinds = ["ok", "low", "run", "counter"] + (["spike"] if max_power_w else [])
    t = T0 + draw(st.integers(0, 900_000))
    wh = START_WH
    readings = [Reading("m", t, wh, max_power_w=max_power_w)]
    glitches = 0
    for _ in range(draw(st.integers(2, 30))):
        gap = draw(st.sampled_from([30_000, 60_000, 300_000, 900_000, 1_200_000, 3_600_000]))
        kind = draw(st.sampled_from(kinds))
        k = draw(st.integers(1, 5)) if kind in ("run", "counter", "spike") else 1
        value = draw(st.integers(0, GLITCH_MAX // 2))
        for j in range(1, k + 1 if kind != "ok" else 1):
            if kind == "counter":
                value += draw(st.integers(0, GLITCH_MAX // 10))
            raw = START_WH * 3 if kind == "spike" else value
            readings.append(Reading("m", t + j * gap // (k + 1), raw, max_power_w=max_power_w))
            glitches += 1
        t += gap
        wh += min(draw(st.integers(0, 3_000)), gap // 100)
        readings.append(Reading("m", t, wh, max_power_w=max_power_w))
    for _ in range(CONFIRM_READINGS - 1):
        t += 300_000
        wh += draw(st.integers(0, 3_000))
        readings.append(Reading("m", t, wh, max_power_w=max_power_w))
    # The first reading stays first (with no series yet there is nothing to judge it by) and the
    # last ones last (the real register, after every glitch); the rest arrive shuffled locally.
    tail = len(readings) - CONFIRM_READINGS
    middle = readings[1:tail]
    for i, shift in enumerate(draw(st.lists(st.integers(0, 6), min_size=len(middle), max_size=len(middle)))):
        j = min(len(middle) - 1, i + shift)
        middle[i], middle[j] = middle[j], middle[i]
    arrivals = [readings[0], *middle, *readings[tail:]]
    return arrivals, readings, wh - START_WH, glitches


@given(glitchy_meter())
@settings(max_examples=400, deadline=None)
def test_glitches_and_out_of_order_suspects_never_bill_a_jump(case: tuple[list[Reading], list[Reading], int,
                                                                          int]) -> None:
    arrivals, _, true_wh, glitches = case
    state, intervals, _, _ = _run(arrivals)
    _check_series(intervals)
    assert state.last_wh is not None
    assert state.last_raw_wh == START_WH + true_wh, "the real register is followed again"
    assert state.pending == ()
    assert state.last_wh - START_WH <= true_wh + GLITCH_MAX * glitches, "a jump was billed"
    assert all(i.wh <= 9_000 + GLITCH_MAX * glitches for i in intervals), "36 kW for 15 minutes, plus glitches"


@given(glitchy_meter(max_power=st.none()))
@settings(max_examples=300, deadline=None)
def test_glitches_in_order_leave_the_register_exactly_where_the_meter_is(
        case: tuple[list[Reading], list[Reading], int, int]) -> None:
    _, readings, true_wh, _ = case
    if any(r.register_wh < b.register_wh < START_WH for r, b in itertools.pairwise(readings)):
        return  # a rising garbage counter is credited while it lasts (never more than it counted)
    state, intervals, _, _ = _run(readings)
    _check_series(intervals)
    assert state.offset_wh == 0
    assert state.last_wh == START_WH + true_wh
    assert state.pending == ()
