"""A line's recent transaction rate, error rate and busy fraction, in O(1) per transaction.

The status page shows each line as it is *now*: the last minute, not an average since boot. Keeping
every transaction of that minute and summing it on each new one cost a quarter of the daemon's CPU on
a busy line (40 transactions a second, 2400 to sum, twice, forty times a second). Here the minute is
a ring of one-second buckets with running totals: a transaction adds to its bucket and the totals; a
second that passes clears one bucket and takes it off the totals. Busy time is kept in whole
microseconds, so the totals never drift however long the daemon runs.

Pure: the caller passes monotonic time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

US_PER_S = 1_000_000


@dataclass(frozen=True)
class Rates:
    """What the line did over the recent window."""

    transactions_per_s: float
    errors_per_s: float
    utilisation: float
    """Fraction of the window a transaction was in flight (0..1)."""


class LineStats:
    """Transactions, errors and busy time over the last ``window_s`` seconds, in one-second buckets.

    The window is the current second so far plus the ``window_s - 1`` whole seconds before it; until
    the line has run that long, rates are over the time since ``started``.
    """

    def __init__(self, started: float, window_s: int = 60) -> None:
        if window_s < 2:
            raise ValueError(f"window_s must be at least 2 seconds, not {window_s}")
        self._n = window_s
        self._started = started
        self._second = [-1] * window_s
        """Which second each bucket holds (-1: none yet)."""
        self._count = [0] * window_s
        self._errors = [0] * window_s
        self._busy_us = [0] * window_s
        self._head: int | None = None
        """The latest second seen; buckets of seconds more than ``window_s - 1`` before it are empty."""
        self.count = 0
        self.errors = 0
        self.busy_us = 0

    def add(self, now: float, busy_s: float, *, ok: bool) -> None:
        """A transaction that ended at ``now`` after holding the line for ``busy_s``."""
        second = math.floor(now)
        self._advance(second)
        i = second % self._n
        busy = round(busy_s * US_PER_S)
        self._count[i] += 1
        self._busy_us[i] += busy
        self.count += 1
        self.busy_us += busy
        if not ok:
            self._errors[i] += 1
            self.errors += 1

    def _advance(self, second: int) -> None:
        head = self._head
        if head is not None and second <= head:
            return  # same second (or a monotonic clock that did not move)
        self._head = second
        first = second - self._n + 1 if head is None else max(head + 1, second - self._n + 1)
        for s in range(first, second + 1):  # at most window_s buckets, usually one
            i = s % self._n
            if self._second[i] != s:
                self.count -= self._count[i]
                self.errors -= self._errors[i]
                self.busy_us -= self._busy_us[i]
                self._count[i] = self._errors[i] = self._busy_us[i] = 0
                self._second[i] = s

    def rates(self, now: float) -> Rates:
        """The rates over the window ending at ``now`` (seconds that passed without traffic count as idle)."""
        second = math.floor(now)
        self._advance(second)
        span = min(self._n - 1 + (now - second), now - self._started)
        if span <= 0:
            return Rates(0.0, 0.0, 0.0)
        return Rates(self.count / span, self.errors / span, min(1.0, self.busy_us / US_PER_S / span))
