"""Tariffs and the bill they produce: pure functions on plain data, exact to the minor unit.

A tariff is a frozen :mod:`gateway.schema` record (not a pydantic model: the daemon checks its
configuration at every start, see that module) so the daemon's TOML config can embed one verbatim::

    [meters.m1.tariff]
    name = "Residential D1"
    currency = "USD"
    fixed_charges = [{ label = "Readiness to Serve", amount = "15.00" }]
    kwh_surcharges = [{ label = "PSCR Surcharge", rate = "0.00125" }]
    fixed_surcharges = [{ label = "SAF Surcharge", amount = "7.00" }]

    [meters.m1.tariff.energy]
    kind = "tiered"
    tiers = [{ up_to_kwh = "500", rate = "0.10" }, { rate = "0.12" }]

Money and rates are decimal *strings* in major units ("0.10" dollars per kWh); floats are rejected
because 0.1 has no exact binary form and a tariff must mean exactly what the regulator published.

Rules this module applies (one place, so estimates and final bills agree):

* Rounding: see ``gateway.billing.money`` — every line item exact, rounded half away from zero to the
  minor unit once; total = sum of rounded line items.
* Line item order: fixed charges, energy (tiers or TOU windows), per-kWh surcharges, fixed
  surcharges, taxes. Energy lines with no energy are left off; a bill with no energy at all keeps
  the first energy line (at zero) so it still shows its energy rate.
* Proration (FIELD_NOTES "Tariff proration"): a period that is exactly one monthly cycle
  (``BillingPeriod.is_full_cycle``: Dec 1 → Jan 1, Feb 1 → Mar 1, whatever its 28-31 days) gets
  factor 1. Any other period (move-in, move-out, a delayed read) gets factor days / 30
  (``proration_basis_days``), the utility convention: $30 × 19/30 for 19 days; a 45-day period turns a
  100-300 kWh tier into 150-450 kWh. We chose "full cycle = 1, otherwise days/30" over
  "days / length of the month" because the latter would charge a 19-day stub differently in
  February and December for the same service, and over plain "days/30 always" because that would
  charge every 31-day month 31/30 of a monthly fee — the seed's December bill is exactly $15.00 and
  500 kWh of tier 1.
* The factor scales fixed charges (unit "period") and tier thresholds (rounded half-up to whole Wh,
  so every energy quantity stays an exact integer Wh). It does *not* scale fixed surcharges, which
  are levied per bill (a fund charge is the same on a stub bill), nor percentage taxes, which apply
  to whatever the bill already holds.
* Taxes: each percentage applies to the sum of all rounded non-tax line items (not compounded on
  other taxes).
* Feed-in (``gateway.billing.feed_in``): an optional ``feed_in`` rate credits exported energy, in
  lines after the taxes that no charge or tax is computed on; ``total_minor`` is the net amount
  (charges + credits, possibly negative). Without export data (``export=None``: the meter has no
  export channel) a bill is exactly what it was before feed-in existed, line for line and key for key.
* Time of use: an interval belongs to the window containing its *start* instant converted to the
  site's local time (zoneinfo), and to the consumption day of that local date. On a DST day the
  repeated or missing local hour is therefore handled by the zone database, not by assuming 24 hours.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction
from typing import Annotated, Any, Literal, Self, TypeAlias

from gateway.billing.errors import BillingError
from gateway.billing.feed_in import FeedIn
from gateway.billing.money import decimal_to_str, format_minor, fraction_to_str, round_half_away
from gateway.billing.period import BillingPeriod
from gateway.schema import (
    BeforeValidator,
    Field,
    Model,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)


def _no_float(value: object) -> object:
    # Runs before the Decimal parsing, which would quietly accept 0.1 (a float).
    if isinstance(value, bool | float):
        raise ValueError(
            'give money and rates as decimal strings (e.g. rate = "0.10"), not numbers with a '
            "fractional part, so they keep exactly the value the tariff publishes"
        )
    return value


Dec = Annotated[Decimal, BeforeValidator(_no_float)]
NonNegDec = Annotated[Decimal, BeforeValidator(_no_float), Field(ge=0)]
Label = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=80)]

Usage: TypeAlias = "int | Mapping[str, int] | Iterable[tuple[datetime, int]]"
"""Usage for one bill: total Wh (tiered tariffs), Wh per TOU window label (already attributed,
e.g. by ``aggregate_daily``), or interval values ``(interval_start, wh)`` with aware start instants."""


class _Model(Model):
    """Frozen, unknown keys refused (every :class:`gateway.schema.Model` is)."""


class FixedCharge(_Model):
    """A charge per standard period (readiness to serve); prorated for non-cycle periods."""

    label: Label
    amount: NonNegDec


class Tier(_Model):
    """One block of a tiered energy rate; ``up_to_kwh`` is the cumulative upper bound per standard period."""

    rate: NonNegDec
    up_to_kwh: Annotated[Decimal, BeforeValidator(_no_float), Field(gt=0)] | None = None
    label: Label | None = None


class TieredEnergy(_Model):
    """Block rates: the first ``up_to_kwh`` at one rate, the next block at the next rate, and so on."""

    kind: Literal["tiered"] = "tiered"
    tiers: tuple[Tier, ...]

    @field_validator("tiers")
    @classmethod
    def _thresholds_increase(cls, tiers: tuple[Tier, ...]) -> tuple[Tier, ...]:
        # Checked here rather than with min_length, which pydantic also reports (confusingly) when
        # a tier is merely invalid.
        if not tiers:
            raise ValueError("give at least one tier (a flat rate is one tier without up_to_kwh)")
        *bounded, last = tiers
        if last.up_to_kwh is not None:
            raise ValueError(
                "the last tier must have no up_to_kwh (it takes all remaining energy); "
                f"add a final tier without a limit after {last.up_to_kwh} kWh"
            )
        previous = Decimal(0)
        for index, tier in enumerate(bounded, start=1):
            if tier.up_to_kwh is None:
                raise ValueError(f"tier {index} has no up_to_kwh but is not the last tier")
            if tier.up_to_kwh <= previous:
                raise ValueError(
                    f"tier {index} up_to_kwh {tier.up_to_kwh} must be greater than the previous "
                    f"threshold {previous} (thresholds are cumulative kWh per period)"
                )
            previous = tier.up_to_kwh
        return tiers


_DayClass = Literal["all", "weekday", "weekend"]


class TouWindow(_Model):
    """A local-time hour range ``[start_hour, end_hour)`` on some days; wraps midnight if start > end.

    Weekday/weekend is decided by each interval's own local date, so a weekday window 21-7 covers
    Friday 21:00-24:00 and Friday 00:00-07:00, not Saturday morning: a grid of (day class, hour)
    is what regulators publish and what can be checked for gaps and overlaps.
    """

    label: Label
    rate: NonNegDec
    start_hour: int = Field(ge=0, le=23)
    end_hour: int = Field(ge=1, le=24)
    days: _DayClass = "all"

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if self.start_hour == self.end_hour % 24 and not (self.start_hour == 0 and self.end_hour == 24):
            raise ValueError(
                f"window {self.label!r} {self.start_hour}-{self.end_hour} is empty or ambiguous; "
                "use start_hour = 0, end_hour = 24 for all day"
            )
        return self

    def hours(self) -> tuple[int, ...]:
        if self.start_hour < self.end_hour:
            return tuple(range(self.start_hour, self.end_hour))
        return (*range(self.start_hour, 24), *range(self.end_hour))

    def weekend_flags(self) -> tuple[bool, ...]:
        return {"all": (False, True), "weekday": (False,), "weekend": (True,)}[self.days]


def _hour_ranges(hours: list[int]) -> str:
    parts: list[str] = []
    start = prev = hours[0]
    for hour in [*hours[1:], -2]:
        if hour != prev + 1:
            parts.append(f"{start}-{prev + 1}")
            start = hour
        prev = hour
    return ", ".join(parts)


class TouEnergy(_Model):
    """Time-of-use rates: every local hour of weekdays and weekends belongs to exactly one window.

    Holidays are billed as weekend days (the common utility rule). ``weekend_days`` uses Python's
    ``date.weekday()`` numbering (Monday = 0) so Friday-Saturday weekends can be expressed.
    """

    kind: Literal["tou"] = "tou"
    windows: tuple[TouWindow, ...]
    weekend_days: tuple[Annotated[int, Field(ge=0, le=6)], ...] = (5, 6)
    holidays: tuple[date, ...] = ()

    @model_validator(mode="after")
    def _cover_every_hour_once(self) -> Self:
        owner: dict[tuple[bool, int], str] = {}
        overlaps: dict[bool, list[int]] = {False: [], True: []}
        for window in self.windows:
            for weekend in window.weekend_flags():
                for hour in window.hours():
                    if (weekend, hour) in owner:
                        overlaps[weekend].append(hour)
                    owner[(weekend, hour)] = window.label
        problems: list[str] = []
        for weekend, name in ((False, "weekday"), (True, "weekend")):
            if overlaps[weekend]:
                hours = sorted(set(overlaps[weekend]))
                problems.append(f"{name} hours {_hour_ranges(hours)} are in more than one window")
            gaps = [h for h in range(24) if (weekend, h) not in owner]
            if gaps:
                problems.append(f"{name} hours {_hour_ranges(gaps)} are in no window")
        rates: dict[str, Decimal] = {}
        for window in self.windows:
            if rates.setdefault(window.label, window.rate) != window.rate:
                problems.append(
                    f"windows labelled {window.label!r} have different rates "
                    f"({rates[window.label]} and {window.rate}); give them different labels"
                )
        if problems:
            raise ValueError("time-of-use windows must cover each hour exactly once: " + "; ".join(problems))
        return self

    def labels(self) -> tuple[str, ...]:
        """Window labels in first-appearance order: the order of the bill's energy lines."""
        return tuple(dict.fromkeys(w.label for w in self.windows))

    def rate_for(self, label: str) -> Decimal:
        return next(w.rate for w in self.windows if w.label == label)

    def label_at(self, local: datetime) -> str:
        """The window holding a *local* wall-clock instant (the interval's start)."""
        weekend = local.weekday() in self.weekend_days or local.date() in self.holidays
        hour = local.hour
        for window in self.windows:
            if weekend in window.weekend_flags() and hour in window.hours():
                return window.label
        raise AssertionError("unreachable: validation guarantees every hour has a window")


