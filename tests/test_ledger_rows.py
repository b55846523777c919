"""Rows per reading: the readings inside an interval take the fast path and are not stored.

The fast path must leave exactly the state, intervals and credits :func:`feed` gives, whatever
the readings (glitches, resets, late and duplicate readings, batch cuts): a ledger fed in batches
is compared with the pure engine fed one reading at a time.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stellar_sdk import Keypair

from gateway.intervals import MeterState, Reading, feed
from gateway.intervals.plausibility import DEFAULT_MAX_POWER_W
from gateway.ledger.store import DB_FILE, Ledger

KEY = Keypair.random()
T0 = 1_767_225_600_000  # a quarter-hour boundary, ms


def _series(steps: list[tuple[int, int]]) -> list[Reading]:
    out, t, wh = [], T0, 50_000
    for dt_s, dwh in steps:
        t += dt_s * 1000
        wh = max(0, wh + dwh)
        out.append(Reading("m", t, wh, max_power_w=DEFAULT_MAX_POWER_W))
    return out


steps = st.lists(st.tuples(st.sampled_from([-30, 1, 20, 60, 60, 60, 61, 240, 900, 1500]),
                           st.sampled_from([0, 3, 3, 10, 17, 500, -40, -50_000, 10**6])), min_size=1, max_size=60)


async def _through_ledger(data: Path, readings: list[Reading], cuts: list[int]) -> tuple[MeterState, list, int]:
    ledger = await Ledger.open(data, gateway_id="gw", keypair=KEY)
    try:
        intervals = []
        bounds = sorted({0, len(readings), *(c % (len(readings) + 1) for c in cuts)})
        for a, b in itertools.pairwise(bounds):
            result = await ledger.commit_readings(readings[a:b], now_ms=1)
            intervals.extend(result.intervals)
        return ledger.meter_state("m"), intervals, ledger.max_credit_id
    finally:
        await ledger.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps, st.lists(st.integers(0, 60), max_size=4))
def test_batched_ingest_matches_the_engine_reading_by_reading(steps: list[tuple[int, int]], cuts: list[int]) -> None:
    readings = _series(steps)
    state = MeterState("m")
    expected = []
    for reading in readings:
        step = feed(state, reading)
        if step.disposition.value in ("accepted", "suspect"):
            state = step.state
        if step.disposition.value != "late":
            expected.extend(step.intervals)
    with tempfile.TemporaryDirectory() as tmp:
        got_state, got, _ = asyncio.run(_through_ledger(Path(tmp), readings, cuts))
    # The series itself (newest reading, register offset, suspects) is the engine's whatever came late.
    assert (got_state.last_t_ms, got_state.last_wh, got_state.offset_wh, got_state.last_raw_wh,
            got_state.pending) == (state.last_t_ms, state.last_wh, state.offset_wh, state.last_raw_wh, state.pending)
    # A late reading is placed between its stored neighbours, which the pure engine (that drops it)
    # cannot do: it may revise stored intervals, or fix a boundary the engine never saw (a reading
    # before the first one, across a quarter-hour, gives the ledger an anchor). Without any, identical.
    if all(b.t_ms > a.t_ms for a, b in itertools.pairwise(readings)):
        assert got_state == state
        assert got == expected


async def test_only_the_readings_next_to_a_boundary_and_the_newest_are_stored(tmp_path: Path) -> None:
    ledger = await Ledger.open(tmp_path, gateway_id="gw", keypair=KEY)
    readings = [Reading("m", T0 + 30_000 + k * 60_000, 1000 + 7 * k) for k in range(40)]
    await ledger.commit_readings(readings[:33], now_ms=1)
    # A broker's redelivery of a reading inside an interval: its energy is counted, it is a duplicate.
    again = Reading("m", readings[3].t_ms, readings[3].register_wh, meter_clock=True)
    result = await ledger.commit_readings([again], now_ms=2)
    await ledger.close()
    with sqlite3.connect(tmp_path / DB_FILE) as db:
        stored = [t for (t,) in db.execute("SELECT t_ms FROM readings ORDER BY t_ms")]
    k = [(t - T0 - 30_000) // 60_000 for t in stored]
    assert k == [0, 14, 15, 29, 30, 32], "the first, each side of the two boundaries, and the newest"
    assert [d for _, d in result.dispositions] == ["duplicate"]


async def test_the_writer_holds_readings_inside_an_interval_and_commits_at_the_boundary(tmp_path: Path) -> None:
    from gateway.clock import SimulatedClock
    from gateway.ledger.writer import ReadingWriter
    from gateway.status import GatewayStatus

    clock = SimulatedClock(start=T0 / 1000, speed=100.0)  # the 900-s hold is 9 s, the 5-s window 50 ms
    ledger = await Ledger.open(tmp_path, gateway_id="gw", keypair=KEY)
    status = GatewayStatus("gw", "G", clock.now())
    writer = ReadingWriter(ledger, clock, status, flush_s=900)
    task = asyncio.create_task(writer.run())
    try:
        await writer.submit(Reading("m", T0, 1000))  # a first reading: committed at once
        for _ in range(400):
            if status.readings_committed == 1:
                break
            await asyncio.sleep(0.005)
        assert status.readings_committed == 1
        for k in range(1, 14):
            await writer.submit(Reading("m", T0 + k * 60_000, 1000 + k))
        await asyncio.sleep(0.5)  # 50 s of clock time: held, nothing closes an interval
        assert status.readings_committed == 1, "readings inside an interval wait"
        await writer.submit(Reading("m", T0 + 900_000, 1015))  # the boundary's reading
        for _ in range(400):
            if status.readings_committed == 15:
                break
            await asyncio.sleep(0.005)
        assert status.readings_committed == 15, "the boundary's reading is committed within seconds"
        assert status.credits_created == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await ledger.close()


async def test_a_batch_fixed_ahead_is_sent_in_its_turn_after_a_restart(tmp_path: Path) -> None:
    ledger = await Ledger.open(tmp_path, gateway_id="gw", keypair=KEY)
    await ledger.commit_readings([Reading("m", T0 + k * 900_000, 1000 + k) for k in range(31)], now_ms=1)
    await ledger.register_uplink("u")
    first = await ledger.next_batch("u", 10, now_ms=2)
    assert first is not None
    ahead = await ledger.next_batch("u", 10, now_ms=2, after_id=first.last_id)
    assert ahead is not None
    assert ahead.first_id == first.last_id + 1
    again = await ledger.next_batch("u", 10, now_ms=2, after_id=first.last_id)
    assert again is not None
    assert again.batch_key == ahead.batch_key, "fixed once, not twice"
    await ledger.close()
    ledger = await Ledger.open(tmp_path, gateway_id="gw", keypair=KEY)  # killed before either settled
    try:
        resent = await ledger.next_batch("u", 10, now_ms=3)
        assert resent is not None
        assert (resent.batch_key, resent.wire) == (first.batch_key, first.wire)
        await ledger.settle_batch(resent, now_ms=3)
        second = await ledger.next_batch("u", 10, now_ms=3)
        assert second is not None
        assert (second.batch_key, second.wire) == (ahead.batch_key, ahead.wire)
    finally:
        await ledger.close()
