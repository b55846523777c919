"""The poll schedule on its own (pure, time passed in): fair shares on an overbooked line, one
overload change each way, stalls, lines that fit, and the wire budget behind check-config.

A line is driven here the way the bus drives it: poll what is due, wait when nothing is. Each poll
takes a given time (its wire time), so hours of line time run in milliseconds.
"""

from __future__ import annotations

import itertools
import statistics
from collections import defaultdict
from collections.abc import Callable

import pytest

from gateway.acquisition.read_plan import ReadPlan
from gateway.acquisition.schedule import OverloadChange, PollJob, PollSchedule, line_demand, next_slot

ISSUE_POLL_S = 0.0956
"""Wire time of one SDM630 poll of six quantities at 9600 baud: 16 of them need 1.53 s (issue 11)."""


def line(periods: list[float], cost_s: float) -> PollSchedule[int]:
    schedule = PollSchedule[int]()
    for i, period in enumerate(periods):
        schedule.add(PollJob(i, ("energy_import",), ReadPlan(()), period, next_slot(0.0, period), True, i,
                             cost_s=cost_s))
    return schedule


class Drive:
    def __init__(self, schedule: PollSchedule[int]) -> None:
        self.schedule = schedule
        self.t = 0.0
        self.starts: dict[int, list[float]] = defaultdict(list)
        self.changes: list[OverloadChange] = []
        self.overruns = 0

    def run(self, until: float, cost: Callable[[int, float], float]) -> None:
        s = self.schedule
        while self.t < until:
            job = s.pick(lambda _: False)
            assert job is not None
            if job.next_due > self.t:
                if (change := s.idle(self.t)) is not None:
                    self.changes.append(change)
                self.t = job.next_due
                continue
            s.begin(job, self.t)
            self.starts[job.meter].append(self.t)
            self.t += cost(job.meter, self.t)
            done = s.done(job, self.t)
            self.overruns += done.overrun
            if done.change is not None:
                self.changes.append(done.change)

    def intervals(self, meter: int, after: float) -> list[float]:
        ts = [t for t in self.starts[meter] if t >= after]
        return [b - a for a, b in itertools.pairwise(ts)]


def test_an_overbooked_line_gives_every_meter_the_same_share() -> None:
    # Issue 11: 16 meters, poll 1 s, the plan needs 1.53 s. Before, meters 1-3 were read every 1.0 s
    # and meters 5-16 every 2.0 s.
    d = Drive(line([1.0] * 16, ISSUE_POLL_S))
    d.run(300.0, lambda _m, _t: ISSUE_POLL_S)
    means = [statistics.mean(d.intervals(m, after=10.0)) for m in range(16)]
    mid = statistics.median(means)
    assert mid == pytest.approx(16 * ISSUE_POLL_S, rel=0.02)
    for m in range(16):
        for gap in d.intervals(m, after=10.0):
            assert abs(gap - mid) <= 0.10 * mid, (m, gap, mid)
    assert [c.started for c in d.changes] == [True], "one change, when the overload starts"
    start = d.changes[0]
    assert start.period_s == 1.0
    assert start.needed_s == pytest.approx(16 * ISSUE_POLL_S)
    assert d.schedule.overloaded_since is not None
    assert d.schedule.achieved_s == pytest.approx(16 * ISSUE_POLL_S, rel=0.05)


def test_an_overload_is_reported_once_when_it_starts_and_once_when_it_ends() -> None:
    # Eight meters at 1 s fit (0.8 s a cycle) until one of them starts taking 0.5 s a poll (a device
    # thinking slowly); the line is overbooked for a minute, then the device recovers.
    slow_until = 90.0

    def cost(meter: int, t: float) -> float:
        return 0.5 if meter == 0 and 30.0 <= t < slow_until else 0.1

    d = Drive(line([1.0] * 8, 0.1))
    d.run(30.0, cost)
    assert d.changes == []
    assert d.overruns == 0
    d.run(slow_until, cost)
    assert [c.started for c in d.changes] == [True]
    during = [statistics.mean(d.intervals(m, after=35.0)) for m in range(8)]
    assert max(during) / min(during) < 1.1, during
    assert d.schedule.achieved_s == pytest.approx(1.2, rel=0.1)
    d.run(slow_until + 30.0, cost)
    assert [c.started for c in d.changes] == [True, False], "and one when it ends, not one per overrun"
    assert d.overruns > 20
    end = d.changes[1]
    assert 60.0 <= end.lasted_s <= 75.0
    assert d.schedule.overloaded_since is None
    # Back on the grid: every meter once a second, at the start of its slot plus the meters before it.
    for m in range(8):
        assert d.intervals(m, after=slow_until + 15.0) == pytest.approx([1.0] * 14, abs=1e-9)


