"""Properties of the interval engine: conservation, no negative energy, alignment."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.intervals import INTERVAL_S, Disposition, MeterState, Quality, Reading, feed, feed_many

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z in ms, a boundary


def _readings(steps: list[tuple[int, int]], start_ms: int = T0 + 123_000, start_wh: int = 1_000_000) -> list[Reading]:
    out = []
    t, e = start_ms, start_wh
    for dt, de in steps:
        t += dt
        e += de
        out.append(Reading("m1", t, e))
    return [Reading("m1", start_ms, start_wh), *out]


steps_strategy = st.lists(
    st.tuples(st.integers(1, 3 * INTERVAL_S * 1000), st.integers(0, 5_000)), min_size=1, max_size=60
)


@given(steps_strategy)
@settings(max_examples=300)
def test_intervals_telescope_to_boundary_register_values(steps: list[tuple[int, int]]) -> None:
    readings = _readings(steps)
    _, intervals = feed_many(MeterState("m1"), readings)
    for a, b in itertools.pairwise(intervals):
        assert a.end == b.start, "intervals are contiguous"
        assert a.register_end_wh == b.register_start_wh, "boundary value shared by neighbours"
    if intervals:
        assert sum(i.wh for i in intervals) == intervals[-1].register_end_wh - intervals[0].register_start_wh
    for i in intervals:
        assert i.wh >= 0
        assert i.start % INTERVAL_S == 0
        assert i.end - i.start == INTERVAL_S
        assert i.wh == i.register_end_wh - i.register_start_wh


@given(steps_strategy)
def test_boundary_value_equals_register_when_a_reading_falls_on_it(steps: list[tuple[int, int]]) -> None:
    readings = _readings(steps, start_ms=T0)
    on_boundary = {r.t_ms // 1000: r.register_wh for r in readings if r.t_ms % (INTERVAL_S * 1000) == 0}
    _, intervals = feed_many(MeterState("m1"), readings)
    for i in intervals:
        if i.start in on_boundary:
            assert i.register_start_wh == on_boundary[i.start]
        if i.end in on_boundary:
            assert i.register_end_wh == on_boundary[i.end]


@given(steps_strategy, st.integers(1, 59))
def test_splitting_the_stream_anywhere_gives_the_same_intervals(steps: list[tuple[int, int]], cut: int) -> None:
    """Persisting state and resuming (a restart) must not change the result."""
    readings = _readings(steps)
    _, whole = feed_many(MeterState("m1"), readings)
    k = min(cut, len(readings))
    state, first = feed_many(MeterState("m1"), readings[:k])
    _, second = feed_many(state, readings[k:])
    assert first + second == whole


def test_readings_on_every_minute_give_exact_actual_intervals() -> None:
    readings = [Reading("m1", T0 + k * 60_000, 5_000 + 7 * k) for k in range(46)]
    _, intervals = feed_many(MeterState("m1"), readings)
    assert [i.wh for i in intervals] == [105, 105, 105]
    assert all(i.quality is Quality.ACTUAL for i in intervals)
    assert intervals[0].start == T0 // 1000


def test_short_gap_is_estimated_long_gap_substituted_both_pro_rata() -> None:
    readings = [Reading("m1", T0, 0), Reading("m1", T0 + 3 * 900_000, 3001)]
    _, intervals = feed_many(MeterState("m1"), readings)
    assert [i.wh for i in intervals] == [1000, 1001, 1000]
    assert {(i.quality, i.method, i.reason) for i in intervals} == {(Quality.ESTIMATED, 54, 76)}
    readings = [Reading("m1", T0, 0), Reading("m1", T0 + 8 * 900_000, 8000)]
    _, intervals = feed_many(MeterState("m1"), readings)
    assert [i.wh for i in intervals] == [1000] * 8
    assert {(i.quality, i.method, i.reason) for i in intervals} == {(Quality.SUBSTITUTED, 17, 76)}
    _, intervals = feed_many(MeterState("m1"), readings, estimate_gap_ms=3 * 3_600_000)
    assert {i.quality for i in intervals} == {Quality.ESTIMATED}, "the span is configurable"


def test_nothing_is_invented_ahead_of_data() -> None:
    state, intervals = feed_many(MeterState("m1"), [Reading("m1", T0, 0), Reading("m1", T0 + 60_000, 10)])
    assert intervals == []
    assert state.anchor_s == T0 // 1000, "the boundary is fixed, the interval stays open"


def test_duplicate_late_and_suspect_readings_close_nothing() -> None:
    state = feed(MeterState("m1"), Reading("m1", T0, 100)).state
    state = feed(state, Reading("m1", T0 + 120_000, 110)).state
    dup = feed(state, Reading("m1", T0 + 120_000, 110))
    assert dup.disposition is Disposition.DUPLICATE
    assert dup.state == state
    assert feed(state, Reading("m1", T0 + 60_000, 105)).disposition is Disposition.LATE
    back = feed(state, Reading("m1", T0 + 180_000, 99))
    assert back.disposition is Disposition.SUSPECT
    assert back.intervals == ()


MOD = 2**32 * 10  # an ABB-style uint32 register in units of 10 Wh


@given(st.integers(MOD - 20_000, MOD - 1), st.lists(st.integers(0, 400), min_size=5, max_size=80))
def test_rollover_is_counted_through(start: int, steps: list[int]) -> None:
    readings, raw, t = [], start, T0
    for de in steps:
        readings.append(Reading("m1", t, raw % MOD, register_modulus_wh=MOD))
        raw += de
        t += 300_000
    _, intervals = feed_many(MeterState("m1"), readings)
    assert all(i.wh >= 0 for i in intervals)
    if intervals:
        assert sum(i.wh for i in intervals) == intervals[-1].register_end_wh - intervals[0].register_start_wh
        assert intervals[-1].register_end_wh <= start + sum(steps)
    assert all(i.wh <= 3 * 400 for i in intervals), "a wrap never credits the register's whole range"


@given(st.lists(st.integers(0, 300), min_size=4, max_size=30), st.integers(0, 50_000),
       st.lists(st.integers(0, 300), min_size=3, max_size=30))
def test_replaced_meter_starts_a_new_epoch_without_negative_energy(before: list[int], new_start: int,
                                                                    after: list[int]) -> None:
    readings, raw, t = [], 1_000_000, T0
    for de in before:
        raw += de
        readings.append(Reading("m1", t, raw))
        t += 300_000
    raw = new_start
    for de in after:
        raw += de
        readings.append(Reading("m1", t, raw))
        t += 300_000
    state = MeterState("m1")
    intervals, events = [], []
    for reading in readings:
        step = feed(state, reading)
        state = step.state
        intervals.extend(step.intervals)
        events.extend(e.kind for e in step.events)
    assert events == ["register_epoch"]
    assert all(i.wh >= 0 for i in intervals)
    # Energy credited = what each epoch's register moved (zero across the change).
    assert sum(i.wh for i in intervals) <= sum(before[1:]) + sum(after[1:])
    assert state.last_wh == 1_000_000 + sum(before) + sum(after[1:])
    flagged = [i for i in intervals if i.reason == 18]
    assert flagged, "the intervals across the change are substituted with reason 18"
    assert all(i.quality is Quality.SUBSTITUTED for i in flagged)


def test_one_glitch_below_the_series_is_discarded() -> None:
    readings = [Reading("m1", T0 + k * 300_000, v) for k, v in enumerate([500, 510, 0, 530, 540, 550, 560])]
    state = MeterState("m1")
    events = []
    for reading in readings:
        step = feed(state, reading)
        state = step.state
        events.extend(e.kind for e in step.events)
    assert events == ["suspects_discarded"]
    assert state.last_wh == 560
    assert state.offset_wh == 0


def test_a_spike_above_the_meters_maximum_power_is_not_billed() -> None:
    values = [10, 10_000_000, 20, 30, 40, 50]
    readings = [Reading("m1", T0 + k * 300_000, v, max_power_w=20_000) for k, v in enumerate(values)]
    state, intervals = feed_many(MeterState("m1"), readings)
    assert sum(i.wh for i in intervals) == intervals[-1].register_end_wh - intervals[0].register_start_wh
    assert state.last_wh == 50, "the spike was a glitch: the series goes on from 10"
    assert state.offset_wh == 0


def test_a_confirmed_jump_up_is_a_new_meter_not_energy() -> None:
    values = [10, 20, 5_000_000, 5_000_010, 5_000_020, 5_000_030]
    readings = [Reading("m1", T0 + k * 300_000, v, max_power_w=20_000) for k, v in enumerate(values)]
    state, intervals = feed_many(MeterState("m1"), readings)
    assert sum(i.wh for i in intervals) <= 10 + 30, "zero energy across the change, never millions of Wh"
    assert state.offset_wh == 20 - 5_000_000
