"""What the status page and the log say about one Modbus line: its counts and rates, outages and overload.

Why apart from the bus scheduler (:mod:`gateway.acquisition.modbus`): the bus decides what goes on the
wire and when; this is the bookkeeping of what happened there, for the people watching. Each transaction
is counted on the line's :class:`~gateway.status.LineStatus`, with the last minute's rates from
:class:`~gateway.acquisition.line_stats.LineStats` (O(1) per transaction, see there), and each change of
the line's state is logged once, not once per retry or per cycle: unavailable and available again,
overloaded and fitting again.

The events are logged as the bus's (``gateway.modbus``), as they were when this lived in the bus.
"""

from __future__ import annotations

import structlog

from gateway.acquisition.line_stats import LineStats
from gateway.acquisition.schedule import OverloadChange
from gateway.clock import Clock
from gateway.status import LineStatus

log = structlog.get_logger("gateway.modbus")


class LineReport:
    """One bus's line as shown: ``line`` is the status record the page and API read."""

    def __init__(self, line: LineStatus, bus: str, clock: Clock, window_s: int) -> None:
        self.line = line
        self._bus = bus
        self._clock = clock
        self._window_s = window_s
        self._stats = LineStats(clock.monotonic(), window_s)
        self._down_since: float | None = None
        """Monotonic time the line became unavailable (a missing serial device...); None while it works."""

    def restart_rates(self) -> None:
        """Rates count from now: the bus has started running."""
        self._stats = LineStats(self._clock.monotonic(), self._window_s)

    def record(self, t0: float, *, ok: bool, noise_bytes: int, error: str | None = None,
               line_down: bool = False) -> None:
        """One transaction attempt that began at monotonic ``t0`` and has just ended."""
        now = self._clock.monotonic()
        line = self.line
        line.transactions += 1
        line.record(self._clock.now(), ok)
        if not ok:
            line.errors += 1
            line.last_error = error
        if not line_down:
            line.connected = True
        line.noise_bytes = noise_bytes
        self._stats.add(now, now - t0, ok=ok)
        self.refresh_rates(now)

    def refresh_rates(self, now: float | None = None) -> None:
        rates = self._stats.rates(self._clock.monotonic() if now is None else now)
        line = self.line
        line.utilisation = rates.utilisation
        line.transactions_per_s = rates.transactions_per_s
        line.errors_per_s = rates.errors_per_s

    def down(self, error: str, retry_in: float) -> None:
        # Logged once when the outage starts (from start-up too: the line was never "connected" then) and
        # once when it ends (up); the retries in between are debug, or a missing adapter floods the log.
        first = self._down_since is None
        if first:
            self._down_since = self._clock.monotonic()
        self.line.connected = False
        self.line.last_error = error
        (log.warning if first else log.debug)("line_unavailable", bus=self._bus, error=error,
                                              retry_in_s=retry_in)

    def up(self) -> None:
        if self._down_since is not None:
            log.info("line_available", bus=self._bus, unavailable_s=round(self._clock.monotonic()
                                                                          - self._down_since, 1))
            self._down_since = None

    def overload(self, change: OverloadChange, overloaded_since: float | None) -> None:
        """The one warning when a line's periods stop fitting, and the one when they fit again."""
        line = self.line
        line.overloaded = change.started
        line.overloaded_since = overloaded_since
        line.achievable_period_s = change.achieved_s if change.started and change.achieved_s else line.poll_period_s
        needed = None if change.needed_s is None else round(change.needed_s, 3)
        if change.started:
            log.warning("line_overloaded", bus=self._bus, period_s=change.period_s, needed_s=needed,
                        hint="the meters are polled round robin, each as often as the line allows: lengthen "
                             "poll_s (check-config gives the shortest that fits), read fewer quantities, "
                             "or split the meters over more lines")
        else:
            log.warning("line_overload_ended", bus=self._bus, period_s=change.period_s,
                        lasted_s=round(change.lasted_s, 1), overruns=change.overruns,
                        achieved_s=None if change.achieved_s is None else round(change.achieved_s, 3))
