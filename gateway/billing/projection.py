"""Period-to-date figures, projected bills and budget alerts, from daily usage totals.

Pure: the caller passes daily totals, the period, the tariff and "as of"; nothing here reads a clock.

Inputs. ``daily`` maps local dates (site zone) to ``DailyUsage``: Wh, how many intervals were present
(so coverage is known) and, for TOU tariffs, Wh per window. ``aggregate_daily`` builds it from
interval values. Days absent from the mapping are days without data, not days without usage.

Days. "Today" is the local date of ``as_of``; days before it are *complete*. ``as_of`` after the
period end is clamped to it (every day complete); ``as_of`` before the period start is an error.

Estimator (both methods). A per-interval rate — weighted mean Wh per interval *present* — from a set
of complete days::

    rate = Σ w_d · wh_d / Σ w_d · n_d

Working per interval rather than per day does two jobs: a day with gaps is not mistaken for a day of
low use, and a 23- or 25-hour DST day is projected in proportion to its length. The projected period
usage then fills every interval the period is still missing (gaps in past days, the rest of today,
all future days) at that rate::

    projected_wh = usage_to_date_wh + rate · Σ_{d in period} (expected_d − n_d)

With no gaps this is exactly "actual so far + mean of complete days × remaining days".

* DAILY_AVERAGE: w = 1 over the complete days of this period only (the seed's definition).
* WEIGHTED_AVERAGE: w = 0.5 ** (age / 7) with age in days since yesterday (half-life 7 days), over
  the last 28 complete days, *including days before the period start* when the caller supplies them.
  Why: one week's half-life follows a change in weather or occupancy within days while still
  averaging a weekday/weekend mix; four whole weeks keep the weekly cycle balanced; reaching back
  before the period start gives a usable estimate on day 2 instead of extrapolating one day.
* If no complete day has data yet (day 1), today's partial intervals are used, then zero.

TOU tariffs are projected by splitting the estimated remaining energy between windows in the
(identically weighted) proportions seen in the estimator days; the weekday/weekend mix of the
remaining days is not modelled separately.

Arithmetic. Estimates use binary floating point and are rounded half-up to whole Wh (per TOU window,
total = sum of windows) before pricing; pricing is then exact (``gateway.billing.money``).

Confidence = elapsed_fraction × coverage, in [0, 1], where
elapsed_fraction = (as_of − period start) / (period end − period start) in real time, and
coverage = intervals present / intervals expected from the period start up to ``as_of`` (whole
intervals only; 1.0 when none is expected yet). Why a product: the estimate can only be as good as
the share of the period it has seen, and a day of missing data is no evidence at all. At day 15 of
30 with full data it is 0.50, as in the seed's portal example.

Export (feed-in). A meter with an export channel passes ``export_daily`` (the same ``DailyUsage`` per
local day, from its export intervals, built with the same ``aggregate_daily``). Exported energy is
projected *exactly like imported energy, separately*: the same estimator, method, weights and basis
days applied to the export days alone, filling the export intervals the period is still missing, so a
sunny first week projects a sunny month and night-only data projects nothing. The projected bill is
``compute_bill(tariff, projected import, period, export=projected export)``: charges, the feed-in
credit and the net amount. Confidence stays as above (import elapsed × coverage): the feed-in line is
an estimate of the same kind, and one figure keeps budget alerts as they were. Without
``export_daily`` nothing changes, key for key.

Charges to date are the bill the utility would issue if the meter were read at ``as_of`` (a
move-out bill): consumption days ``[period start, today)``, all usage so far, the tariff's normal
proration for that stub period. ``None`` until one day is complete (a zero-day period cannot exist).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from types import MappingProxyType

from gateway.billing.errors import BillingError
from gateway.billing.money import format_minor
from gateway.billing.period import (
    INTERVAL,
    BillingPeriod,
    expected_intervals,
    local_midnight_utc,
    zone_for,
)
from gateway.billing.tariff import Bill, Tariff, TouEnergy, compute_bill

HALF_LIFE_DAYS = 7.0
"""WEIGHTED_AVERAGE half-life: a week, so recent change shows fast but one odd day does not dominate."""

LOOKBACK_DAYS = 28
"""WEIGHTED_AVERAGE window: four whole weeks, so every weekday is represented equally often."""


class ProjectionMethod(StrEnum):
    DAILY_AVERAGE = "DAILY_AVERAGE"
    WEIGHTED_AVERAGE = "WEIGHTED_AVERAGE"


@dataclass(frozen=True, slots=True)
class DailyUsage:
    """One local day's usage: Wh, intervals present, and Wh per TOU window when the tariff has them."""

    wh: int
    intervals: int
    tou_wh: Mapping[str, int] | None = None

    def __post_init__(self) -> None:
        for name, value in (("wh", self.wh), ("intervals", self.intervals)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise BillingError(f"daily usage {name} must be a non-negative integer, got {value!r}")
        if self.wh > 0 and self.intervals == 0:
            raise BillingError(
                "daily usage has energy but no intervals present; give the number of intervals the "
                "total covers so coverage and averages are right"
            )
        if self.tou_wh is not None:
            frozen = MappingProxyType(dict(self.tou_wh))
            if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in frozen.values()):
                raise BillingError(f"daily TOU usage must be non-negative integer Wh, got {dict(frozen)}")
            if sum(frozen.values()) != self.wh:
                raise BillingError(
                    f"daily TOU usage {dict(frozen)} sums to {sum(frozen.values())} Wh, not the day's {self.wh} Wh"
                )
            object.__setattr__(self, "tou_wh", frozen)


