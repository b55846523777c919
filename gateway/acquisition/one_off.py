"""One-off requests on a line the scheduler also polls: a bounded queue and a share of the line.

One-off reads come from the local API (a technician on a phone) and from commissioning tools. They
go through the line's scheduler, never beside it, so they compete with the regular polls for the one
transaction in flight. Two rules keep the polls on their period:

- **Idle gaps are free.** A request whose worst case (every attempt timing out) ends before the next
  poll is due cannot delay any poll: it runs at once. A line without meters (``scan``, ``read``)
  serves every request this way, at full speed.
- **Otherwise, a share.** A request may go ahead of waiting polls only while the line's one-off
  budget is not overdrawn: a token bucket filled at ``one_off_share`` line seconds per second
  (capped at share x :data:`ONE_OFF_WINDOW_S`) and charged with the time each such request held the
  line. Over any span the polls lose at most that share of the line to one-off reads.

The queue is bounded twice: :data:`MAX_PENDING_READS` whole reads in progress and
:data:`MAX_PENDING_REQUESTS` transactions queued; beyond that a caller gets :class:`BusBusy` with a
time to retry (HTTP 429 with ``Retry-After``), at once, without queueing anything. A caller that
gives up leaves the queue at once, so abandoned requests never fill it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import structlog

from gateway.acquisition.transport import wire_cost
from gateway.clock import Clock
from gateway.config import BusConfig
from gateway.errors import GatewayError

log = structlog.get_logger("gateway.modbus")

MAX_PENDING_REQUESTS = 32
"""One-off transactions queued at once; more means a client is hammering the line."""

MAX_PENDING_READS = 4
"""One-off reads (each a few transactions) in progress per line; more are refused with BusBusy
(HTTP 429): a technician needs one or two, a client hammering the API must not queue minutes of line time."""

ONE_OFF_WINDOW_S = 10.0
"""The share is kept over spans this long: after a quiet spell, one-off requests may go ahead of
waiting polls for at most share x this many seconds of line time at once."""

RETRY_AFTER_MAX_S = 60.0
"""Longest wait suggested to a refused read: a whole read rarely takes longer, even on a slow line."""

READ_TIME_WEIGHT = 0.3
"""Weight of the latest read's duration in the running estimate behind the suggested retry time."""

FIRST_READ_GUESS_S = 1.0
"""Suggested retry time before any read has finished on this line."""


