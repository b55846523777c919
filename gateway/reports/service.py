"""Bills, projections and exports of one site's stored intervals: the one place the CLI, the web API
and the budget watcher get them from, so a bill printed at the console and the figure the portal
shows can never disagree.

Everything here is a thin shell around the pure cores (``gateway.billing``, ``gateway.export``): it
reads the configuration (tariff, budget, NMI, site zone, billing cycle) and the ledger's intervals,
and hands plain values to them. Rules the cores do not already fix:

* Dates are *local calendar dates in the site zone* and ranges are half-open, exactly like
  ``BillingPeriod``: ``start`` is the first day included, ``end`` the first day *not* included
  (December 2025 is 2025-12-01 → 2026-01-01). The UTC range is local midnight to local midnight,
  so DST days hold 92 or 100 intervals.
* An interval belongs to a range by its start instant. ``N`` (null) intervals are not data: they
  carry no energy and are left out of bills, projections and coverage counts.
* A projection sees only intervals that have *ended* by ``as_of``, and reaches back
  ``LOOKBACK_DAYS`` before the period start so WEIGHTED_AVERAGE has history on day 2.
* Estimated intervals stored without a NEM12 method (ledgers written before schema 2 recorded one)
  are exported with method 54, linear interpolation: the interval engine has only ever estimated
  by interpolating the register between the readings either side of a gap, and an exporter must
  not invent anything else. Every other mismatch with the export formats is an error, not a guess.
* Channels: a meter's import intervals are its consumption; its export intervals (when the ledger
  holds any in the range asked) are its feed-in, priced by the tariff's ``feed_in`` rate, projected
  alongside, and exported as NEM12 suffix B1 / Green Button flowDirection 19. A meter is treated as
  having an export channel exactly when the ledger holds export intervals in the range: an
  import-only meter's bill, projection and files stay what they were before channels existed.
* Configuration problems found here (unknown meter, no tariff, no NMI) raise ``ConfigError``
  subclasses so the CLI exits 2 and the web answers 404/409 with the same sentence.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal, InvalidOperation

from gateway.billing import (
    LOOKBACK_DAYS,
    Bill,
    BillingError,
    BillingPeriod,
    BudgetAlert,
    Projection,
    ProjectionMethod,
    Tariff,
    aggregate_daily,
    billing_period_for,
    check_budget,
    compute_bill,
    expected_intervals,
    format_minor,
    local_midnight_utc,
    project,
)
from gateway.billing.period import zone_for
from gateway.channels import Channel
from gateway.config import GatewayConfig
from gateway.errors import ConfigError
from gateway.export import ExportInterval, MeterExportInfo, greenbutton_xml, nem12_text
from gateway.export.model import ESTIMATED_QUALITIES
from gateway.intervals import INTERVAL_S
from gateway.ledger.store import StoredInterval
from gateway.reports.source import IntervalSource

LEGACY_ESTIMATE_METHOD = 54
"""NEM12 method for estimated intervals the ledger holds without one (see module docstring)."""

NULL_QUALITY = "N"


class ReportConfigError(ConfigError):
    """A report cannot be made because of what the configuration says (or does not say)."""


class UnknownMeter(ReportConfigError):
    """The meter id is not in the configuration."""


@dataclass(frozen=True, slots=True)
class DataCoverage:
    """How much of a range the ledger has data for, and how good it is: a bill is only as
    trustworthy as the intervals under it, so it is printed next to the total."""

    present: int
    expected: int
    qualities: dict[str, int]

    @property
    def coverage(self) -> float:
        return self.present / self.expected if self.expected else 1.0

    def to_dict(self) -> dict[str, object]:
        return {
            "intervals_present": self.present,
            "intervals_expected": self.expected,
            "coverage": self.coverage,
            "qualities": dict(sorted(self.qualities.items())),
        }


@dataclass(frozen=True, slots=True)
class MeterBill:
    meter: str
    bill: Bill
    data: DataCoverage
    export_data: DataCoverage | None = None
    """Coverage of the export channel, ``None`` for a meter without export intervals in the period."""

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"meter": self.meter, **self.bill.to_dict(), "total": self.bill.total,
                                  "data": self.data.to_dict()}
        if self.export_data is not None:
            out["export_data"] = self.export_data.to_dict()
        return out


@dataclass(frozen=True, slots=True)
class MeterProjection:
    """Both estimators for the current billing period, and the budget verdict of the configured one."""

    meter: str
    as_of: datetime
    method: ProjectionMethod
    """The configured method: the one budget alerts use."""
    projections: dict[ProjectionMethod, Projection]
    budget_minor: int | None
    alert: BudgetAlert | None
    """Set when the configured method's projection is over budget with enough confidence."""

    @property
    def projection(self) -> Projection:
        return self.projections[self.method]

    @property
    def period(self) -> BillingPeriod:
        return self.projection.period

    def budget_dict(self) -> dict[str, object] | None:
        if self.budget_minor is None:
            return None
        bill = self.projection.projected_bill
        over = bill.total_minor > self.budget_minor
        status = "over" if self.alert is not None else ("over_low_confidence" if over else "within")
        return {
            "budget_minor": self.budget_minor,
            "budget": format_minor(self.budget_minor, bill.minor_units),
            "method": self.method.value,
            "projected_total_minor": bill.total_minor,
            "over_by_minor": max(0, bill.total_minor - self.budget_minor),
            "status": status,
            "exceeded": self.alert is not None,
            "message": None if self.alert is None else self.alert.message,
        }

    def to_dict(self) -> dict[str, object]:
        first = self.projection
        tariff = first.projected_bill
        methods: dict[str, object] = {}
        for method, proj in self.projections.items():
            full = proj.to_dict()
            full.pop("period_to_date")  # identical for every method: given once below
            full.pop("period")
            full["projected_total"] = proj.projected_bill.total
            methods[method.value] = full
        return {
            "meter": self.meter,
            "as_of": self.as_of.isoformat(),
            "tariff": tariff.tariff_name,
            "currency": tariff.currency,
            "minor_units": tariff.minor_units,
            "period": self.period.to_dict(),
            "period_to_date": first.to_date.to_dict(),
            "default_method": self.method.value,
            "confidence": first.confidence,
            "projections": methods,
            "budget": self.budget_dict(),
        }


