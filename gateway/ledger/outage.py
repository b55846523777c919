"""When the ledger cannot write: keep reading, keep the readings, retry, say so once, make room.

A full disk or a failing SD card must not stop the gateway (it used to end the writer, and
with it the daemon: a traceback under systemd's restart loop, or a hang with the buses parked).
What the writer does instead, with this object keeping the state:

* the readings of a failed commit are kept, in a bounded backlog in memory, and retried with
  the next commit, after a capped exponential backoff (:data:`RETRY_FIRST_S` ...
  :data:`RETRY_MAX_S`, host seconds: it is the real disk that has to recover);
* past :data:`BACKLOG_LIMIT` the *oldest raw readings* are shed. That loses no energy: each
  meter's register still holds it, and the next committed reading recovers it (the span is
  interpolated and flagged like any gap). Credits are never shed: they only exist once committed;
* the alarm is logged once when the state starts and once when it ends (with how long, how
  many attempts and readings shed), and shown on the status page with what to do;
* a full disk sets :attr:`StorageOutage.make_room`, which starts the low-disk maintenance at
  once (prune raw readings, give the pages back) instead of at its next period.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable

import structlog

from gateway.clock import Clock
from gateway.errors import LedgerDiskFull, LedgerStorageError
from gateway.intervals import Reading
from gateway.status import GatewayStatus

log = structlog.get_logger("gateway.writer")

ALARM = "ledger_write"
RETRY_FIRST_S = 1.0
"""Host seconds before the first retry: a full disk is often freed by the maintenance within that."""
RETRY_MAX_S = 30.0
"""Cap of the retry delay: a person freeing space sees the gateway catch up within half a minute."""
BACKLOG_LIMIT = 100_000
"""Readings kept in memory while the ledger cannot write: about 16 h of 100 meters read every minute,
some 15 MB. Past that the oldest go (their energy is still in the registers)."""


class StorageOutage:
    """The writer's view of a storage failure: since when, what to retry, when, and what was shed."""

    def __init__(self, clock: Clock, status: GatewayStatus) -> None:
        self._clock = clock
        self._status = status
        self.backlog: deque[Reading] = deque()
        self.make_room = asyncio.Event()
        """Set on a full disk: the maintenance task prunes at once, then clears it."""
        self.failing = False
        self.attempts = 0
        self.shed = 0
        self._since_mono = 0.0
        self._retry_at = 0.0
        self._last_error = LedgerStorageError("")

    def _host_now(self) -> float:
        return asyncio.get_running_loop().time()

    def retry_in_s(self) -> float:
        """Host seconds until the backlog may be retried (0 when not failing)."""
        return max(0.0, self._retry_at - self._host_now()) if self.failing else 0.0

    def take(self, batch: list[Reading]) -> list[Reading]:
        """The backlog and ``batch`` together, in time order: what the next commit must hold."""
        if not self.backlog:
            return batch
        merged = [*self.backlog, *batch]
        self.backlog.clear()
        merged.sort(key=lambda r: r.t_ms)
        return merged

    def keep(self, readings: Iterable[Reading]) -> None:
        """Keep readings for the next attempt, shedding the oldest beyond :data:`BACKLOG_LIMIT`."""
        self.backlog.extend(readings)
        excess = len(self.backlog) - BACKLOG_LIMIT
        if excess > 0:
            kept = sorted(self.backlog, key=lambda r: r.t_ms)[excess:]
            self.backlog = deque(kept)
            self.shed += excess
        if self.failing:
            self._status.alarms[ALARM] = self._message(self._last_error)

    def failed(self, exc: LedgerStorageError) -> None:
        """A commit failed on the storage: start (or go on with) the outage and schedule the retry."""
        self.attempts += 1
        self._last_error = exc
        delay = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** min(self.attempts - 1, 16))
        self._retry_at = self._host_now() + delay
        if isinstance(exc, LedgerDiskFull):
            self.make_room.set()
        if not self.failing:
            self.failing = True
            self._since_mono = self._clock.monotonic()
            log.error("ledger_write_failing", error=str(exc), disk_full=isinstance(exc, LedgerDiskFull),
                      kept_readings=len(self.backlog), retry_in_s=delay,
                      action="readings are kept in memory and retried; free space or check the SD card")
        else:
            log.debug("ledger_write_still_failing", attempts=self.attempts, retry_in_s=delay, error=str(exc))
        self._status.alarms[ALARM] = self._message(exc)

    def recovered(self) -> None:
        """A commit went through: the outage, if there was one, is over."""
        if not self.failing:
            return
        log.info("ledger_write_recovered", failed_s=round(self._clock.monotonic() - self._since_mono, 1),
                 attempts=self.attempts, readings_shed=self.shed)
        self.failing = False
        self.attempts = 0
        self.shed = 0
        self._status.alarms.pop(ALARM, None)

    def _message(self, exc: LedgerStorageError) -> str:
        kept = f"{len(self.backlog)} readings are kept in memory and committed once it can write again"
        shed = (f"; the {self.shed} oldest were dropped (their energy is still in the meters' registers)"
                if self.shed else "")
        if isinstance(exc, LedgerDiskFull):
            return (f"Disk full: the ledger cannot write ({exc}). Meters are still read: {kept}{shed}. Raw readings "
                    "are pruned to make room; billing data is kept. Free space on the SD card.")
        return (f"Storage failure: the ledger cannot write ({exc}). Meters are still read: {kept}{shed}. "
                "Check the SD card (dmesg shows I/O errors) and replace it if this persists.")