def aggregate_daily(
    intervals: Iterable[tuple[datetime, int]],
    tz: str,
    tariff: Tariff | None = None,
    *,
    interval: timedelta = INTERVAL,
) -> dict[date, DailyUsage]:
    """Fold interval values into ``DailyUsage`` per local date, attributing TOU windows if the tariff has them.

    Attribution uses each interval's start instant in the site zone, the same rule as
    ``compute_bill``, so a projection and the final bill put every Wh in the same window.
    """
    zone = zone_for(tz)
    energy = tariff.energy if tariff is not None and isinstance(tariff.energy, TouEnergy) else None
    seen: set[datetime] = set()
    wh_by_day: dict[date, int] = {}
    count_by_day: dict[date, int] = {}
    tou_by_day: dict[date, dict[str, int]] = {}
    for start, wh in intervals:
        if not isinstance(start, datetime) or start.utcoffset() is None:
            raise BillingError(f"interval start {start!r} must be a timezone-aware datetime (UTC)")
        if isinstance(wh, bool) or not isinstance(wh, int) or wh < 0:
            raise BillingError(f"interval {start.isoformat()} must have non-negative integer Wh, got {wh!r}")
        key = start.astimezone(UTC)
        if key in seen:
            raise BillingError(f"interval starting {start.isoformat()} appears more than once")
        seen.add(key)
        local = start.astimezone(zone)
        day = local.date()
        wh_by_day[day] = wh_by_day.get(day, 0) + wh
        count_by_day[day] = count_by_day.get(day, 0) + 1
        if energy is not None:
            windows = tou_by_day.setdefault(day, dict.fromkeys(energy.labels(), 0))
            label = energy.label_at(local)
            windows[label] += wh
    for day, count in count_by_day.items():
        if count > expected_intervals(day, zone, interval):
            raise BillingError(
                f"{count} intervals on {day} but a {interval} grid holds only "
                f"{expected_intervals(day, zone, interval)} that day in {tz}: intervals are not on the grid"
            )
    return {
        day: DailyUsage(wh_by_day[day], count_by_day[day], tou_by_day.get(day) if energy else None)
        for day in sorted(wh_by_day)
    }


@dataclass(frozen=True, slots=True)
class PeriodToDate:
    """What is known at ``as_of``: usage so far, data coverage, and the bill if read now."""

    period: BillingPeriod
    as_of: datetime
    today: date
    days_complete: int
    usage_wh: int
    tou_wh: Mapping[str, int] | None
    intervals_present: int
    intervals_expected: int
    elapsed_fraction: float
    coverage: float
    charges: Bill | None
    export_wh: int | None = None
    """Exported Wh so far, or ``None`` without export data (then every dict below is as before)."""
    export_tou_wh: Mapping[str, int] | None = None

    @property
    def days_remaining(self) -> int:
        return self.period.days - self.days_complete

    def to_dict(self) -> dict[str, object]:
        return {
            "as_of": self.as_of.isoformat(),
            "days_complete": self.days_complete,
            "days_remaining": self.days_remaining,
            "usage_wh": self.usage_wh,
            "tou_wh": None if self.tou_wh is None else dict(self.tou_wh),
            "intervals_present": self.intervals_present,
            "intervals_expected": self.intervals_expected,
            "elapsed_fraction": self.elapsed_fraction,
            "coverage": self.coverage,
            "charges": None if self.charges is None else self.charges.to_dict(),
            **({} if self.export_wh is None else {
                "export_wh": self.export_wh,
                "export_tou_wh": None if self.export_tou_wh is None else dict(self.export_tou_wh)}),
        }