# ---- configuration lookups -----------------------------------------------------------------------


def check_meter(cfg: GatewayConfig, meter: str) -> None:
    if cfg.meter(meter) is None:
        known = ", ".join(cfg.all_meter_ids()) or "none"
        raise UnknownMeter(f"no meter {meter!r} in the configuration (meters: {known})")


def tariff_for(cfg: GatewayConfig, meter: str) -> Tariff:
    """The meter's own tariff, else the site's ``[billing] tariff``."""
    check_meter(cfg, meter)
    entry = cfg.meter(meter)
    name = (entry.tariff if entry is not None else None) or cfg.billing.tariff
    if name is None:
        raise ReportConfigError(
            f"meter {meter!r} has no tariff: set tariff = \"NAME\" on the meter or [billing] tariff, "
            "naming a [tariffs.NAME] table"
        )
    try:
        return cfg.tariffs[name]
    except KeyError:
        raise ReportConfigError(
            f"meter {meter!r} names tariff {name!r}, which is not defined under [tariffs]") from None


def budget_minor_for(cfg: GatewayConfig, meter: str, tariff: Tariff) -> int | None:
    """The meter's budget in minor units of its tariff's currency, or ``None`` without one."""
    entry = cfg.meter(meter)
    if entry is None or entry.budget is None:
        return None
    try:
        scaled = Decimal(entry.budget).scaleb(tariff.minor_units)
    except InvalidOperation:
        raise ReportConfigError(f"meter {meter!r}: budget {entry.budget!r} is not a decimal amount") from None
    if scaled != scaled.to_integral_value():
        raise ReportConfigError(f"meter {meter!r}: budget {entry.budget!r} is finer than {tariff.currency} allows")
    return int(scaled)


EXPORT_SUFFIX = "B1"
"""NMI suffix (and RegisterID) of exported energy next to the import stream's E1 (AEMO's convention)."""