class KwhSurcharge(_Model):
    """A per-kWh rider on all energy (PSCR); may be negative when the rider is a credit."""

    label: Label
    rate: Dec


class FixedSurcharge(_Model):
    """A fixed amount per bill, never prorated (a fund charge is levied per bill); negative = credit."""

    label: Label
    amount: Dec


class Tax(_Model):
    """A percentage of the bill's pre-tax subtotal, e.g. percent = "6" for 6 %."""

    label: Label
    percent: Annotated[Decimal, BeforeValidator(_no_float), Field(ge=0, le=100)]


class Tariff(_Model):
    """Everything needed to price one meter's consumption for one period."""

    name: Label
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
    minor_units: int = Field(default=2, ge=0, le=4)
    energy: Annotated[TieredEnergy | TouEnergy, Field(discriminator="kind")]
    fixed_charges: tuple[FixedCharge, ...] = ()
    kwh_surcharges: tuple[KwhSurcharge, ...] = ()
    fixed_surcharges: tuple[FixedSurcharge, ...] = ()
    taxes: tuple[Tax, ...] = ()
    proration_basis_days: int = Field(default=30, ge=1, le=366)
    feed_in: FeedIn | None = None
    """What exported energy earns (``gateway.billing.feed_in``); ``None``: export is not remunerated."""

    @field_validator("feed_in")
    @classmethod
    def _feed_in_windows_are_energy_windows(cls, feed_in: FeedIn | None, info: ValidationInfo) -> FeedIn | None:
        # A field validator (not a model one) so a config error points at the feed_in table's line.
        energy = info.data.get("energy")
        if feed_in is not None and energy is not None:
            feed_in.check_windows(energy.labels() if isinstance(energy, TouEnergy) else None)
        return feed_in

    def model_dump(self, *, mode: Literal["python", "json"] = "python") -> dict[str, Any]:
        # A tariff without feed-in dumps exactly as before the field existed: its SHA-256 fingerprint
        # (gateway.reports.bills.tariff_fingerprint) and the "tariff_as_used" of issued bills must not change.
        data = super().model_dump(mode=mode)
        if self.feed_in is None:
            data.pop("feed_in", None)
        return data

    @model_validator(mode="after")
    def _whole_minor_units(self) -> Self:
        # A fixed amount of "15.005" cannot be printed on a bill; catching it here beats a
        # silently rounded charge on every full-cycle bill.
        step = Decimal(1).scaleb(-self.minor_units)
        amounts = [(c.label, c.amount) for c in self.fixed_charges]
        amounts += [(s.label, s.amount) for s in self.fixed_surcharges]
        for label, amount in amounts:
            if amount % step != 0:
                raise ValueError(
                    f"{label!r} amount {amount} has more decimal places than {self.currency} "
                    f"allows ({self.minor_units})"
                )
        return self


