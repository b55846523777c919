"""Is the wall clock good enough to place energy in a quarter-hour?

A Raspberry Pi has no battery clock: until NTP has synchronised it, wall time
is whatever the box last saved (fake-hwclock) or 1970. Closing intervals on
that time would put real energy into the wrong quarter-hours — and a credit,
once sent, cannot be taken back. So intervals are closed only while time is
trusted; readings taken meanwhile are held, and when trust returns they are
re-stamped with the now-correct offset between wall and monotonic time
(monotonic time never jumps, so it carries the true spacing across the step).

Trust needs two things: a synchronised clock (by the configured source) and
no jump of wall time against monotonic time lately. The first synchronisation
may step the clock (that is what it is for); a step seen while time was already
trusted (an operator's `date -s`, a misbehaving time source) suspends trust until
the clock has held still for ``settle_s`` of monotonic time and is synchronised,
so that a clock set wrong and corrected again at once never closes an interval.
Readings held meanwhile are placed on the timeline the clock settled on; the
span across the step is then a gap for the interval engine, filled by its gap
rules and flagged estimated or substituted, never actual.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from gateway.clock import Clock

log = structlog.get_logger("gateway.timetrust")

_TIME_ERROR = 5
"""adjtimex(2) return value meaning "clock not synchronised"."""
_TIMEX_BUFFER = 512
"""Larger than struct timex on every Linux ABI; zeroed means a read-only query."""


class SyncSource(Protocol):
    def synchronised(self) -> bool: ...


class KernelSync:
    """Asks the kernel, like `timedatectl`: chrony, ntpd and systemd-timesyncd all
    clear its "unsynchronised" flag once they have set the clock."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

    def synchronised(self) -> bool:
        state = int(self._libc.adjtimex(ctypes.create_string_buffer(_TIMEX_BUFFER)))
        return state not in (-1, _TIME_ERROR)


class AlwaysSynced:
    """For boxes with a battery-backed clock, and for simulated time."""

    def synchronised(self) -> bool:
        return True


@dataclass
class TimeTrust:
    clock: Clock
    source: SyncSource
    max_step_s: float = 2.0
    settle_s: float = 300.0
    trusted: bool = False
    reason: str = "not checked yet"
    steps: int = 0
    _offset: float | None = field(default=None, repr=False)
    _stepped_at: float | None = field(default=None, repr=False)
    """Monotonic time of the last step seen while trusted; None when not settling."""

    def offset(self) -> float:
        """Wall minus monotonic time now; constant while nobody steps the clock."""
        return self.clock.now() - self.clock.monotonic()

    def check(self) -> bool:
        offset = self.offset()
        mono = self.clock.monotonic()
        if not self.source.synchronised():
            # Whatever the clock does until it is synchronised, the synchronisation sets it right.
            self._offset = None
            self._stepped_at = None
            self._set(False, "the system clock is not synchronised yet (waiting for NTP)")
            return False
        if self._offset is not None and abs(offset - self._offset) > self.max_step_s:
            self.steps += 1
            log.warning("clock_step", step_s=round(offset - self._offset, 3), settle_s=self.settle_s)
            self._stepped_at = mono
        self._offset = offset
        if self._stepped_at is not None:
            if mono - self._stepped_at < self.settle_s:
                self._set(False, f"the wall clock jumped; waiting until it has held still for {self.settle_s:.0f} s")
                return False
            self._stepped_at = None
        self._set(True, "synchronised")
        return True

    def _set(self, trusted: bool, reason: str) -> None:
        if trusted != self.trusted:
            (log.info if trusted else log.warning)("time_trust_changed", trusted=trusted, reason=reason)
        self.trusted = trusted
        self.reason = reason


def source_for(mode: str) -> SyncSource:
    return KernelSync() if mode == "ntp" else AlwaysSynced()
