"""Injected time.

Every part of the gateway reads time through a :class:`Clock`, never through
``time.time()`` or ``datetime.now()``. That lets tests and the demo run hours of
meter time in seconds, and keeps the two kinds of time apart:

* wall time (``now()``, Unix seconds, UTC) stamps readings and places them in
  15-minute intervals; it can jump when NTP steps the clock;
* monotonic time (``monotonic()``) measures durations: timeouts, backoff,
  poll periods. It never jumps.
"""

from __future__ import annotations

import asyncio
import math
import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """What the gateway needs to know about time."""

    def now(self) -> float:
        """Wall time in Unix seconds (UTC)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps; only differences matter."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Sleep for ``seconds`` of this clock's time."""
        ...

    async def sleep_until(self, wall: float) -> None:
        """Sleep until wall time reaches ``wall``."""
        ...

    def host_seconds(self, seconds: float) -> float:
        """How long ``seconds`` of this clock take on the host (for ``asyncio.timeout``)."""
        ...


def utc(ts: float) -> datetime:
    """A Unix timestamp as an aware UTC datetime (for display and exports)."""
    return datetime.fromtimestamp(ts, tz=UTC)


class SystemClock:
    """The real clock of the box."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def host_seconds(self, seconds: float) -> float:
        return seconds

    async def sleep_until(self, wall: float) -> None:
        # Re-check after waking: the wall clock may have been stepped while asleep.
        while (remaining := wall - time.time()) > 0:  # noqa: ASYNC110 - no event fires when time passes
            await asyncio.sleep(min(remaining, 60.0))


class SimulatedClock:
    """Meter time that runs ``speed`` times faster than the host's clock.

    ``tick`` quantises wall time: ``now()`` only ever returns multiples of it.
    The demo uses a tick equal to the poll period so that a simulated meter and
    the gateway reading it agree on the exact instant of a reading, which makes
    the end-to-end conservation check exact rather than approximate. With
    ``tick=0`` time is continuous.
    """

    def __init__(self, start: float, speed: float = 1.0, tick: float = 0.0) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        if tick < 0:
            raise ValueError("tick must not be negative")
        self._start = start
        self._speed = speed
        self._tick = tick
        self._host0 = time.monotonic()

    @property
    def speed(self) -> float:
        return self._speed

    def _raw(self) -> float:
        return self._start + (time.monotonic() - self._host0) * self._speed

    def now(self) -> float:
        raw = self._raw()
        if self._tick:
            return math.floor(raw / self._tick) * self._tick
        return raw

    def monotonic(self) -> float:
        # Quantised like now(), so that wall minus monotonic stays constant: simulated
        # time never steps, and time-trust checks must see that.
        return self.now() - self._start

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self._speed)

    def host_seconds(self, seconds: float) -> float:
        return seconds / self._speed

    async def sleep_until(self, wall: float) -> None:
        while (remaining := wall - self._raw()) > 0:  # noqa: ASYNC110 - see SystemClock.sleep_until
            await asyncio.sleep(remaining / self._speed)


class ManualClock:
    """A clock that moves only when a test tells it to.

    ``sleep`` yields to the loop and returns once the test has advanced the
    clock far enough, so code under test can be driven step by step.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._mono = 0.0
        self._changed = asyncio.Event()

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("ManualClock.advance only moves forward; use step_wall for jumps")
        self._now += seconds
        self._mono += seconds
        self._changed.set()
        self._changed = asyncio.Event()

    def step_wall(self, seconds: float) -> None:
        """Jump the wall clock only (as an NTP step would); monotonic time stays."""
        self._now += seconds
        self._changed.set()
        self._changed = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        target = self._mono + max(0.0, seconds)
        while self._mono < target:
            await self._changed.wait()

    async def sleep_until(self, wall: float) -> None:
        while self._now < wall:
            await self._changed.wait()

    def host_seconds(self, seconds: float) -> float:
        # Manual time does not pass on its own; timeouts use host time unchanged.
        return seconds
