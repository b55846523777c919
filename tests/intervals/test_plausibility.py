"""No reading credits more than the meter could measure (issue 13, item 1).

Properties over arbitrary spike/fall sequences, through the pure engine and through the real ledger
with readings that carry no ceiling of their own (as every MQTT meter's did): the credited energy
never exceeds ceiling × time, and an isolated spike or fall changes nothing at all — the intervals
are exactly those of the honest readings alone.
"""

from __future__ import annotations

import asyncio
import itertools
import tempfile
from dataclasses import replace
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stellar_sdk import Keypair

from gateway.intervals import Disposition, Interval, MeterState, Reading, feed, feed_many
from gateway.intervals.engine import CONFIRM_READINGS
from gateway.intervals.plausibility import DEFAULT_MAX_POWER_W, MS_PER_HOUR
from gateway.ledger.store import Ledger

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, a boundary
START_WH = 5_000_000
GAPS_MS = [10_000, 60_000, 300_000, 900_000, 1_000_000, 3_600_000, 7_200_000]
KEY = Keypair.random()


# Strategies are built once: building them inside a draw loop costs more than the engine.
GAP = st.sampled_from(GAPS_MS)
PER_MILLE = st.one_of(st.just(0), st.just(1000), st.integers(0, 1000))
"""How hard a real meter works between two readings: idle, flat out at its ceiling, or anything between."""
FRACTION = st.integers(1, 10**6)
EXCESS = st.integers(2, 10**12)
ANY_WH = st.integers(0, 10**13)
CEILING = st.sampled_from([3_700.0, 20_000.0, DEFAULT_MAX_POWER_W])


