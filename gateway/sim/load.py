"""A deterministic household/commercial load model with exact energy registers, optionally a solar house.

Power is a smooth daily shape plus a few sinusoids of incommensurate periods
standing in for noise. Everything is integrable in closed form, so the
register at any instant is known exactly without stepping through time:
that is what lets the demo check the gateway's credits against the meter's
true register delta to the watt-hour.

A *solar house* (``pv_kwp > 0``) also has panels: their output follows the sun by clock time of day
(zero at night, a half-cosine over the daylight hours around ``pv_noon_s``), and where it exceeds the
consumption the house feeds in. Its meter has two registers: import counts the energy drawn from the
grid (load above PV), export the energy fed in (PV above load), each the integral of its side of the
net power ``load − PV``. Where that crosses zero has no closed form, so the house's net power is the
straight line between its values on a fixed grid of :data:`NET_GRID_S` seconds of clock time (epoch
aligned, whatever the start): each register is then an exact integral of it (cumulative values are
kept once an hour, so a register costs at most an hour of grid steps and memory stays small), and
``import − export`` is exactly ∫ net. It depends on the clock time only, never on who asks or when.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, field

DAY_S = 86_400.0
NET_GRID_S = 10.0
"""The solar house's net power is linear between grid points this far apart (clock time)."""
CHECKPOINT_STEPS = 360
"""Grid steps between kept cumulative values (an hour)."""
PV_DAYLIGHT_S = 12 * 3600.0
"""Hours of PV output per day, centred on ``pv_noon_s``."""
PV_PEAK_PER_KWP_W = 800.0
"""Output at noon per kWp installed: panels rarely give their nameplate (heat, angle, inverter losses)."""
DEFAULT_PV_NOON_S = 12 * 3600.0
"""Solar noon as seconds of the UTC day (a site east of Greenwich has it earlier)."""


