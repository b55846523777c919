"""How far off is a mid-period bill projection? Replay simulated meters and compare with the final bill.

Run from the repo root: ``python benchmarks/projection_accuracy.py`` (``--help`` for options).

Why a simulation: real 15-minute data cannot be shipped with the repo, and a seeded simulation with
the features that make projection hard — a daily load shape, a weekly cycle (offices idle at the
weekend), a seasonal drift across months, day-to-day weather persistence, interval noise, EV
charging bursts and missing intervals — makes the comparison between methods repeatable.

For every meter and every whole monthly period in the simulated range, the projection is taken as of
local midnight after day 5, 10, 15, 20 and 25 (that many complete days), using only the data the
gateway would hold then (with its gaps), and compared with the final bill computed from the complete
data (the register recovers the energy of missed intervals). The table shows the mean absolute
percentage error per method, for the seed's tiered tariff and for a TOU tariff.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # works without the editable install too

from gateway.billing import (
    BillingPeriod,
    DailyUsage,
    ProjectionMethod,
    Tariff,
    aggregate_daily,
    billing_period_for,
    compute_bill,
    expected_intervals,
    local_midnight_utc,
    project,
)
from gateway.billing.samples import SEED_TARIFF, TOU_TARIFF

STEP = timedelta(minutes=15)
CHECKPOINTS = (5, 10, 15, 20, 25)
TARIFFS: dict[str, Tariff] = {"tiered": SEED_TARIFF, "tou": TOU_TARIFF}


def _bump(hour: float, centre: float, width: float) -> float:
    return math.exp(-(((hour - centre) / width) ** 2))


def residential_shape(hour: float, weekend: bool) -> float:
    """Morning and evening peaks; later, flatter mornings at the weekend."""
    morning = _bump(hour, 9.0 if weekend else 7.0, 1.5)
    evening = _bump(hour, 19.0, 2.5)
    return 0.35 + 0.8 * morning + 1.4 * evening + (0.3 * _bump(hour, 13.0, 3.0) if weekend else 0.0)


def office_shape(hour: float, weekend: bool) -> float:
    """Business hours on weekdays, standby otherwise."""
    if weekend:
        return 0.15
    return 0.15 + 1.0 / (1 + math.exp(-(hour - 7.5) * 3)) - 1.0 / (1 + math.exp(-(hour - 18.0) * 3))


def shop_shape(hour: float, weekend: bool) -> float:
    """Open 9-20 every day, busier at the weekend; refrigeration all night."""
    open_hours = 1.0 / (1 + math.exp(-(hour - 9) * 4)) - 1.0 / (1 + math.exp(-(hour - 20) * 4))
    return 0.4 + open_hours * (1.3 if weekend else 1.0)


def pump_shape(hour: float, weekend: bool) -> float:
    return 1.0


@dataclass(frozen=True)
class Meter:
    name: str
    tz: str
    mean_kw: float
    shape: Callable[[float, bool], float]
    seasonal: float  # relative swing; > 0 = high in January, < 0 = rising towards June
    noise: float  # interval-level relative noise
    weather: float  # day-level AR(1) innovation
    ev_kw: float = 0.0  # charging power of an EV, 0 = none
    gap_rate: float = 0.01  # share of intervals the gateway never received


METERS = (
    Meter("house-heatpump", "America/Detroit", 1.2, residential_shape, 0.45, 0.30, 0.08),
    Meter("house-ev", "America/Detroit", 0.8, residential_shape, 0.15, 0.35, 0.06, ev_kw=7.2),
    Meter("house-sydney", "Australia/Sydney", 0.9, residential_shape, -0.30, 0.30, 0.07),
    Meter("office-berlin", "Europe/Berlin", 6.0, office_shape, 0.20, 0.10, 0.05, gap_rate=0.03),
    Meter("shop-berlin", "Europe/Berlin", 3.0, shop_shape, 0.10, 0.15, 0.05),
    Meter("pump-utc", "UTC", 2.0, pump_shape, 0.05, 0.05, 0.03, gap_rate=0.05),
)


def simulate(
    meter: Meter, start: date, days: int, rng: random.Random
) -> tuple[list[tuple[datetime, int]], list[tuple[datetime, int]]]:
    """(all intervals, intervals the gateway received) for ``days`` local days from ``start``."""
    zone = ZoneInfo(meter.tz)
    truth: list[tuple[datetime, int]] = []
    received: list[tuple[datetime, int]] = []
    weather = 0.0
    for offset in range(days):
        day = start + timedelta(days=offset)
        weather = 0.8 * weather + rng.gauss(0.0, meter.weather)
        season = 1.0 + meter.seasonal * math.cos(2 * math.pi * (day.timetuple().tm_yday - 15) / 365)
        weekend = day.weekday() >= 5
        outage = rng.random() < 0.01  # a whole day lost now and then (modem reboot loop, SD swap)
        ev_start = 22 + rng.random() * 2 if meter.ev_kw and rng.random() < 0.45 else None
        ev_hours = 1.5 + rng.random() * 3
        first = local_midnight_utc(day, zone)
        for index in range(expected_intervals(day, zone)):
            instant = first + index * STEP
            local = instant.astimezone(zone)
            hour = local.hour + local.minute / 60
            kw = meter.mean_kw * meter.shape(hour, weekend) * season * math.exp(weather)
            kw *= max(0.0, 1.0 + rng.gauss(0.0, meter.noise))
            if ev_start is not None and ev_start <= hour + (24 if hour < 4 else 0) < ev_start + ev_hours:
                kw += meter.ev_kw
            wh = round(kw * 250)  # kW × 0.25 h × 1000
            truth.append((instant, wh))
            if not outage and rng.random() >= meter.gap_rate:
                received.append((instant, wh))
    return truth, received


def whole_periods(start: date, days: int, tz: str) -> list[BillingPeriod]:
    periods = []
    day = start
    end = start + timedelta(days=days)
    while day < end:
        period = billing_period_for(day, tz=tz)
        if period.start >= start and period.end <= end:
            periods.append(period)
        day = period.end
    return periods


def final_bill_total(tariff: Tariff, truth: dict[date, DailyUsage], period: BillingPeriod) -> int:
    days = [truth[d] for d in period.dates()]
    if tariff.energy.kind == "tou":
        windows: dict[str, int] = {}
        for usage in days:
            assert usage.tou_wh is not None
            for label, wh in usage.tou_wh.items():
                windows[label] = windows.get(label, 0) + wh
        return compute_bill(tariff, windows, period).total_minor
    return compute_bill(tariff, sum(u.wh for u in days), period).total_minor


def run(seed: int, start: date, days: int, per_meter: bool) -> None:
    began = time.perf_counter()
    errors: dict[tuple[str, ProjectionMethod, int], list[float]] = {}
    confidence: dict[int, list[float]] = {}
    meter_errors: dict[tuple[str, ProjectionMethod], list[float]] = {}
    intervals = 0
    bills = 0
    for number, meter in enumerate(METERS):
        rng = random.Random(seed * 1000 + number)
        truth_intervals, received = simulate(meter, start, days, rng)
        intervals += len(truth_intervals)
        truth = aggregate_daily(truth_intervals, meter.tz, TOU_TARIFF)
        observed = aggregate_daily(received, meter.tz, TOU_TARIFF)
        for period in whole_periods(start, days, meter.tz):
            for tariff_name, tariff in TARIFFS.items():
                final = final_bill_total(tariff, truth, period)
                bills += 1
                for checkpoint in CHECKPOINTS:
                    today = period.start + timedelta(days=checkpoint)
                    as_of = local_midnight_utc(today, period.zone)
                    visible = {d: u for d, u in observed.items() if d < today}
                    for method in ProjectionMethod:
                        projection = project(tariff, visible, period, as_of, method)
                        ape = abs(projection.projected_bill.total_minor - final) / final * 100
                        errors.setdefault((tariff_name, method, checkpoint), []).append(ape)
                        meter_errors.setdefault((meter.name, method), []).append(ape)
                        confidence.setdefault(checkpoint, []).append(projection.confidence)
    elapsed = time.perf_counter() - began

    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    n_periods = len(errors[("tiered", ProjectionMethod.DAILY_AVERAGE, CHECKPOINTS[0])])
    print(
        f"Projection accuracy: mean absolute % error of the projected bill vs the final bill\n"
        f"{len(METERS)} meters, {days} days from {start} ({intervals} intervals, seed {seed}), "
        f"{n_periods} meter-periods per cell, {bills} final bills\n"
    )
    header = f"{'tariff':<8}{'method':<18}" + "".join(f"{'day ' + str(c):>9}" for c in CHECKPOINTS)
    print(header)
    print("-" * len(header))
    for tariff_name in TARIFFS:
        for method in ProjectionMethod:
            cells = "".join(f"{mean(errors[(tariff_name, method, c)]):>8.2f}%" for c in CHECKPOINTS)
            print(f"{tariff_name:<8}{method.value:<18}{cells}")
    print("-" * len(header))
    print(f"{'':<8}{'mean confidence':<18}" + "".join(f"{mean(confidence[c]):>9.2f}" for c in CHECKPOINTS))
    if per_meter:
        print(f"\n{'meter':<18}{'method':<18}{'MAPE (all days)':>16}")
        for (name, method), values in meter_errors.items():
            print(f"{name:<18}{method.value:<18}{mean(values):>15.2f}%")
    print(f"\n{elapsed:.1f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    parser.add_argument("--start", type=date.fromisoformat, default=date(2025, 1, 1), help="first day")
    parser.add_argument("--days", type=int, default=181, help="days to simulate (>= 90; default 181)")
    parser.add_argument("--per-meter", action="store_true", help="also print MAPE per meter")
    args = parser.parse_args(argv)
    if args.days < 90:
        parser.error("--days must be at least 90")
    run(args.seed, args.start, args.days, args.per_meter)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
