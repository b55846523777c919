"""Line statistics in O(1) per transaction give what summing the whole last minute gave."""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.acquisition.line_stats import LineStats
from gateway.acquisition.modbus import ModbusBus
from gateway.clock import ManualClock
from gateway.config import BusConfig
from gateway.intervals import Reading
from gateway.profiles import builtin_profile
from gateway.status import GatewayStatus

WINDOW = 60
events = st.lists(st.tuples(st.floats(0.0, 7.0), st.floats(0.0, 0.5), st.booleans()), max_size=300)


@settings(max_examples=200, deadline=None)
@given(events, st.floats(0.0, 200.0))
def test_rates_match_a_sum_over_every_transaction_of_the_window(steps: list[tuple[float, float, bool]],
                                                                 idle_after: float) -> None:
    started = 1000.25
    stats = LineStats(started, WINDOW)
    seen: list[tuple[float, float, bool]] = []
    now = started
    for dt, busy, ok in steps:
        now += dt
        stats.add(now, busy, ok=ok)
        seen.append((now, busy, ok))
    now += idle_after
    first_second = math.floor(now) - WINDOW + 1
    recent = [(busy, ok) for t, busy, ok in seen if math.floor(t) >= first_second]
    span = min(WINDOW - 1 + (now - math.floor(now)), now - started)
    rates = stats.rates(now)
    if span <= 0:
        assert rates.transactions_per_s == 0
        return
    assert rates.transactions_per_s == pytest.approx(len(recent) / span)
    assert rates.errors_per_s == pytest.approx(sum(1 for _, ok in recent if not ok) / span)
    # Busy time is kept in whole microseconds: each transaction may be off by half of one.
    assert rates.utilisation == pytest.approx(min(1.0, sum(b for b, _ in recent) / span),
                                              abs=len(recent) * 0.5e-6 / span * (1 + 1e-9) + 1e-12)


def test_a_busy_line_then_silence() -> None:
    stats = LineStats(0.0, WINDOW)
    for i in range(40 * 120):  # two minutes at 40 transactions a second, each 20 ms, one in ten failing
        stats.add(i / 40, 0.02, ok=i % 10 != 0)
    busy = stats.rates(120.0)
    assert busy.transactions_per_s == pytest.approx(40, rel=0.02)
    assert busy.errors_per_s == pytest.approx(4, rel=0.05)
    assert busy.utilisation == pytest.approx(0.8, rel=0.02)
    assert stats.rates(200.0).transactions_per_s == 0  # a silent minute later, nothing is left of it
    assert stats.busy_us == 0


def _record_cost(bus: ModbusBus, clock: ManualClock, in_window: int) -> float:
    """Seconds per ``_record`` once the last minute holds ``in_window`` transactions (best of five)."""
    step = WINDOW / in_window
    for _ in range(in_window):  # fill the window at that rate
        clock.advance(step)
        bus._record(clock.monotonic() - step / 2, ok=True)
    best = math.inf
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(RECORDS):
            clock.advance(step)
            bus._record(clock.monotonic() - step / 2, ok=True)
        best = min(best, time.perf_counter() - t0)
    return best / RECORDS


RECORDS = 200


async def test_a_transaction_costs_the_same_whatever_the_window_holds(tmp_path: Path) -> None:
    """O(1) per transaction: recording one on a line that did 20 000 in the last minute costs what it costs
    on one that did 60 (summing the window, as before, was some 300 times dearer)."""
    profile = builtin_profile("eastron-sdm630")
    cfg = BusConfig.model_validate({"name": "rs485", "kind": "rtu", "device": str(tmp_path / "ttyGONE"),
                                    "meters": [{"id": "m1", "unit_id": 1, "profile": "eastron-sdm630", "poll_s": 1}]})

    async def submit(_: Reading) -> None:
        return None

    async def cost(in_window: int) -> float:
        clock = ManualClock()
        bus = ModbusBus(cfg, {"m1": profile}, clock, submit, GatewayStatus("gw", "key", clock.now()),
                        use_lock=False)
        task = asyncio.create_task(bus.run())  # started (its rates count from now), then stuck: no port
        for _ in range(20):
            await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return _record_cost(bus, clock, in_window)

    sparse, dense = await cost(60), await cost(20_000)
    assert dense < 3 * sparse, f"{dense * 1e6:.1f} us per transaction with 20 000 in the window, " \
                               f"{sparse * 1e6:.1f} us with 60"


near_the_window = st.builds(lambda k, f: k + f, st.sampled_from([WINDOW - 1, WINDOW, WINDOW + 1, 2 * WINDOW - 1]),
                            st.floats(0.0, 1.0))
steps_with_gaps = st.lists(st.tuples(st.one_of(st.floats(0.0, 2.0), st.floats(55.0, 400.0), near_the_window),
                                     st.sampled_from([0.0, 0.0, 0.0, -3600.0, 3600.0, -0.7]),  # wall-clock steps
                                     st.floats(0.0, 0.5), st.booleans()), max_size=120)


@settings(max_examples=100, deadline=None)
@given(steps_with_gaps)
def test_the_line_shown_equals_a_naive_recomputation_through_the_bus(
        steps: list[tuple[float, float, float, bool]]) -> None:
    """What the page and API show (the bus's ``LineStatus``) after each transaction equals summing every
    transaction of the window again, with idle gaps longer than the window and a wall clock stepping
    (rates run on monotonic time, so a step changes nothing)."""
    profile = builtin_profile("eastron-sdm630")
    cfg = BusConfig.model_validate({"name": "rs485", "kind": "rtu", "device": "/nonexistent/ttyGONE",
                                    "meters": [{"id": "m1", "unit_id": 1, "profile": "eastron-sdm630", "poll_s": 1}]})

    async def submit(_: Reading) -> None:
        return None

    clock = ManualClock()
    started = clock.monotonic()
    bus = ModbusBus(cfg, {"m1": profile}, clock, submit, GatewayStatus("gw", "key", clock.now()), use_lock=False)
    seen: list[tuple[float, float, bool]] = []
    for dt, wall_step, busy, ok in steps:
        clock.advance(dt)
        if wall_step:
            clock.step_wall(wall_step)
        now = clock.monotonic()
        bus._record(now - busy, ok=ok)
        seen.append((now, busy, ok))
        first_second = math.floor(now) - WINDOW + 1
        recent = [(b, good) for t, b, good in seen if math.floor(t) >= first_second]
        span = min(WINDOW - 1 + (now - math.floor(now)), now - started)
        line = bus.line
        if span <= 0:
            assert line.transactions_per_s == 0
            continue
        assert line.transactions_per_s == pytest.approx(len(recent) / span)
        assert line.errors_per_s == pytest.approx(sum(1 for _, good in recent if not good) / span)
        # busy time is kept in whole microseconds: at most half of one off per transaction
        assert line.utilisation == pytest.approx(min(1.0, sum(b for b, _ in recent) / span),
                                                 abs=len(recent) * 0.5e-6 / span + 1e-12)
    assert bus.line.transactions == len(steps)
