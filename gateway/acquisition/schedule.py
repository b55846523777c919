"""Which poll a line runs next, and fair shares when the line cannot keep every period.

Polls are placed on a fixed grid (multiples of each poll period in wall time) instead of "sleep N
seconds after the last poll": the schedule cannot drift, and a poll lands on every 15-minute
boundary, which is where the interval engine wants a real register value.

Order when several polls are due: the earliest slot first; within a slot, healthy meters before
failing ones (a silent meter eats a whole timeout, and putting it last keeps everyone else's period
steady), then the meter polled longest ago (round robin), then configuration order.

**Overbooked lines.** A poll that ends after its next slot has begun is an *overrun*: the meter is
then due at once for the latest slot that has begun, behind every poll still waiting for an earlier
slot and, within its slot, behind the meters polled less recently. An overbooked line thus serves
its meters round robin, most overdue first, without a pause: each gets the same share and its period
stretches to what the line can give, instead of the first meters keeping their period and the last
ones losing every other slot. Meters on longer periods keep them as long as the line can carry
them. After a stall that is not the schedule's doing (the line was down), :meth:`PollSchedule.resync`
puts every overdue poll on its latest slot, so each meter is read once, not twice.

The line is *overloaded* from the first poll that falls behind (due again as soon as it is done)
until it has been idle with no poll falling behind for :data:`OVERLOAD_CLEAR_PERIODS` of its shortest
period, and at least the longest (so that the polls of a long period, all due at once, do not start
a new overload every time): the bus logs one warning when it starts and one when it ends, not one
per overrun.

Pure: the caller passes the times (wall seconds for the grid, monotonic for durations).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from gateway.acquisition.read_plan import ReadPlan, WireCost
from gateway.config import ModbusMeterConfig

M = TypeVar("M")

OVERLOAD_CLEAR_PERIODS = 10
"""An overload ends once the line has been idle and no poll has fallen behind for this many of its
shortest period: a line on the edge of its capacity says so once, not every few cycles."""

OVERLOAD_CLEAR_MAX_S = 3600.0
"""...but never longer than this (unless its longest period is longer)."""

ACHIEVED_WEIGHT_MIN = 0.05
"""Least weight of one meter's latest poll interval in the line's achieved period (a running average
over about one round of its fastest meters)."""


def next_slot(now: float, period: float) -> float:
    """The first grid point of ``period`` strictly after ``now``."""
    return (math.floor(now / period) + 1) * period


def latest_slot(now: float, period: float) -> float:
    """The last grid point of ``period`` at or before ``now``."""
    return math.floor(now / period) * period


@dataclass(eq=False)
class PollJob(Generic[M]):
    """A periodic read of one meter: its energy, its instantaneous values, or both."""

    meter: M
    names: tuple[str, ...]
    plan: ReadPlan
    period: float
    next_due: float
    """Wall time of the slot this job waits for."""
    energy: bool
    order: int
    """The meter's place in the configuration."""
    cost_s: float = 0.0
    """Wire time of one poll by its read plan (RTU lines; 0 where the plan says nothing about time)."""
    retries_used: int = 0
    """Retries of this slot's poll so far. A retry goes to the back of its slot, so a device
    that just started failing costs the healthy meters due with it one timeout, not several."""
    served: int = 0
    """When it was last polled, as a count of polls on the line (0: never): the round-robin order."""
    began_mono: float | None = None
    """Start of its current or last poll, for the achieved period."""


@dataclass(frozen=True)
class OverloadChange:
    """The line started or stopped being overloaded (one log line each way)."""

    started: bool
    period_s: float
    """The line's shortest configured poll period."""
    needed_s: float | None
    """The shortest period the read plans allow for those meters (RTU lines), None where unknown."""
    achieved_s: float | None
    """The period its meters actually got lately."""
    lasted_s: float = 0.0
    overruns: int = 0
    """Polls that missed their slot during the overload (when it ends)."""


@dataclass(frozen=True)
class PollDone:
    overrun: bool
    """The poll ended after its next slot had begun."""
    slot: float
    cycle_s: float | None
    """When this was the last poll due in its slot: seconds from the slot to its end."""
    change: OverloadChange | None


@dataclass(frozen=True)
class LineDemand:
    """What a line's configured polls ask of the wire, from their read plans."""

    utilisation: float
    """Sum of wire time per poll over period: above 1 the periods cannot all be kept."""
    shortest_period_s: float
    feasible_period_s: float | None
    """The shortest period the most often polled meters can have while the others keep theirs;
    None when the others alone fill the line."""


def line_demand(loads: Iterable[tuple[float, float]]) -> LineDemand | None:
    """From (wire seconds per poll, period) of each job on a line; None for a line without jobs."""
    loads = list(loads)
    if not loads:
        return None
    shortest = min(period for _, period in loads)
    fast = sum(cost for cost, period in loads if period == shortest)
    rest = sum(cost / period for cost, period in loads if period != shortest)
    feasible = fast / (1.0 - rest) if rest < 1.0 else None
    return LineDemand(sum(cost / period for cost, period in loads), shortest, feasible)


def poll_wire_s(plan: ReadPlan, cost: WireCost, gap_s: float = 0.0, switch_s: float = 0.0) -> float:
    """Wire time of one poll: its plan's transactions, plus the silence a line's longer configured gap
    (``gap_s``) adds to each and the pause for a new unit id (``switch_s``) adds once."""
    t35 = cost.t35()
    return (plan.total_time(cost) + len(plan.blocks) * max(0.0, gap_s - t35)
            + max(0.0, switch_s - max(gap_s, t35)))