@dataclass(frozen=True, slots=True)
class Projection:
    """A projected full-period bill with the evidence behind it."""

    method: ProjectionMethod
    to_date: PeriodToDate
    basis_days: int
    daily_average_wh: int
    projected_usage_wh: int
    projected_tou_wh: Mapping[str, int] | None
    projected_bill: Bill
    confidence: float
    projected_export_wh: int | None = None
    """Projected exported Wh for the whole period, or ``None`` without export data."""
    projected_export_tou_wh: Mapping[str, int] | None = None

    @property
    def period(self) -> BillingPeriod:
        return self.to_date.period

    def to_dict(self) -> dict[str, object]:
        return {
            "method": self.method.value,
            "period": self.period.to_dict(),
            "period_to_date": self.to_date.to_dict(),
            "basis_days": self.basis_days,
            "daily_average_wh": self.daily_average_wh,
            "projected_usage_wh": self.projected_usage_wh,
            "projected_tou_wh": None if self.projected_tou_wh is None else dict(self.projected_tou_wh),
            "projected_bill": self.projected_bill.to_dict(),
            "confidence": self.confidence,
            **({} if self.projected_export_wh is None else {
                "projected_export_wh": self.projected_export_wh,
                "projected_export_tou_wh": None if self.projected_export_tou_wh is None
                else dict(self.projected_export_tou_wh)}),
        }


@dataclass(frozen=True, slots=True)
class _Clock:
    """as_of resolved against the period: the effective instant, today's date, intervals so far today."""

    as_of: datetime
    effective: datetime
    today: date
    so_far_today: int