def export_info(cfg: GatewayConfig, meter: str, *, need_nmi: bool) -> MeterExportInfo:
    """How the meter is named in an export. NEM12 is keyed by NMI, so it needs one; Green Button only
    mentions it in a title, where a meter without one says so rather than borrowing its id. (A meter
    with export intervals gets the export stream B1 from :func:`_with_export`.)"""
    check_meter(cfg, meter)
    entry = cfg.meter(meter)
    nmi = entry.nmi if entry is not None else None
    if nmi is None:
        if need_nmi:
            raise ReportConfigError(f"meter {meter!r} has no NMI: add nmi = \"...\" to it for NEM12 exports")
        nmi = "none"
    try:
        return MeterExportInfo(meter, nmi)
    except ValueError as exc:
        raise ReportConfigError(f"meter {meter!r}: {exc}") from None


def site_period(cfg: GatewayConfig, start: date, end: date) -> BillingPeriod:
    """Local dates ``[start, end)`` in the site zone, with the billing core's checks as a usage error."""
    try:
        return BillingPeriod(start, end, cfg.site_timezone)
    except BillingError as exc:
        raise ReportConfigError(str(exc)) from None


def period_containing(cfg: GatewayConfig, as_of: datetime) -> BillingPeriod:
    """The configured monthly billing cycle that ``as_of`` falls in, in the site zone."""
    day = as_of.astimezone(zone_for(cfg.site_timezone)).date()
    return billing_period_for(day, cfg.billing.period_start_day, tz=cfg.site_timezone)


# ---- reading the ledger --------------------------------------------------------------------------


def _ts(instant: datetime) -> int:
    return int(instant.astimezone(UTC).timestamp())


def _usage(intervals: Iterable[StoredInterval]) -> list[tuple[datetime, int]]:
    return [(datetime.fromtimestamp(iv.start, UTC), iv.wh) for iv in intervals if iv.quality != NULL_QUALITY]


def _coverage(intervals: Sequence[StoredInterval], period: BillingPeriod) -> DataCoverage:
    zone = period.zone
    return DataCoverage(
        present=sum(iv.quality != NULL_QUALITY for iv in intervals),
        expected=sum(expected_intervals(day, zone) for day in period.dates()),
        qualities=dict(Counter(iv.quality for iv in intervals)),
    )


async def meter_bill(source: IntervalSource, cfg: GatewayConfig, meter: str, period: BillingPeriod) -> MeterBill:
    """The bill for ``period`` from the meter's stored intervals under its configured tariff: import as
    consumption, export (if the ledger holds any for the period) as feed-in."""
    tariff = tariff_for(cfg, meter)
    start, end = _ts(period.start_utc), _ts(period.end_utc)
    intervals = await source.stored_intervals(meter, start, end)
    exported = await source.stored_intervals(meter, start, end, channel=Channel.EXPORT)
    bill = compute_bill(tariff, _usage(intervals), period, export=_usage(exported) if exported else None)
    return MeterBill(meter, bill, _coverage(intervals, period), _coverage(exported, period) if exported else None)


async def meter_projection(source: IntervalSource, cfg: GatewayConfig, meter: str, as_of: datetime) -> MeterProjection:
    """Period-to-date figures and projections by every method for the cycle containing ``as_of``."""
    tariff = tariff_for(cfg, meter)
    budget = budget_minor_for(cfg, meter, tariff)
    period = period_containing(cfg, as_of)
    zone = period.zone
    today = as_of.astimezone(zone).date()
    first_day = min(period.start, today - timedelta(days=LOOKBACK_DAYS))
    ended_by = _ts(as_of) - _ts(as_of) % INTERVAL_S  # every interval starting before this has ended
    since = _ts(local_midnight_utc(first_day, zone))
    intervals = await source.stored_intervals(meter, since, ended_by)
    exported = await source.stored_intervals(meter, since, ended_by, channel=Channel.EXPORT)
    daily = aggregate_daily(_usage(intervals), cfg.site_timezone, tariff)
    export_daily = aggregate_daily(_usage(exported), cfg.site_timezone, tariff) if exported else None
    projections = {method: project(tariff, daily, period, as_of, method, export_daily=export_daily)
                   for method in ProjectionMethod}
    method = ProjectionMethod(cfg.billing.projection_method)
    alert = None
    if budget is not None:
        alert = check_budget(projections[method], budget, meter_id=meter,
                             min_confidence=cfg.billing.budget_min_confidence)
    return MeterProjection(meter, as_of.astimezone(UTC), method, projections, budget, alert)


