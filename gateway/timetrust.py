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

A battery clock (``trust = "rtc"``) is trusted from boot, but only while it reads
a time that can be real: not before :data:`EARLIEST_PLAUSIBLE_S` (a clock that
lost its battery reads 1970 or 2000), not behind the newest time the gateway
already knows was real (the ledger's newest reading, then every trusted
check), and not implausibly far ahead of it (a century bit read wrong gives
2100). Otherwise it waits for NTP like ``trust = "ntp"``: the kernel's
synchronisation flag settles it. A clock in 2100 would close intervals in 2100,
then refuse every honest reading as older than the last one until 2100 came.

Meter clocks are judged against the trusted clock too (:func:`meter_clock_problem`):
a reading stamped by a meter far ahead of or behind the moment the gateway
received it is refused, never placed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import structlog

from gateway.clock import Clock

log = structlog.get_logger("gateway.timetrust")

_TIME_ERROR = 5
"""adjtimex(2) return value meaning "clock not synchronised"."""
_TIMEX_BUFFER = 512
"""Larger than struct timex on every Linux ABI; zeroed means a read-only query."""

EARLIEST_PLAUSIBLE_S = 1_767_225_600.0
"""2026-01-01T00:00:00Z: this gateway version did not exist before, so a clock reading earlier was
never set (a battery clock that lost power reads 1970 or 2000)."""
RTC_MAX_AHEAD_OF_KNOWN_S = 400 * 86_400.0
"""How far past the newest time known to be real a battery clock may read at boot: a box stored
for over a year is rarer than an RTC that reads the wrong century (2100)."""
RTC_MAX_AHEAD_OF_RELEASE_S = 20 * 365 * 86_400.0
"""With no ledger yet to compare with: no box runs this version twenty years on."""
RTC_BEHIND_TOLERANCE_S = 600.0
"""A battery clock may read this much before the newest record (meter clocks may run up to
:data:`FUTURE_TOLERANCE_S` ahead of the gateway's): more is a clock gone back."""

FUTURE_TOLERANCE_S = 300.0
"""How far ahead of the gateway's trusted clock a meter's own timestamp may be (meter clocks drift;
minutes are normal, days are a broken clock or a seconds/milliseconds mix-up)."""
METER_CLOCK_MAX_BEHIND_S = 7 * 86_400.0
"""How old a meter's timestamp may be when the gateway receives it: a broker queues a meter's messages
while the gateway is down (1000 messages by default: three and a half days of Tasmota's 5-minute
telemetry), so days are normal; more is a meter clock that was never set. Refusing a reading that
old loses nothing: the register still holds its energy and the span is filled from the next one."""


def _iso(ts: float) -> str:
    try:
        return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return f"{ts:.0f} (Unix seconds)"


def meter_clock_problem(stamp_ms: int, received_ms: int) -> tuple[str, str] | None:
    """Why a meter's own timestamp cannot be real, judged against when the gateway received it
    (on the gateway's trusted clock); ``None`` if it can."""
    ahead_s = (stamp_ms - received_ms) / 1000
    if ahead_s > FUTURE_TOLERANCE_S:
        return "meter_clock_ahead", (f"the meter's clock reads {_iso(stamp_ms / 1000)}, {ahead_s:.0f} s ahead of the "
                                     f"gateway's (more than {FUTURE_TOLERANCE_S:.0f} s)")
    if -ahead_s > METER_CLOCK_MAX_BEHIND_S:
        return "meter_clock_behind", (f"the meter's clock reads {_iso(stamp_ms / 1000)}, {-ahead_s / 86_400:.1f} days "
                                      f"behind the gateway's (more than {METER_CLOCK_MAX_BEHIND_S / 86_400:.0f})")
    return None


class SyncSource(Protocol):
    def synchronised(self) -> bool: ...


class KernelSync:
    """Asks the kernel, like `timedatectl`: chrony, ntpd and systemd-timesyncd all
    clear its "unsynchronised" flag once they have set the clock."""

    def __init__(self) -> None:
        import ctypes.util  # here: a box with trust = "always" never needs ctypes (0.5 MiB)

        self._libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

    def synchronised(self) -> bool:
        import ctypes

        state = int(self._libc.adjtimex(ctypes.create_string_buffer(_TIMEX_BUFFER)))
        return state not in (-1, _TIME_ERROR)


