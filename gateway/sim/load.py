"""A deterministic household/commercial load model with an exact energy register.

Power is a smooth daily shape plus a few sinusoids of incommensurate periods
standing in for noise. Everything is integrable in closed form, so the
register at any instant is known exactly without stepping through time:
that is what lets the demo check the gateway's credits against the meter's
true register delta to the watt-hour.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass

DAY_S = 86_400.0


@dataclass(frozen=True)
class LoadModel:
    base_w: float
    daily_w: float
    """Amplitude of the daily swing (peak in the evening)."""
    wiggles: tuple[tuple[float, float, float], ...]
    """(amplitude W, period s, phase rad) terms; their sum stays below base_w."""
    epoch: float
    """The register starts at ``start_wh`` at this instant."""
    start_wh: int

    @classmethod
    def for_meter(cls, meter_id: str, epoch: float) -> LoadModel:
        seed = int.from_bytes(hashlib.sha256(meter_id.encode()).digest()[:8], "big")
        rng = random.Random(seed)
        base = rng.uniform(800, 4000)
        wiggles = tuple(
            (base * rng.uniform(0.05, 0.15), period, rng.uniform(0, 2 * math.pi))
            for period in (397.0, 1_831.0, 7_919.0)
        )
        return cls(base_w=base, daily_w=base * rng.uniform(0.3, 0.5), wiggles=wiggles, epoch=epoch,
                   start_wh=rng.randrange(100_000, 3_000_000))

    def power_w(self, t: float) -> float:
        x = t - self.epoch
        p = self.base_w + self.daily_w * math.sin(2 * math.pi * (t % DAY_S) / DAY_S - 2.0)
        for amp, period, phase in self.wiggles:
            p += amp * math.sin(2 * math.pi * x / period + phase)
        return p

    def _joules(self, t: float) -> float:
        x = t - self.epoch
        e = self.base_w * x
        w = 2 * math.pi / DAY_S
        # ∫ sin(w t - 2) dt over [epoch, t]
        e += self.daily_w * (math.cos(w * self.epoch - 2.0) - math.cos(w * t - 2.0)) / w
        for amp, period, phase in self.wiggles:
            k = 2 * math.pi / period
            e += amp * (math.cos(phase) - math.cos(k * x + phase)) / k
        return e

    def register_wh(self, t: float) -> int:
        """The meter's cumulative import register at ``t``, whole Wh (as the meter would show)."""
        if t <= self.epoch:
            return self.start_wh
        return self.start_wh + math.floor(self._joules(t) / 3600.0)