def test_a_stalled_line_reads_each_meter_once_and_is_not_called_overbooked() -> None:
    # The line was down (or the box suspended) for ten minutes: each meter is read once when it comes
    # back, then on its grid again; that is not an overload.
    d = Drive(line([60.0] * 16, ISSUE_POLL_S))
    d.run(100.0, lambda _m, _t: ISSUE_POLL_S)
    d.t = 700.0
    d.schedule.resync(d.t)  # the bus does this when the line comes back
    d.run(800.0, lambda _m, _t: ISSUE_POLL_S)
    for m in range(16):
        after = [t for t in d.starts[m] if t >= 700.0]
        assert after[0] < 702.0
        assert after[1:] == [pytest.approx(720.0 + m * ISSUE_POLL_S, abs=1e-6),
                             pytest.approx(780.0 + m * ISSUE_POLL_S, abs=1e-6)]
    assert d.changes == []


def test_a_line_that_fits_keeps_every_period_on_its_grid() -> None:
    d = Drive(line([2.0] * 16, ISSUE_POLL_S))
    d.run(120.0, lambda _m, _t: ISSUE_POLL_S)
    for m in range(16):
        assert d.starts[m][0] == pytest.approx(2.0 + m * ISSUE_POLL_S)
        assert d.intervals(m, after=0.0) == pytest.approx([2.0] * (len(d.starts[m]) - 1))
    assert d.overruns == 0
    assert d.changes == []


def test_meters_on_long_periods_keep_them_while_the_fast_ones_share_what_is_left() -> None:
    # 8 meters at 1 s and 8 at 2 s need 1.15 of the line: the 2-s meters keep their period, the 1-s
    # meters share the rest alike.
    d = Drive(line([1.0] * 8 + [2.0] * 8, ISSUE_POLL_S))
    d.run(300.0, lambda _m, _t: ISSUE_POLL_S)
    slow = [statistics.mean(d.intervals(m, after=10.0)) for m in range(8, 16)]
    fast = [statistics.mean(d.intervals(m, after=10.0)) for m in range(8)]
    assert slow == pytest.approx([2.0] * 8, rel=0.02)
    assert max(fast) / min(fast) < 1.05
    assert statistics.mean(fast) == pytest.approx(8 * ISSUE_POLL_S / (1 - 8 * ISSUE_POLL_S / 2.0), rel=0.05)


def test_fast_meters_held_up_each_minute_by_the_slow_ones_are_one_overload_not_one_a_minute() -> None:
    # 4 meters at 1 s and 12 at 60 s: the line is 40 % busy, but when all 16 are due together the fast
    # meters miss a slot. That starts an overload once; it is not ended and restarted every minute.
    d = Drive(line([1.0] * 4 + [60.0] * 12, ISSUE_POLL_S))
    d.run(600.0, lambda _m, _t: ISSUE_POLL_S)
    assert [c.started for c in d.changes] == [True]
    for m in range(4, 16):
        gaps = d.intervals(m, after=0.0)
        assert len(gaps) >= 8
        assert gaps == pytest.approx([60.0] * len(gaps))


def test_line_demand_gives_the_shortest_period_that_fits() -> None:
    demand = line_demand([(ISSUE_POLL_S, 1.0)] * 16)
    assert demand is not None
    assert demand.utilisation == pytest.approx(1.53, abs=0.001)
    assert demand.feasible_period_s == pytest.approx(1.5296)
    mixed = line_demand([(0.1, 1.0)] * 4 + [(0.5, 2.0)] * 2)
    assert mixed is not None
    assert mixed.feasible_period_s == pytest.approx(0.4 / (1 - 0.5))
    assert line_demand([(0.1, 1.0), (3.0, 2.0)]) is not None
    assert line_demand([(0.1, 1.0), (3.0, 2.0)]).feasible_period_s is None  # type: ignore[union-attr]
    assert line_demand([]) is None