def _honest(draw: st.DrawFn, max_power_w: float, n: int) -> list[Reading]:
    """A real meter: never faster than its ceiling, sometimes idle, sometimes flat out."""
    t = T0 + draw(st.integers(0, 900_000))
    wh = START_WH
    readings = [Reading("m", t, wh)]
    for _ in range(n - 1):
        gap = draw(GAP)
        t += gap
        wh += int(max_power_w * gap // MS_PER_HOUR) * draw(PER_MILLE) // 1000
        readings.append(Reading("m", t, wh))
    return readings


def _times(draw: st.DrawFn, before: Reading, after: Reading, k: int) -> list[int]:
    """Up to k distinct times strictly between two readings."""
    span = after.t_ms - before.t_ms
    return sorted({before.t_ms + 1 + draw(FRACTION) * (span - 2) // 10**6 for _ in range(k)})


def _garbage(draw: st.DrawFn, before: Reading, after: Reading, k: int, ceiling: float) -> list[Reading]:
    """Up to k readings strictly between two honest ones, each off the series: far above it, or below it."""
    out = []
    for t in _times(draw, before, after, k):
        if draw(st.booleans()):  # a spike: more than the meter could count since the last honest reading
            value = before.register_wh + int(ceiling * (after.t_ms - before.t_ms) / MS_PER_HOUR) + draw(EXCESS)
        else:  # a fall: a bridge publishing 0, or a stale value
            value = draw(ANY_WH) % before.register_wh
        out.append(Reading("m", t, value))
    return out


@st.composite
def isolated_spikes(draw: st.DrawFn, ceiling: float | None = None) -> tuple[float, list[Reading], list[Reading]]:
    """(ceiling, honest readings, the same with isolated spikes and falls between them)."""
    max_power_w = ceiling or draw(CEILING)
    honest = _honest(draw, max_power_w, draw(st.integers(3, 30)))
    mixed = [honest[0]]
    for before, after in itertools.pairwise(honest):
        # Fewer in a row than confirm a new series: isolated, whatever the values.
        mixed += _garbage(draw, before, after, draw(st.integers(0, CONFIRM_READINGS - 1)), max_power_w)
        mixed.append(after)
    return max_power_w, honest, mixed


@st.composite
def arbitrary_sequences(draw: st.DrawFn) -> tuple[float, list[Reading]]:
    """Honest readings with runs of any values of any length between them: spikes, falls, resets,
    a garbage counter that climbs, a bridge stuck on a value (these can confirm epochs)."""
    max_power_w = draw(CEILING)
    honest = _honest(draw, max_power_w, draw(st.integers(2, 20)))
    mixed = [honest[0]]
    for before, after in itertools.pairwise(honest):
        stuck = draw(ANY_WH)
        for t in _times(draw, before, after, draw(st.integers(0, 6))):
            kind = draw(st.integers(0, 3))
            value = (draw(ANY_WH), stuck, 0, before.register_wh + draw(ANY_WH) % 10**6)[kind]
            mixed.append(Reading("m", t, value))
        mixed.append(after)
    return max_power_w, mixed


def _credited(intervals: list[Interval]) -> int:
    return sum(i.wh for i in intervals)


def _bound(max_power_w: float, readings: list[Reading]) -> float:
    """ceiling × time, plus the 1 Wh per reading a whole-Wh register can round by."""
    return max_power_w * (readings[-1].t_ms - readings[0].t_ms) / MS_PER_HOUR + len(readings) + 1


@given(arbitrary_sequences())
@settings(max_examples=300, deadline=None)
def test_whatever_a_meter_publishes_no_more_is_credited_than_ceiling_times_time(
        case: tuple[float, list[Reading]]) -> None:
    max_power_w, readings = case
    _, intervals = feed_many(MeterState("m"), [replace(r, max_power_w=max_power_w) for r in readings])
    assert all(i.wh >= 0 for i in intervals)
    assert _credited(intervals) <= _bound(max_power_w, readings)


@given(isolated_spikes())
@settings(max_examples=300, deadline=None)
def test_an_isolated_spike_or_fall_changes_nothing(case: tuple[float, list[Reading], list[Reading]]) -> None:
    max_power_w, honest, mixed = case
    _, expected = feed_many(MeterState("m"), [replace(r, max_power_w=max_power_w) for r in honest])
    _, got = feed_many(MeterState("m"), [replace(r, max_power_w=max_power_w) for r in mixed])
    assert got == expected, "exactly the honest readings' intervals"
    assert _credited(got) == _credited(expected)


async def _through_ledger(path: Path, readings: list[Reading]) -> list[tuple[int, int, str]]:
    ledger = await Ledger.open(path, gateway_id="gw", keypair=KEY)
    try:
        await ledger.commit_readings(readings, now_ms=readings[-1].t_ms)
        return [(i.start, i.wh, i.quality) for i in await ledger.stored_intervals("m", 0, 2**40)]
    finally:
        await ledger.close()


@given(isolated_spikes(ceiling=DEFAULT_MAX_POWER_W))
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_ledger_bounds_readings_that_come_without_a_ceiling(
        case: tuple[float, list[Reading], list[Reading]]) -> None:
    """An MQTT meter's readings used to carry no ceiling, so any rise was "plausible"."""
    max_power_w, honest, mixed = case
    assert all(r.max_power_w is None for r in mixed)
    _, expected = feed_many(MeterState("m"), [replace(r, max_power_w=max_power_w) for r in honest])
    with tempfile.TemporaryDirectory() as tmp:
        got = asyncio.run(_through_ledger(Path(tmp), mixed))
    assert got == [(i.start, i.wh, i.quality.value) for i in expected]
    assert sum(wh for _, wh, _ in got) <= _bound(max_power_w, mixed)


def test_the_reviewers_spike_is_held_and_discarded() -> None:
    """One 1e12 Wh value between honest readings a minute apart, as in the issue: ~9 kWh of real movement."""
    honest = [Reading("m", T0 + k * 60_000, START_WH + 225 * k) for k in range(41)]  # 13.5 kW for 40 min
    mixed = [*honest[:20], Reading("m", T0 + 19 * 60_000 + 30_000, 10**12), *honest[20:]]
    steps = []
    state = MeterState("m")
    for reading in mixed:
        step = feed(state, replace(reading, max_power_w=DEFAULT_MAX_POWER_W))
        state = step.state
        steps.append(step)
    assert steps[20].disposition is Disposition.SUSPECT
    assert [e.kind for e in steps[21].events] == ["suspects_discarded"]
    credited = sum(i.wh for s in steps for i in s.intervals)
    assert credited == 225 * 30, "the two quarter-hours closed so far, at the honest rate"
    # Without a ceiling the engine believes any rise: the spike is billed in full (the old MQTT path).
    _, unbounded = feed_many(MeterState("m"), mixed)
    assert _credited(unbounded) > 10**11