class LineKind(StrEnum):
    FIXED = "fixed"
    ENERGY = "energy"
    SURCHARGE = "surcharge"
    TAX = "tax"
    FEED_IN = "feed_in"
    """A credit for exported energy: ``amount_minor`` is negative (see ``gateway.billing.feed_in``)."""


@dataclass(frozen=True, slots=True)
class LineItem:
    """One printed bill line; ``amount_minor == round_half_away(quantity × rate × 10**minor_units)``, negated for
    a ``FEED_IN`` credit (its quantity and rate stay positive: kWh exported, rate paid)."""

    kind: LineKind
    label: str
    quantity: Fraction
    unit: str
    rate: Decimal
    amount_minor: int

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind.value,
            "label": self.label,
            "quantity": fraction_to_str(self.quantity),
            "unit": self.unit,
            "rate": decimal_to_str(self.rate),
            "amount_minor": self.amount_minor,
        }


@dataclass(frozen=True, slots=True)
class Bill:
    """A priced period. ``total_minor`` is by construction the sum of the line items' amounts."""

    tariff_name: str
    currency: str
    minor_units: int
    period: BillingPeriod
    proration: Fraction
    energy_wh: int
    line_items: tuple[LineItem, ...]
    total_minor: int
    """The net amount: charges plus feed-in credits; negative when the credits are larger."""
    export_wh: int | None = None
    """Exported Wh in the period, or ``None`` when the bill was priced without export data."""

    @property
    def days(self) -> int:
        return self.period.days

    @property
    def charges_minor(self) -> int:
        """Everything but the feed-in credits (what the bill was before feed-in existed)."""
        return sum(item.amount_minor for item in self.line_items if item.kind is not LineKind.FEED_IN)

    @property
    def feed_in_minor(self) -> int:
        """The feed-in credit, as a non-positive amount (0 without a feed-in rate or export)."""
        return sum(item.amount_minor for item in self.line_items if item.kind is LineKind.FEED_IN)

    @property
    def has_export(self) -> bool:
        return self.export_wh is not None

    @property
    def feed_in_priced(self) -> bool:
        """Whether the bill has feed-in lines (the tariff has a feed-in rate and export data was given)."""
        return any(item.kind is LineKind.FEED_IN for item in self.line_items)

    @property
    def charges(self) -> str:
        """``charges_minor`` in major units for humans."""
        return format_minor(self.charges_minor, self.minor_units)

    @property
    def feed_in(self) -> str:
        """``feed_in_minor`` in major units for humans ("-12.03")."""
        return format_minor(self.feed_in_minor, self.minor_units)

    @property
    def total(self) -> str:
        """The total in major units for humans ("115.06"); machines should use ``total_minor``."""
        return format_minor(self.total_minor, self.minor_units)

    def to_dict(self) -> dict[str, object]:
        return {
            "tariff": self.tariff_name,
            "currency": self.currency,
            "minor_units": self.minor_units,
            "period": self.period.to_dict(),
            "days": self.days,
            "proration": fraction_to_str(self.proration),
            "energy_wh": self.energy_wh,
            "line_items": [item.to_dict() for item in self.line_items],
            "total_minor": self.total_minor,
            **self._export_dict(),
        }

    def _export_dict(self) -> dict[str, object]:
        # Only for bills priced with export data, so an import-only bill's JSON (and the signed documents
        # of issued bills) keep exactly the keys they had.
        if self.export_wh is None:
            return {}
        return {
            "export_wh": self.export_wh,
            "charges_minor": self.charges_minor,
            "feed_in_minor": self.feed_in_minor,
            "net_minor": self.total_minor,
        }


