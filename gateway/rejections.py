"""Rejections are counted one by one and logged by the streak, not one line each.

A meter publishing junk every second, or a clock stuck in 1970, would
otherwise write a warning per message: a flood that fills the journal and
hides everything else. Every rejection still counts (status page, /metrics);
the log gets the first of a streak (per meter and reason) at once, then one
summary line per :data:`SUMMARY_S` while it lasts, and one line when the
meter's next good value ends it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.clock import Clock

SUMMARY_S = 300.0
"""Seconds (monotonic) between summary lines of a streak that goes on: often enough to see it is still
happening, rare enough that a flood costs a few lines an hour."""


@dataclass
class _Streak:
    started_mono: float
    logged_mono: float
    count: int = 1
    unlogged: int = 0


class RejectionLog:
    """Rate-limits the warnings for one kind of rejection (``event``), keyed by meter and reason.

    Keys are bounded by configuration: the meter id (``None`` for what no meter claims) and the
    reason, never the rejected content.
    """

    def __init__(self, logger: Any, event: str, clock: Clock, *, summary_s: float = SUMMARY_S) -> None:
        self._log = logger
        self._event = event
        self._clock = clock
        self._summary_s = summary_s
        self._streaks: dict[tuple[str | None, str], _Streak] = {}

    def rejected(self, meter: str | None, reason: str, **context: Any) -> None:
        now = self._clock.monotonic()
        streak = self._streaks.get((meter, reason))
        if streak is None:
            self._streaks[(meter, reason)] = _Streak(now, now)
            self._log.warning(self._event, meter=meter, reason=reason, **context,
                              note=f"more of the same are summarised every {self._summary_s:.0f} s")
            return
        streak.count += 1
        streak.unlogged += 1
        if now - streak.logged_mono >= self._summary_s:
            self._log.warning(f"{self._event}_continuing", meter=meter, reason=reason, count=streak.count,
                              since_last_line=streak.unlogged, for_s=round(now - streak.started_mono), **context)
            streak.logged_mono = now
            streak.unlogged = 0

    def accepted(self, meter: str) -> None:
        """The meter delivered a good value: its streaks end (logged when more than the first happened)."""
        if not self._streaks:
            return
        for key in [key for key in self._streaks if key[0] == meter]:
            streak = self._streaks.pop(key)
            if streak.count > 1:
                self._log.info(f"{self._event}_ended", meter=meter, reason=key[1], count=streak.count,
                               for_s=round(self._clock.monotonic() - streak.started_mono))