class AlwaysSynced:
    """For simulated time and tests: the clock is what it says."""

    def synchronised(self) -> bool:
        return True


class RtcSync:
    """A battery-backed clock: set at boot, but only believed while it reads a time that can be real.

    NTP, once the kernel reports it, settles every doubt; until then the clock is compared with
    the newest time known to be real (see the module docstring).
    """

    def __init__(self, kernel: SyncSource | None = None) -> None:
        self._kernel = kernel or KernelSync()

    def synchronised(self) -> bool:
        return True  # the battery kept it running; whether it reads a real time is :meth:`doubt`

    def doubt(self, now: float, known: float | None) -> str | None:
        """Why the clock's reading ``now`` cannot be trusted, given ``known``, the newest time known
        to be real (``None``: nothing known yet); ``None`` when it can."""
        if self._kernel.synchronised():
            return None
        if now < EARLIEST_PLAUSIBLE_S:
            return (f"the battery clock reads {_iso(now)}, before this gateway version existed: it was never set "
                    "or lost power; waiting for NTP (or set the clock)")
        if known is not None and now < known - RTC_BEHIND_TOLERANCE_S:
            return (f"the battery clock reads {_iso(now)}, before the newest record ({_iso(known)}): waiting for "
                    "NTP (or set the clock)")
        limit = known + RTC_MAX_AHEAD_OF_KNOWN_S if known is not None else \
            EARLIEST_PLAUSIBLE_S + RTC_MAX_AHEAD_OF_RELEASE_S
        if now > limit:
            return (f"the battery clock reads {_iso(now)}, implausibly far ahead of "
                    f"{'the newest record (' + _iso(known) + ')' if known is not None else 'this gateway version'}: "
                    "waiting for NTP (or set the clock)")
        return None


@dataclass
class TimeTrust:
    clock: Clock
    source: SyncSource
    max_step_s: float = 2.0
    settle_s: float = 300.0
    trusted: bool = False
    reason: str = "not checked yet"
    steps: int = 0
    known_s: float | None = None
    """The newest wall time known to be real: the ledger's newest reading, then every trusted check."""
    _offset: float | None = field(default=None, repr=False)
    _stepped_at: float | None = field(default=None, repr=False)
    """Monotonic time of the last step seen while trusted; None when not settling."""
    _announced: bool = field(default=False, repr=False)
    """Whether an untrusted spell has been logged: the first check starts untrusted ("not checked yet")."""

    def offset(self) -> float:
        """Wall minus monotonic time now; constant while nobody steps the clock."""
        return self.clock.now() - self.clock.monotonic()

    def remember(self, t_s: float) -> None:
        """A time known to be real (e.g. the ledger's newest reading): a battery clock must not read before it."""
        self.known_s = t_s if self.known_s is None else max(self.known_s, t_s)

    def check(self) -> bool:
        offset = self.offset()
        mono = self.clock.monotonic()
        doubt = self.source.doubt(self.clock.now(), self.known_s) if isinstance(self.source, RtcSync) else None
        if doubt is not None:
            # As while unsynchronised: whatever the clock does until then, NTP (or the operator) sets it right.
            self._offset = None
            self._stepped_at = None
            self._set(False, doubt)
            return False
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
        self.remember(self.clock.now())
        return True

    def _set(self, trusted: bool, reason: str) -> None:
        # Once when an untrusted spell starts (also at start-up, where the state already reads "untrusted"),
        # once when it ends; not on every check in between, whatever its reason says.
        if trusted != self.trusted or (not trusted and not self._announced):
            (log.info if trusted else log.warning)("time_trust_changed", trusted=trusted, reason=reason)
        self._announced = not trusted
        self.trusted = trusted
        self.reason = reason


def source_for(mode: str) -> SyncSource:
    if mode == "ntp":
        return KernelSync()
    if mode == "rtc":
        return RtcSync()
    return AlwaysSynced()