def proration_factor(tariff: Tariff, period: BillingPeriod) -> Fraction:
    """1 for a full monthly cycle, else days / ``proration_basis_days`` (see module docstring)."""
    if period.is_full_cycle:
        return Fraction(1)
    return Fraction(period.days, tariff.proration_basis_days)


def tier_thresholds_wh(energy: TieredEnergy, factor: Fraction) -> tuple[int | None, ...]:
    """Cumulative tier upper bounds in Wh for this period, prorated and rounded to whole Wh."""
    return tuple(
        None if tier.up_to_kwh is None else round_half_away(Fraction(tier.up_to_kwh) * 1000 * factor)
        for tier in energy.tiers
    )


def split_tiers(energy: TieredEnergy, total_wh: int, factor: Fraction) -> tuple[int, ...]:
    """Wh billed in each tier; always sums to ``total_wh`` because the last tier is unbounded."""
    split: list[int] = []
    lower = 0
    for upper in tier_thresholds_wh(energy, factor):
        take = max(total_wh - lower, 0)
        if upper is not None:
            take = min(take, max(upper - lower, 0))
        split.append(take)
        if upper is not None:
            lower = max(lower, upper)
    return tuple(split)


def _check_wh(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BillingError(f"{what} must be an integer number of Wh, got {value!r}")
    if value < 0:
        raise BillingError(f"{what} must not be negative, got {value} Wh (export is billed separately)")
    return value


def _intervals_by_label(
    intervals: Iterable[tuple[datetime, int]], period: BillingPeriod, energy: TouEnergy | None
) -> dict[str, int]:
    """Sum interval Wh per TOU label (or under "" for a tiered tariff), checking each interval."""
    zone = period.zone
    seen: set[datetime] = set()
    totals: dict[str, int] = {}
    for start, wh in intervals:
        if not isinstance(start, datetime) or start.tzinfo is None or start.utcoffset() is None:
            raise BillingError(f"interval start {start!r} must be a timezone-aware datetime (UTC)")
        _check_wh(wh, f"interval {start.isoformat()}")
        local = start.astimezone(zone)
        if not period.contains(local.date()):
            raise BillingError(
                f"interval starting {start.isoformat()} is on local day {local.date()}, outside the "
                f"period {period.start}..{period.end} (end exclusive) in {period.tz}"
            )
        key = start.astimezone(UTC)
        if key in seen:
            raise BillingError(f"interval starting {start.isoformat()} appears more than once")
        seen.add(key)
        label = "" if energy is None else energy.label_at(local)
        totals[label] = totals.get(label, 0) + wh
    return totals


def _energy_lines(
    energy: TieredEnergy | TouEnergy, usage: Usage, period: BillingPeriod, factor: Fraction
) -> list[tuple[str, int, Decimal]]:
    """(label, Wh, rate) per energy line in bill order; zero lines dropped unless all are zero."""
    if isinstance(energy, TieredEnergy):
        if isinstance(usage, Mapping):
            raise BillingError("a tiered tariff is billed on total Wh or intervals, not per-window totals")
        if isinstance(usage, int):
            total = _check_wh(usage, "usage")
        else:
            total = sum(_intervals_by_label(usage, period, None).values())
        lines = [
            (tier.label or f"Usage Tier {index}", wh, tier.rate)
            for index, (tier, wh) in enumerate(zip(energy.tiers, split_tiers(energy, total, factor), strict=True), 1)
        ]
    else:
        if isinstance(usage, int):
            raise BillingError("a time-of-use tariff needs interval data or Wh per window, not a single total")
        if isinstance(usage, Mapping):
            unknown = sorted(set(usage) - set(energy.labels()))
            if unknown:
                raise BillingError(f"usage names TOU windows {unknown} that the tariff does not define")
            by_label = {label: _check_wh(wh, f"usage for window {label!r}") for label, wh in usage.items()}
        else:
            by_label = _intervals_by_label(usage, period, energy)
        lines = [(label, by_label.get(label, 0), energy.rate_for(label)) for label in energy.labels()]
    return [line for line in lines if line[1] > 0] or lines[:1]


def _export_by_label(tariff: Tariff, export: Usage, period: BillingPeriod) -> dict[str, int]:
    """Exported Wh per TOU window label (under "" when the tariff or the data has no windows)."""
    energy = tariff.energy if isinstance(tariff.energy, TouEnergy) else None
    if isinstance(export, int):
        if tariff.feed_in is not None and tariff.feed_in.by_window:
            raise BillingError("feed-in by TOU window needs export intervals or Wh per window, not a single total")
        return {"": _check_wh(export, "export")}
    if isinstance(export, Mapping):
        if energy is None:
            raise BillingError("export per TOU window needs a time-of-use tariff; give total Wh or intervals")
        unknown = sorted(set(export) - set(energy.labels()))
        if unknown:
            raise BillingError(f"export names TOU windows {unknown} that the tariff does not define")
        return {label: _check_wh(wh, f"export for window {label!r}") for label, wh in export.items()}
    return _intervals_by_label(export, period, energy)


def compute_bill(tariff: Tariff, usage: Usage, period: BillingPeriod, *, export: Usage | None = None) -> Bill:
    """Price ``usage`` (imported energy) and ``export`` (exported energy, if the meter has an export
    channel) over ``period`` under ``tariff`` (rules in the module docstring and ``feed_in``)."""
    factor = proration_factor(tariff, period)
    scale = 10**tariff.minor_units
    items: list[LineItem] = []

    def add(kind: LineKind, label: str, quantity: Fraction, unit: str, rate: Decimal) -> None:
        amount = round_half_away(quantity * Fraction(rate) * scale)
        items.append(LineItem(kind, label, quantity, unit, rate, -amount if kind is LineKind.FEED_IN else amount))

    for charge in tariff.fixed_charges:
        add(LineKind.FIXED, charge.label, factor, "period", charge.amount)
    energy_lines = _energy_lines(tariff.energy, usage, period, factor)
    energy_wh = sum(wh for _, wh, _ in energy_lines)
    for label, wh, rate in energy_lines:
        add(LineKind.ENERGY, label, Fraction(wh, 1000), "kWh", rate)
    for surcharge in tariff.kwh_surcharges:
        add(LineKind.SURCHARGE, surcharge.label, Fraction(energy_wh, 1000), "kWh", surcharge.rate)
    for fixed in tariff.fixed_surcharges:
        add(LineKind.SURCHARGE, fixed.label, Fraction(1), "bill", fixed.amount)
    subtotal = sum(item.amount_minor for item in items)
    for tax in tariff.taxes:
        add(LineKind.TAX, tax.label, Fraction(subtotal, scale), tariff.currency, tax.percent.scaleb(-2))
    export_wh: int | None = None
    if export is not None:
        by_label = _export_by_label(tariff, export, period)
        export_wh = sum(by_label.values())
        if tariff.feed_in is not None:
            labels = tariff.energy.labels() if isinstance(tariff.energy, TouEnergy) else None
            for label, wh, rate in tariff.feed_in.lines(by_label, labels):
                add(LineKind.FEED_IN, label, Fraction(wh, 1000), "kWh", rate)
    return Bill(
        tariff_name=tariff.name,
        currency=tariff.currency,
        minor_units=tariff.minor_units,
        period=period,
        proration=factor,
        energy_wh=energy_wh,
        line_items=tuple(items),
        total_minor=sum(item.amount_minor for item in items),
        export_wh=export_wh,
    )