def job_specs(meter: ModbusMeterConfig, names: Sequence[str]) -> list[tuple[tuple[str, ...], float, bool]]:
    """How one meter's polled quantities split into jobs: (names, period, energy?).

    With a separate instantaneous period, energy_* quantities go on the energy grid, the rest on the
    other; check-config costs a line with the same split.
    """
    instant_period = meter.poll_instant_s
    if instant_period is None or instant_period == meter.poll_s:
        return [(tuple(names), meter.poll_s, True)] if names else []
    energy = tuple(n for n in names if n.startswith("energy_"))
    instant = tuple(n for n in names if not n.startswith("energy_"))
    return [(group, period, is_energy) for group, period, is_energy in
            ((energy, meter.poll_s, True), (instant, instant_period, False)) if group]


class PollSchedule(Generic[M]):
    """The jobs of one line and the overload state; the bus asks it what to poll next."""

    def __init__(self, *, wire_timed: bool = True) -> None:
        self.jobs: list[PollJob[M]] = []
        self._wire_timed = wire_timed
        self._polls = 0
        self.overruns = 0
        self.overloaded_since: float | None = None
        """Wall time the current overload started, None while the line keeps its periods."""
        self._last_behind: float | None = None
        self._overruns_before = 0
        self.achieved_s: float | None = None
        """Running average of the poll interval of the meters on the shortest period."""
        self.shortest_period_s: float | None = None
        self._clear_s = 0.0
        self._achieved_weight = 1.0

    def add(self, job: PollJob[M]) -> None:
        self.jobs.append(job)
        self.shortest_period_s = shortest = min(j.period for j in self.jobs)
        self._clear_s = max(max(j.period for j in self.jobs),
                            min(OVERLOAD_CLEAR_PERIODS * shortest, OVERLOAD_CLEAR_MAX_S))
        fastest = sum(1 for j in self.jobs if j.period == self.shortest_period_s)
        self._achieved_weight = max(ACHIEVED_WEIGHT_MIN, 2.0 / (fastest + 1))

    @property
    def needed_period_s(self) -> float | None:
        """The shortest period the read plans allow the most often polled meters (None off a serial wire)."""
        if not self._wire_timed:
            return None
        demand = line_demand((j.cost_s, j.period) for j in self.jobs)
        return demand.feasible_period_s if demand else None

    def pick(self, failing: Callable[[M], bool]) -> PollJob[M] | None:
        """The job to run next, due or not (the caller waits for its slot)."""
        if not self.jobs:
            return None
        return min(self.jobs, key=lambda j: (j.next_due, j.retries_used > 0 or failing(j.meter), j.served,
                                             j.order, not j.energy))

    def begin(self, job: PollJob[M], mono: float) -> None:
        """A poll of ``job`` starts (its first attempt in this slot)."""
        self._polls += 1
        job.served = self._polls
        if job.began_mono is not None and job.period == self.shortest_period_s:
            interval = mono - job.began_mono
            if self.achieved_s is None:
                self.achieved_s = interval
            else:
                self.achieved_s += self._achieved_weight * (interval - self.achieved_s)
        job.began_mono = mono

    def done(self, job: PollJob[M], now: float, *, backoff_s: float | None = None,
             polled: bool = True) -> PollDone:
        """Place ``job`` on its next slot after a poll ended at wall time ``now``.

        ``backoff_s``: the meter is backed off (offline) and next tried that much later, still on
        its grid. ``polled=False``: the slot passed without a poll (its meter is offline).
        """
        slot = job.next_due
        overrun = False
        if backoff_s is not None or not polled:
            job.began_mono = None  # the next interval is not the line's doing
        if backoff_s is not None:
            job.next_due = next_slot(now + backoff_s - job.period, job.period)
        elif not polled:
            job.next_due = next_slot(now, job.period)  # cost the line nothing: never behind
        else:
            job.next_due = slot + job.period
            if job.next_due <= now:
                overrun = True
                self.overruns += 1
                job.next_due = latest_slot(now, job.period)
        change = None
        if job.next_due <= now:
            self._last_behind = now
            if self.overloaded_since is None:
                self.overloaded_since = now
                self._overruns_before = self.overruns - 1
                change = self._change(started=True)
        last_of_slot = not any(j.next_due <= slot for j in self.jobs)
        return PollDone(overrun, slot, now - slot if last_of_slot else None, change)

    def idle(self, now: float) -> OverloadChange | None:
        """Nothing is due: the line has caught up. Ends an overload once it has stayed clear long enough."""
        if self.overloaded_since is None or self._last_behind is None:
            return None
        if now - self._last_behind < self._clear_s:
            return None
        change = self._change(started=False, lasted_s=now - self.overloaded_since,
                              overruns=self.overruns - self._overruns_before)
        self.overloaded_since = None
        self._last_behind = None
        return change

    def _change(self, *, started: bool, lasted_s: float = 0.0, overruns: int = 0) -> OverloadChange:
        return OverloadChange(started, self.shortest_period_s or 0.0, self.needed_period_s, self.achieved_s,
                              lasted_s, overruns)

    def resync(self, now: float) -> None:
        """The line was stalled (down): an overdue poll is due once, for the latest slot, not for each one missed."""
        for job in self.jobs:
            if job.next_due <= now:
                job.next_due = max(job.next_due, latest_slot(now, job.period))

    def shift(self, step: float) -> None:
        """Move the grid with a wall-clock step of ``step`` seconds (see the bus's wall-step rule)."""
        for job in self.jobs:
            job.next_due = round((job.next_due + step) / job.period) * job.period
        if self.overloaded_since is not None:
            self.overloaded_since += step
        if self._last_behind is not None:
            self._last_behind += step