class BusBusy(GatewayError):
    """Too many one-off requests are already waiting for this line; ``retry_after_s`` says when to try again."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(eq=False)
class OneOffRequest:
    unit: int
    function: int
    start: int
    count: int
    turnaround_s: float
    future: asyncio.Future[list[int]] = field(repr=False)


class ShareBudget:
    """Token bucket in line seconds (pure: the caller passes monotonic time)."""

    def __init__(self, share: float, window_s: float = ONE_OFF_WINDOW_S) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], got {share}")
        self.share = share
        self.cap = share * window_s
        self.credit = 0.0
        self._at: float | None = None

    def _accrue(self, now: float) -> None:
        if self._at is not None and now > self._at:
            self.credit = min(self.cap, self.credit + self.share * (now - self._at))
        self._at = now if self._at is None else max(self._at, now)

    def wait_s(self, now: float) -> float:
        """Seconds until a request may go ahead of waiting polls (<= 0: now)."""
        self._accrue(now)
        return -self.credit / self.share

    def charge(self, seconds: float, now: float) -> None:
        self._accrue(now)
        self.credit -= seconds


class OneOffQueue:
    """The one-off requests waiting for one line, and what they may take of it."""

    def __init__(self, bus: BusConfig, clock: Clock) -> None:
        self._cfg = bus
        self._clock = clock
        self._requests: deque[OneOffRequest] = deque()
        self.arrived = asyncio.Event()
        """Set when a request is queued: wakes the scheduler."""
        self.budget = ShareBudget(bus.one_off_share)
        self.busy_s = 0.0
        """Line time one-off requests have taken so far (monotonic seconds), for tests and benchmarks."""
        self._free_until: float | None = None
        self._reads_pending = 0
        self._reads_refused = 0
        """Reads refused since the queue filled; 0 again once it has drained (each change is logged once)."""
        self._read_s = FIRST_READ_GUESS_S

    def __len__(self) -> int:
        return len(self._requests)

    def retry_after_s(self) -> float:
        return min(RETRY_AFTER_MAX_S, max(1.0, self._read_s))

    # ---- callers ------------------------------------------------------------------------

    async def submit(self, unit: int, function: int, start: int, count: int, turnaround_s: float) -> list[int]:
        """Queue one transaction and wait for its registers (or the error the line gave it)."""
        if len(self._requests) >= MAX_PENDING_REQUESTS:
            raise BusBusy(f"{len(self._requests)} requests already queued on bus {self._cfg.name!r}",
                          retry_after_s=self.retry_after_s())
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        req = OneOffRequest(unit, function, start, count, turnaround_s, future)
        self._requests.append(req)
        self.arrived.set()
        try:
            return await future
        finally:
            if not future.done():
                future.cancel()
            if req in self._requests:  # the caller gave up before its turn
                self._requests.remove(req)

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[None]:
        """Admission of one whole read (several transactions): BusBusy at once when the line has enough."""
        if self._reads_pending >= MAX_PENDING_READS:
            self._reads_refused += 1
            retry = self.retry_after_s()
            if self._reads_refused == 1:
                log.warning("one_off_reads_refused", bus=self._cfg.name, pending=self._reads_pending,
                            retry_after_s=round(retry, 1))
            raise BusBusy(f"bus {self._cfg.name!r} already has {self._reads_pending} one-off reads in progress; "
                          f"try again in {math.ceil(retry)} s", retry_after_s=retry)
        if self._reads_refused and self._reads_pending == 0:
            # Logged once the backlog is gone, not at every free slot of a sustained flood.
            log.info("one_off_reads_accepted", bus=self._cfg.name, refused=self._reads_refused)
            self._reads_refused = 0
        self._reads_pending += 1
        t0 = self._clock.monotonic()
        try:
            yield
        finally:
            self._reads_pending -= 1
        self._read_s += READ_TIME_WEIGHT * (self._clock.monotonic() - t0 - self._read_s)

    # ---- the scheduler ------------------------------------------------------------------

    def wait_s(self, next_poll_due: float | None) -> float | None:
        """None with nothing queued; else seconds (monotonic) until the head may be served, <= 0 for now."""
        if not self._requests:
            return None
        now = self._clock.now()
        if next_poll_due is None or now + self._worst_case_s(self._requests[0]) <= next_poll_due:
            self._free_until = math.inf if next_poll_due is None else next_poll_due
            return 0.0
        self._free_until = None
        return self.budget.wait_s(self._clock.monotonic())

    def pop(self) -> OneOffRequest:
        return self._requests.popleft()

    def charge(self, busy_s: float) -> None:
        """Count a served request's line time: all of it when it went ahead of waiting polls; when it ran
        in an idle gap, only what it overran the next poll's due time by."""
        self.busy_s += busy_s
        over = busy_s if self._free_until is None else max(0.0, self._clock.now() - self._free_until)
        self.budget.charge(over, self._clock.monotonic())

    def cancel_all(self) -> None:
        for req in self._requests:
            if not req.future.done():
                req.future.cancel()
        self._requests.clear()

    def _worst_case_s(self, req: OneOffRequest) -> float:
        """The longest a request can hold the line: every attempt timing out."""
        attempt = self._cfg.timeout_s + req.turnaround_s
        if self._cfg.kind != "tcp":  # serial timing, on a local line or behind a device server
            cost = wire_cost(self._cfg, req.turnaround_s)
            attempt += (cost.transaction_time(req.count) + max(self._cfg.inter_frame_gap_s or 0.0, cost.t35())
                        + self._cfg.device_switch_delay_s)
        return attempt * (self._cfg.retries + 1)