def _resolve(daily: Mapping[date, DailyUsage], period: BillingPeriod, as_of: datetime, interval: timedelta) -> _Clock:
    if not isinstance(as_of, datetime) or as_of.utcoffset() is None:
        raise BillingError(f"as_of {as_of!r} must be a timezone-aware datetime")
    if interval <= timedelta(0) or timedelta(days=1) % interval:
        raise BillingError(f"interval {interval} must divide a day evenly")
    zone = period.zone
    as_of_utc = as_of.astimezone(UTC)
    if as_of_utc < period.start_utc:
        raise BillingError(f"as_of {as_of.isoformat()} is before the period starting {period.start} in {period.tz}")
    real_today = as_of_utc.astimezone(zone).date()
    for day, usage in daily.items():
        if not isinstance(usage, DailyUsage):
            raise BillingError(f"daily usage for {day} must be a DailyUsage, got {type(usage).__name__}")
        if day > real_today:
            raise BillingError(f"daily usage for {day} is after as_of {as_of.isoformat()}: data from the future")
        if usage.intervals > expected_intervals(day, zone, interval):
            raise BillingError(
                f"daily usage for {day} claims {usage.intervals} intervals; that day holds "
                f"{expected_intervals(day, zone, interval)} in {period.tz}"
            )
    if as_of_utc >= period.end_utc:
        return _Clock(as_of_utc, period.end_utc, period.end, 0)
    today = as_of_utc.astimezone(zone).date()
    return _Clock(as_of_utc, as_of_utc, today, (as_of_utc - local_midnight_utc(today, zone)) // interval)


def _require_tou(usage: DailyUsage, day: date) -> Mapping[str, int]:
    if usage.tou_wh is None:
        if usage.wh == 0:
            return {}
        raise BillingError(
            f"the tariff is time-of-use but daily usage for {day} has no per-window Wh; "
            "build it with aggregate_daily(intervals, tz, tariff)"
        )
    return usage.tou_wh


@dataclass(frozen=True, slots=True)
class _ToDate:
    """One channel's period-to-date sums."""

    wh: int
    tou_wh: dict[str, int] | None
    present: int
    expected: int


def _to_date(tariff: Tariff, daily: Mapping[date, DailyUsage], period: BillingPeriod, clock: _Clock,
             interval: timedelta) -> _ToDate:
    zone = period.zone
    usage_wh = present = expected = 0
    tou_wh: dict[str, int] | None = None
    if isinstance(tariff.energy, TouEnergy):
        tou_wh = dict.fromkeys(tariff.energy.labels(), 0)
    for day in period.dates():
        if day > clock.today:
            break
        usage = daily.get(day, DailyUsage(0, 0))
        usage_wh += usage.wh
        if day == clock.today:
            present += min(usage.intervals, clock.so_far_today)
            expected += clock.so_far_today
        else:
            present += usage.intervals
            expected += expected_intervals(day, zone, interval)
        if tou_wh is not None:
            for label, wh in _require_tou(usage, day).items():
                tou_wh[label] += wh
    return _ToDate(usage_wh, tou_wh, present, expected)


def _billable(part: _ToDate) -> int | dict[str, int]:
    return part.wh if part.tou_wh is None else part.tou_wh


def period_to_date(
    tariff: Tariff,
    daily: Mapping[date, DailyUsage],
    period: BillingPeriod,
    as_of: datetime,
    *,
    interval: timedelta = INTERVAL,
    export_daily: Mapping[date, DailyUsage] | None = None,
) -> PeriodToDate:
    """Usage, coverage and charges so far in ``period`` as of ``as_of`` (rules in the module docstring)."""
    clock = _resolve(daily, period, as_of, interval)
    imported = _to_date(tariff, daily, period, clock, interval)
    exported = None
    if export_daily is not None:
        _resolve(export_daily, period, as_of, interval)
        exported = _to_date(tariff, export_daily, period, clock, interval)
    days_complete = (min(clock.today, period.end) - period.start).days
    charges = None
    if days_complete >= 1:
        stub = BillingPeriod(period.start, period.start + timedelta(days=days_complete), period.tz)
        charges = compute_bill(tariff, _billable(imported), stub,
                               export=None if exported is None else _billable(exported))
    span = period.end_utc - period.start_utc
    return PeriodToDate(
        period=period,
        as_of=clock.as_of,
        today=clock.today,
        days_complete=days_complete,
        usage_wh=imported.wh,
        tou_wh=None if imported.tou_wh is None else MappingProxyType(imported.tou_wh),
        intervals_present=imported.present,
        intervals_expected=imported.expected,
        elapsed_fraction=min(1.0, max(0.0, (clock.effective - period.start_utc) / span)),
        coverage=imported.present / imported.expected if imported.expected else 1.0,
        charges=charges,
        export_wh=None if exported is None else exported.wh,
        export_tou_wh=None if exported is None or exported.tou_wh is None else MappingProxyType(exported.tou_wh),
    )


def _half_up(value: float) -> int:
    return math.floor(value + 0.5)


@dataclass(frozen=True, slots=True)
class _Estimate:
    """One channel's projection: the rate per interval, the basis, and the projected period totals."""

    rate: float
    basis_days: int
    wh: int
    tou_wh: dict[str, int] | None


def _estimate(tariff: Tariff, daily: Mapping[date, DailyUsage], period: BillingPeriod, today: date,
              to_date_wh: int, to_date_tou: Mapping[str, int] | None, weighted: bool, half_life_days: float,
              lookback_days: int, interval: timedelta) -> _Estimate:
    """The estimator of the module docstring applied to one channel's days."""
    zone = period.zone
    energy = tariff.energy
    first = today - timedelta(days=lookback_days) if weighted else period.start
    last_complete = today - timedelta(days=1)
    sum_wh = sum_n = 0.0
    sum_tou: dict[str, float] = {}
    basis_days = 0
    day = first
    while day <= last_complete:
        usage = daily.get(day)
        if usage is not None and usage.intervals > 0:
            age = (last_complete - day).days
            weight = 0.5 ** (age / half_life_days) if weighted else 1.0
            sum_wh += weight * usage.wh
            sum_n += weight * usage.intervals
            if isinstance(energy, TouEnergy):
                for label, wh in _require_tou(usage, day).items():
                    sum_tou[label] = sum_tou.get(label, 0.0) + weight * wh
            basis_days += 1
        day += timedelta(days=1)
    if sum_n == 0 and today < period.end:
        partial = daily.get(today)
        if partial is not None and partial.intervals > 0:
            sum_wh, sum_n = float(partial.wh), float(partial.intervals)
            if isinstance(energy, TouEnergy):
                sum_tou = {k: float(v) for k, v in _require_tou(partial, today).items()}
    rate = sum_wh / sum_n if sum_n else 0.0

    missing = 0
    for day in period.dates():
        usage = daily.get(day) if day <= today else None
        missing += expected_intervals(day, zone, interval) - (usage.intervals if usage else 0)
    extra = rate * missing

    if isinstance(energy, TouEnergy):
        assert to_date_tou is not None
        projected_tou = {
            label: to_date_tou[label] + _half_up(extra * sum_tou.get(label, 0.0) / sum_wh if sum_wh else 0.0)
            for label in energy.labels()
        }
        return _Estimate(rate, basis_days, sum(projected_tou.values()), projected_tou)
    return _Estimate(rate, basis_days, to_date_wh + _half_up(extra), None)


def project(
    tariff: Tariff,
    daily: Mapping[date, DailyUsage],
    period: BillingPeriod,
    as_of: datetime,
    method: ProjectionMethod = ProjectionMethod.DAILY_AVERAGE,
    *,
    half_life_days: float = HALF_LIFE_DAYS,
    lookback_days: int = LOOKBACK_DAYS,
    interval: timedelta = INTERVAL,
    export_daily: Mapping[date, DailyUsage] | None = None,
) -> Projection:
    """Project the full-period usage, feed-in and bill (estimator and confidence in the module docstring)."""
    if not half_life_days > 0:
        raise BillingError(f"half_life_days must be positive, got {half_life_days}")
    if lookback_days < 1:
        raise BillingError(f"lookback_days must be at least 1, got {lookback_days}")
    ptd = period_to_date(tariff, daily, period, as_of, interval=interval, export_daily=export_daily)
    weighted = method is ProjectionMethod.WEIGHTED_AVERAGE

    def estimate(days: Mapping[date, DailyUsage], wh: int, tou: Mapping[str, int] | None) -> _Estimate:
        return _estimate(tariff, days, period, ptd.today, wh, tou, weighted, half_life_days, lookback_days, interval)

    imported = estimate(daily, ptd.usage_wh, ptd.tou_wh)
    exported = None
    if export_daily is not None:
        assert ptd.export_wh is not None
        exported = estimate(export_daily, ptd.export_wh, ptd.export_tou_wh)
    bill = compute_bill(
        tariff,
        imported.wh if imported.tou_wh is None else imported.tou_wh,
        period,
        export=None if exported is None else (exported.wh if exported.tou_wh is None else exported.tou_wh),
    )
    return Projection(
        method=method,
        to_date=ptd,
        basis_days=imported.basis_days,
        daily_average_wh=_half_up(imported.rate * (timedelta(days=1) / interval)),
        projected_usage_wh=imported.wh,
        projected_tou_wh=None if imported.tou_wh is None else MappingProxyType(imported.tou_wh),
        projected_bill=bill,
        confidence=min(1.0, max(0.0, ptd.elapsed_fraction * ptd.coverage)),
        projected_export_wh=None if exported is None else exported.wh,
        projected_export_tou_wh=None if exported is None or exported.tou_wh is None
        else MappingProxyType(exported.tou_wh),
    )


@dataclass(frozen=True, slots=True)
class BudgetAlert:
    """A projected bill above a meter's budget; the caller decides how to log or publish it."""

    meter_id: str
    period: BillingPeriod
    as_of: datetime
    method: ProjectionMethod
    currency: str
    minor_units: int
    budget_minor: int
    projected_total_minor: int
    confidence: float

    @property
    def over_by_minor(self) -> int:
        return self.projected_total_minor - self.budget_minor

    @property
    def message(self) -> str:
        def money(amount: int) -> str:
            return f"{self.currency} {format_minor(amount, self.minor_units)}"

        return (
            f"meter {self.meter_id}: projected bill {money(self.projected_total_minor)} for "
            f"{self.period.start}..{self.period.end} exceeds the budget {money(self.budget_minor)} by "
            f"{money(self.over_by_minor)} (confidence {self.confidence:.0%}, {self.method.value})"
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "meter_id": self.meter_id,
            "period": self.period.to_dict(),
            "as_of": self.as_of.isoformat(),
            "method": self.method.value,
            "currency": self.currency,
            "budget_minor": self.budget_minor,
            "projected_total_minor": self.projected_total_minor,
            "over_by_minor": self.over_by_minor,
            "confidence": self.confidence,
            "message": self.message,
        }


def check_budget(
    projection: Projection, budget_minor: int, *, meter_id: str, min_confidence: float = 0.0
) -> BudgetAlert | None:
    """An alert when the projected bill is strictly above ``budget_minor``, else ``None``.

    ``min_confidence`` lets a caller stay quiet on day 1, when one morning's usage would otherwise
    trigger alerts that the next day withdraws.
    """
    if isinstance(budget_minor, bool) or not isinstance(budget_minor, int) or budget_minor < 0:
        raise BillingError(f"budget must be a non-negative integer of minor units, got {budget_minor!r}")
    if not 0.0 <= min_confidence <= 1.0:
        raise BillingError(f"min_confidence must be within [0, 1], got {min_confidence}")
    bill = projection.projected_bill
    if bill.total_minor <= budget_minor or projection.confidence < min_confidence:
        return None
    return BudgetAlert(
        meter_id=meter_id,
        period=projection.period,
        as_of=projection.to_date.as_of,
        method=projection.method,
        currency=bill.currency,
        minor_units=bill.minor_units,
        budget_minor=budget_minor,
        projected_total_minor=bill.total_minor,
        confidence=projection.confidence,
    )
