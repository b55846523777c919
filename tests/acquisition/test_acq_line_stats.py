"""Line statistics in O(1) per transaction give what summing the whole last minute gave."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.acquisition.line_stats import LineStats

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
    assert rates.utilisation == pytest.approx(min(1.0, sum(b for b, _ in recent) / span), abs=1e-5)


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
