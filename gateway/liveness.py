"""Is the daemon still doing its work? What the systemd watchdog is fed on.

A live event loop is not enough: a commit that never returns (a hung storage device, a
deadlock in SQLite's worker thread) leaves the loop running, the web page answering and the
watchdog fed, while no reading is stored again. So each worker whose steps must end
(the ledger writer's commits, each bus's transactions) marks its steps with a
:class:`Progress`, and the watchdog stops feeding systemd once one step has lasted longer than
its limit; systemd then restarts the daemon (``WatchdogSec`` in the unit).

Waiting is not a step: a bus sleeping until its next poll, waiting for its line to come back
or for another program to release the line's lock, or a writer waiting for readings, is idle,
not wedged. A step's limit is far above what the step can take when things work (a
transaction is bounded by its timeout, a commit by the disk), so only a step that will not end
by itself trips it.

Time here is host monotonic time, on purpose: systemd's watchdog counts host seconds, and a
simulated clock (the demo at 900x) must not make a 0.1 s commit look like a hung one.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

WRITER_STALL_S = 120.0
"""Host seconds one commit may take before the writer counts as wedged. A batch commits in well
under a second on an SD card and a WAL checkpoint of a big ledger in seconds; a failing disk
fails a commit quickly (the writer then retries with a backoff, which is progress). Two minutes
is beyond anything a working storage does, and short enough that the box is not blind for long."""
BUS_STALL_S = 60.0
"""Host seconds one Modbus transaction may take before its bus counts as wedged. Every
transaction is bounded by its timeout (seconds at most) and a TCP connect by 3 s: a minute
means the timeout itself did not fire."""


class Progress:
    """The step a worker is in, if any, and since when."""

    def __init__(self, name: str, limit_s: float, *, now: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.limit_s = limit_s
        self._now = now
        self._since: float | None = None
        self.steps = 0
        """Steps ended (with or without success) since the start."""

    async def step(self, work: Awaitable[T]) -> T:
        """Await ``work`` as one step (a commit, a transaction): a step that never ends is a wedge."""
        self._since = self._now()
        try:
            return await work
        finally:
            self._since = None
            self.steps += 1

    def stuck_s(self) -> float:
        """How long the current step has lasted; 0 between steps."""
        since = self._since
        return 0.0 if since is None else max(0.0, self._now() - since)


@dataclass(frozen=True, slots=True)
class Wedge:
    """A worker stuck in one step beyond its limit."""

    worker: str
    stuck_s: float
    limit_s: float

    def describe(self) -> str:
        return (f"{self.worker} has been stuck in one step for {self.stuck_s:.0f} s (limit {self.limit_s:.0f} s); "
                "the watchdog is no longer fed, so systemd restarts the daemon")


def first_wedge(workers: Iterable[Progress]) -> Wedge | None:
    """The worker stuck the longest beyond its limit, or None while every worker makes progress."""
    worst: Wedge | None = None
    for progress in workers:
        stuck_s = progress.stuck_s()
        if stuck_s > progress.limit_s and (worst is None or stuck_s > worst.stuck_s):
            worst = Wedge(progress.name, stuck_s, progress.limit_s)
    return worst