@dataclass(frozen=True)
class LoadModel:
    base_w: float
    daily_w: float
    """Amplitude of the daily swing (peak in the evening)."""
    wiggles: tuple[tuple[float, float, float], ...]
    """(amplitude W, period s, phase rad) terms; their sum stays below base_w."""
    epoch: float
    """The registers start at ``start_wh`` / ``start_export_wh`` at this instant."""
    start_wh: int
    pv_kwp: float = 0.0
    """Solar panels installed, kWp; 0: a house without PV, whose import register is the closed form."""
    pv_noon_s: float = DEFAULT_PV_NOON_S
    """Seconds of the UTC day when the PV output peaks."""
    start_export_wh: int = 0
    _checkpoints: list[tuple[float, float]] = field(default_factory=list, init=False, repr=False, compare=False)
    """Solar house: (import J, export J) from the epoch to grid point ``first + k·CHECKPOINT_STEPS``."""

    def __post_init__(self) -> None:
        if self.pv_kwp < 0 or not math.isfinite(self.pv_kwp):
            raise ValueError(f"pv_kwp must be 0 or more, got {self.pv_kwp}")

    @classmethod
    def for_meter(cls, meter_id: str, epoch: float, *, pv_kwp: float = 0.0,
                  pv_noon_s: float = DEFAULT_PV_NOON_S) -> LoadModel:
        """A meter's model, the same for the same id. With ``pv_kwp`` a solar house: a household's load
        (a few hundred W to 1.8 kW) under panels that out-produce it around noon (e.g. 5 kWp: 4 kW peak),
        so it imports at night and exports by day."""
        seed = int.from_bytes(hashlib.sha256(meter_id.encode()).digest()[:8], "big")
        rng = random.Random(seed)
        base = rng.uniform(250, 700) if pv_kwp > 0 else rng.uniform(800, 4000)
        wiggles = tuple(
            (base * rng.uniform(0.05, 0.15), period, rng.uniform(0, 2 * math.pi))
            for period in (397.0, 1_831.0, 7_919.0)
        )
        daily = base * rng.uniform(0.3, 0.5)
        start = rng.randrange(100_000, 3_000_000)
        start_export = rng.randrange(10_000, 2_000_000) if pv_kwp > 0 else 0
        return cls(base_w=base, daily_w=daily, wiggles=wiggles, epoch=epoch, start_wh=start, pv_kwp=pv_kwp,
                   pv_noon_s=pv_noon_s, start_export_wh=start_export)

    @property
    def solar(self) -> bool:
        return self.pv_kwp > 0

    def power_w(self, t: float) -> float:
        """The house's consumption (load) at ``t``, W."""
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

    def pv_w(self, t: float) -> float:
        """The panels' output at ``t``, W: by clock time of day only."""
        if not self.solar:
            return 0.0
        x = (t - self.pv_noon_s + DAY_S / 2) % DAY_S - DAY_S / 2  # seconds from solar noon, in [-12 h, 12 h)
        if abs(x) >= PV_DAYLIGHT_S / 2:
            return 0.0
        return self.pv_kwp * PV_PEAK_PER_KWP_W * math.cos(math.pi * x / PV_DAYLIGHT_S)

    def pv_joules(self, t0: float, t1: float) -> float:
        """∫ PV over [t0, t1], J, in closed form (tests compare the registers' balance against it)."""
        if not self.solar or t1 <= t0:
            return 0.0
        peak, half, w = self.pv_kwp * PV_PEAK_PER_KWP_W, PV_DAYLIGHT_S / 2, math.pi / PV_DAYLIGHT_S

        def upto(t: float) -> float:  # ∫ from the first sunrise at or before the epoch's day to t
            days = math.floor((t - self.pv_noon_s + DAY_S / 2) / DAY_S)
            x = t - self.pv_noon_s - days * DAY_S  # seconds from that day's noon, in [-12 h, 12 h)
            inside = min(max(x, -half), half)
            return days * 2 * peak / w + peak * (math.sin(w * inside) + 1) / w

        return upto(t1) - upto(t0)

    def load_joules(self, t0: float, t1: float) -> float:
        """∫ load over [t0, t1], J, in closed form."""
        return self._joules(t1) - self._joules(t0)

    def _true_net_w(self, t: float) -> float:
        return self.power_w(t) - self.pv_w(t)

    def net_w(self, t: float) -> float:
        """Power through the meter at ``t``, W: positive drawn from the grid, negative fed in. For a solar
        house the straight line between grid points (what its registers integrate), else the load."""
        if not self.solar:
            return self.power_w(t)
        g = math.floor(t / NET_GRID_S) * NET_GRID_S
        a, b = self._true_net_w(g), self._true_net_w(g + NET_GRID_S)
        return a + (b - a) * (t - g) / NET_GRID_S

    def register_wh(self, t: float) -> int:
        """The meter's cumulative import register at ``t``, whole Wh (as the meter would show)."""
        if t <= self.epoch:
            return self.start_wh
        if self.solar:
            return self.start_wh + math.floor(self._solar_joules(t)[0] / 3600.0)
        return self.start_wh + math.floor(self._joules(t) / 3600.0)

    def import_wh(self, t: float) -> int:
        """The import register (energy drawn from the grid) at ``t``: the same as :meth:`register_wh`."""
        return self.register_wh(t)

    def export_wh(self, t: float) -> int:
        """The export register (energy fed in) at ``t``, whole Wh; constant for a house without PV."""
        if t <= self.epoch or not self.solar:
            return self.start_export_wh
        return self.start_export_wh + math.floor(self._solar_joules(t)[1] / 3600.0)

    # ---- the solar house's registers ------------------------------------------------------------------

    def _first_grid(self) -> float:
        return math.ceil(self.epoch / NET_GRID_S) * NET_GRID_S

    def _solar_joules(self, t: float) -> tuple[float, float]:
        """(import J, export J) over [epoch, t]: exact integrals of the linear-between-grid-points net power."""
        first = self._first_grid()
        if t <= first:
            return _split(self.net_w(self.epoch), self.net_w(t), t - self.epoch)
        steps = int((t - first) // NET_GRID_S)
        k = steps // CHECKPOINT_STEPS
        imp, exp = self._checkpoint(k)
        g = first + k * CHECKPOINT_STEPS * NET_GRID_S
        for i in range(steps - k * CHECKPOINT_STEPS):
            a, b = _split(self._true_net_w(g + i * NET_GRID_S), self._true_net_w(g + (i + 1) * NET_GRID_S),
                          NET_GRID_S)
            imp, exp = imp + a, exp + b
        g += (steps - k * CHECKPOINT_STEPS) * NET_GRID_S
        a, b = _split(self._true_net_w(g), self.net_w(t), t - g)
        return imp + a, exp + b

    def _checkpoint(self, k: int) -> tuple[float, float]:
        points = self._checkpoints
        first = self._first_grid()
        if not points:
            points.append(_split(self.net_w(self.epoch), self._true_net_w(first), first - self.epoch))
        while len(points) <= k:
            imp, exp = points[-1]
            g = first + (len(points) - 1) * CHECKPOINT_STEPS * NET_GRID_S
            for i in range(CHECKPOINT_STEPS):
                a, b = _split(self._true_net_w(g + i * NET_GRID_S), self._true_net_w(g + (i + 1) * NET_GRID_S),
                              NET_GRID_S)
                imp, exp = imp + a, exp + b
            points.append((imp, exp))
        return points[k]


def _split(a: float, b: float, length: float) -> tuple[float, float]:
    """(∫ of the positive part, ∫ of the negative part as a positive number) of the line from ``a`` to ``b``
    over ``length`` seconds: the energy drawn and the energy fed in while the net power goes from a to b."""
    if length <= 0:
        return 0.0, 0.0
    if a >= 0 and b >= 0:
        return (a + b) / 2 * length, 0.0
    if a <= 0 and b <= 0:
        return 0.0, -(a + b) / 2 * length
    cross = length * a / (a - b)  # where the line meets zero
    if a > 0:
        return a / 2 * cross, -b / 2 * (length - cross)
    return b / 2 * (length - cross), -a / 2 * cross
