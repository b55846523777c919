"""Bounded gap filling (issue 13, item 2): no reading creates more than a bounded number of intervals,
and a long genuine outage is written in bounded slices while the event loop keeps running.

Before: a meter whose last reading was in 1970 made one reading build every quarter-hour since
then (about 2 million intervals, 2.8 GiB, a 101-s stall of the loop).
"""

from __future__ import annotations

import asyncio
import itertools
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from stellar_sdk import Keypair

from gateway.intervals import Interval, MeterState, Quality, Reading, feed
from gateway.intervals.engine import MAX_FILL_GAP_MS
from gateway.intervals.model import (
    ACTUAL,
    EPOCH_CHANGE,
    INTERVAL_MS,
    SUBSTITUTED_GAP,
    Grade,
    Run,
    boundaries_between,
    interpolate,
    make_interval,
)
from gateway.ledger import ingest
from gateway.ledger.store import Ledger

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, a boundary
DAY_MS = 86_400_000


def _eager(run: Run) -> list[Interval]:
    """The engine's interval loop as it was before runs (the reference): every boundary, one by one."""
    anchor = run.anchor
    out = []
    for b_ms in boundaries_between(run.t0, run.t1):
        on_reading = b_ms == run.t1
        value = run.v1 if on_reading else interpolate(run.t0, run.v0, run.t1, run.v1, b_ms)
        b_grade = ACTUAL if on_reading else run.grade
        if anchor is not None:
            end_grade = b_grade.worse(run.forced) if run.forced and on_reading else b_grade
            out.append(make_interval(run.meter, anchor[0], anchor[1], anchor[2], value, end_grade))
        anchor = (b_ms // 1000, value, b_grade)
    return out


GRADES = st.sampled_from([ACTUAL, SUBSTITUTED_GAP, EPOCH_CHANGE])


@st.composite
def runs(draw: st.DrawFn) -> Run:
    t0 = T0 + draw(st.integers(0, 3 * INTERVAL_MS))
    t1 = t0 + draw(st.integers(1, 40 * INTERVAL_MS))
    v0 = draw(st.integers(0, 10**9))
    v1 = v0 + draw(st.integers(0, 10**6))
    anchor = None
    if draw(st.booleans()):
        a_ms = t0 // INTERVAL_MS * INTERVAL_MS
        anchor = (a_ms // 1000, v0 - draw(st.integers(0, 1000)), draw(GRADES))
    forced: Grade | None = draw(st.sampled_from([None, EPOCH_CHANGE]))
    return Run("m", anchor, t0, v0, t1, v1, forced or draw(GRADES), forced)


@given(runs(), st.integers(1, 7))
@settings(max_examples=300, deadline=None)
def test_a_run_gives_exactly_the_intervals_of_the_old_loop_in_any_slices(run: Run, size: int) -> None:
    expected = _eager(run)
    assert len(run) == len(expected)
    assert list(run.intervals()) == expected
    sliced = itertools.chain.from_iterable(run.intervals(i, i + size) for i in range(0, len(run), size))
    assert list(sliced) == expected


def test_a_month_long_outage_is_one_reading_costing_one_step_and_filled_exactly() -> None:
    state = feed(MeterState("m"), Reading("m", T0, 1_000_000, max_power_w=20_000)).state
    step = feed(state, Reading("m", T0 + 30 * DAY_MS, 1_000_000 + 30 * 24 * 5_000, max_power_w=20_000))
    assert step.interval_count == 30 * 96
    assert len(step.runs) == 1, "described, not listed"
    intervals = step.intervals
    assert [i.start for i in intervals] == list(range(T0 // 1000, (T0 + 30 * DAY_MS) // 1000, 900))
    assert sum(i.wh for i in intervals) == 30 * 24 * 5_000, "exactly the register's movement"
    assert all(a.register_end_wh == b.register_start_wh for a, b in itertools.pairwise(intervals))
    assert {(i.quality, i.method, i.reason) for i in intervals} == {(Quality.SUBSTITUTED, 17, 76)}
    assert step.state.anchor_s == (T0 + 30 * DAY_MS) // 1000


def test_a_gap_longer_than_a_year_restarts_the_timeline_instead_of_filling_it() -> None:
    """A meter state left in 1970 (by the gateway before this fix) must not fill 56 years."""
    state = feed(MeterState("m"), Reading("m", 60_000, 1_000, max_power_w=20_000)).state  # 1970-01-01T00:01Z
    step = feed(state, Reading("m", T0 + 60_000, 5_000_000, max_power_w=20_000))
    assert step.interval_count == 0
    assert [e.kind for e in step.events] == ["gap_not_filled"]
    assert "went from 1000 to 5000000 Wh" in step.events[0].detail
    assert step.state.last_wh == 1_000, "the virtual register goes on where it stood, never down"
    after = feed(step.state, Reading("m", T0 + 15 * 60_000, 5_000_150, max_power_w=20_000))
    assert [(i.start, i.wh, i.quality) for i in after.intervals] == [], "no boundary fixed yet: like a first reading"
    later = feed(after.state, Reading("m", T0 + 30 * 60_000, 5_000_300, max_power_w=20_000))
    assert [(i.start, i.wh, i.quality) for i in later.intervals] == [((T0 + 900_000) // 1000, 150, Quality.ACTUAL)]
    # Just under the limit, the gap is still filled: a genuine outage is not lost.
    near = feed(state, Reading("m", 60_000 + MAX_FILL_GAP_MS, 5_000_000, max_power_w=20_000))
    assert near.interval_count == MAX_FILL_GAP_MS // INTERVAL_MS - 1
    assert not near.events


async def _fill(path: Path, gap_ms: int) -> tuple[Any, int, int]:
    """Commit a reading `gap_ms` after the last one; return (result, most signatures between two turns of
    another task, how many turns it got)."""
    ledger = await Ledger.open(path, gateway_id="gw", keypair=Keypair.random())
    signed = 0
    sign = ledger._sign

    def counting_sign(*args: Any, **kwargs: Any) -> Any:
        nonlocal signed
        signed += 1
        return sign(*args, **kwargs)

    ledger._sign = counting_sign  # type: ignore[method-assign]
    worst = turns = 0
    done = False

    async def other_task() -> None:
        # Another task on the loop (a bus, the web): how much ledger work happens between its turns?
        nonlocal worst, turns
        last = signed
        while not done:
            await asyncio.sleep(0)
            worst, last, turns = max(worst, signed - last), signed, turns + 1

    try:
        await ledger.commit_readings([Reading("m", T0, 1_000)], now_ms=T0)
        task = asyncio.create_task(other_task())
        await asyncio.sleep(0)
        result = await ledger.commit_readings([Reading("m", T0 + gap_ms, 1_000 + gap_ms // 3_600)],
                                              now_ms=T0 + gap_ms)
        done = True
        await task
        stored = await ledger.stored_intervals("m", 0, 2**40)
        assert len(stored) == gap_ms // INTERVAL_MS
        assert sum(i.wh for i in stored) == gap_ms // 3_600
    finally:
        await ledger.close()
    return result, worst, turns


def test_the_ledger_writes_a_long_outage_in_slices_between_which_the_loop_runs() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        result, worst, turns = asyncio.run(_fill(Path(tmp), 60 * DAY_MS))
    assert result.intervals_closed == result.credits_created == 60 * 96
    assert len(result.intervals) <= ingest.KEPT_INTERVALS, "the result does not grow with the outage"
    # Before: all 5760 intervals were signed in one stretch, the loop stalled until the end.
    assert worst <= ingest.MAX_INTERVALS_PER_STEP
    assert turns >= 60 * 96 // ingest.MAX_INTERVALS_PER_STEP


async def _gap_over_a_year(path: Path) -> tuple[int, list[str]]:
    ledger = await Ledger.open(path, gateway_id="gw", keypair=Keypair.random())
    try:
        await ledger.commit_readings([Reading("m", 0, 1_000)], now_ms=T0)  # an old gateway let 1970 in
        result = await ledger.commit_readings([Reading("m", T0, 2_000)], now_ms=T0)
        rows = await ledger._r.execute_fetchall("SELECT kind FROM events WHERE meter='m'")
        return result.credits_created, [str(r[0]) for r in rows]
    finally:
        await ledger.close()


def test_a_ledger_state_left_in_1970_is_not_filled() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        credits, events = asyncio.run(_gap_over_a_year(Path(tmp)))
    assert credits == 0, "before: about 2 million substituted credits"
    assert events == ["gap_not_filled"]