def _export_interval(iv: StoredInterval) -> ExportInterval:
    method = iv.method
    if method is None and iv.quality in ESTIMATED_QUALITIES:
        method = LEGACY_ESTIMATE_METHOD
    return ExportInterval(iv.meter, iv.start, iv.wh, iv.quality, method, iv.reason, channel=iv.channel)


async def export_intervals(source: IntervalSource, meters: Iterable[str], start: datetime,
                           end: datetime) -> list[ExportInterval]:
    """Stored intervals of ``meters``, both channels, starting in ``[start, end)``, in export terms."""
    out: list[ExportInterval] = []
    for meter in meters:
        for channel in Channel:
            found = await source.stored_intervals(meter, _ts(start), _ts(end), channel=channel)
            out.extend(_export_interval(iv) for iv in found)
    return out


def _with_export(infos: dict[str, MeterExportInfo], data: Sequence[ExportInterval]) -> dict[str, MeterExportInfo]:
    """``infos`` with the export stream B1 added to every meter that has export intervals in ``data``."""
    exporting = {iv.meter for iv in data if iv.channel is Channel.EXPORT}
    return {m: replace(i, export_nmi_suffix=EXPORT_SUFFIX) if m in exporting else i for m, i in infos.items()}


NEM_TIME = timezone(timedelta(hours=10))


def nem_days(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """[start, end) grown to whole NEM days (midnight to midnight, UTC+10)."""
    first = start.astimezone(NEM_TIME).replace(hour=0, minute=0, second=0, microsecond=0)
    last = end.astimezone(NEM_TIME)
    if last.time() != time(0):
        last = last.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    return first, last


def nem12_participants(cfg: GatewayConfig) -> tuple[str, str]:
    return cfg.billing.nem12_from_participant or cfg.gateway_id[:10], cfg.billing.nem12_to_participant


def nem12_meters(cfg: GatewayConfig, meters: Sequence[str] | None) -> dict[str, MeterExportInfo]:
    """The meters a NEM12 file covers: those asked for (each must have an NMI), else every meter with one."""
    if meters:
        return {m: export_info(cfg, m, need_nmi=True) for m in dict.fromkeys(meters)}
    found = {m: export_info(cfg, m, need_nmi=True) for m in cfg.all_meter_ids() if _has_nmi(cfg, m)}
    if not found:
        raise ReportConfigError("no meter has an NMI: add nmi = \"...\" to the meters to export as NEM12")
    return found


def _has_nmi(cfg: GatewayConfig, meter: str) -> bool:
    entry = cfg.meter(meter)
    return entry is not None and entry.nmi is not None


async def nem12_export(source: IntervalSource, cfg: GatewayConfig, meters: Sequence[str] | None,
                       start: datetime, end: datetime, *, created: datetime) -> str:
    """A NEM12 file (CRLF text) of the meters' intervals, widened to whole NEM days.

    NEM12 days run 00:00-24:00 at UTC+10 whatever the site's zone, and a receiving
    system replaces whole days: a day cut at the site's midnight would arrive with
    real data written as N (null). So the range grows to the NEM days it touches.
    """
    infos = nem12_meters(cfg, meters)
    sender, receiver = nem12_participants(cfg)
    data = await export_intervals(source, infos, *nem_days(start, end))
    return nem12_text(data, _with_export(infos, data), from_participant=sender, to_participant=receiver,
                      created=created)


async def greenbutton_export(source: IntervalSource, cfg: GatewayConfig, meters: Sequence[str] | None,
                             start: datetime, end: datetime, *, created: datetime) -> bytes:
    """A Green Button (ESPI Atom) feed of the meters' intervals (every configured meter by default)."""
    chosen = list(dict.fromkeys(meters)) if meters else cfg.all_meter_ids()
    infos = {m: export_info(cfg, m, need_nmi=False) for m in chosen}
    data = await export_intervals(source, infos, start, end)
    return greenbutton_xml(data, _with_export(infos, data), tz=cfg.site_timezone, created=created)


def local_range(cfg: GatewayConfig, start: date, end: date) -> tuple[datetime, datetime]:
    """UTC instants of local midnight at ``start`` and at ``end`` (exclusive), checked like a period."""
    period = site_period(cfg, start, end)
    return period.start_utc, period.end_utc
