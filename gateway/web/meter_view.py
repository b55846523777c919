"""What the meter page shows, built from the live status and the ledger: live values with units,
the bill so far and its projection, the last day's intervals with their quality."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

from gateway.config import GatewayConfig
from gateway.errors import GatewayError
from gateway.ledger.store import StoredInterval
from gateway.status import LiveValue

if TYPE_CHECKING:  # the reports (projection, billing, exports) load at the first meter page, not at start
    from gateway.reports.service import MeterProjection
    from gateway.reports.source import IntervalSource

QUALITY_WORDS = {"A": "actual", "E": "estimated", "S": "substituted", "F": "final substitute", "N": "no data"}

_LABELS = {
    "energy_import": "Energy imported", "energy_export": "Energy exported", "power_total": "Power, total",
    "power_factor": "Power factor", "frequency": "Frequency", "reactive_power_total": "Reactive power, total",
    "apparent_power_total": "Apparent power, total", "current_neutral": "Current, neutral",
}
_ORDER = ("energy", "power_total", "power", "voltage", "current", "frequency")
_LAST = ("power_factor",)
_DECIMALS = {"V": 1, "A": 2, "Hz": 2, "W": 0, "var": 0, "VA": 0, "kWh": 3, "": 3}


def quantity_label(name: str) -> str:
    if name in _LABELS:
        return _LABELS[name]
    words = name.split("_")
    phase = words[-1].upper() if words[-1] in ("l1", "l2", "l3", "l1l2", "l2l3", "l3l1") else None
    text = " ".join(words[:-1] if phase else words).capitalize()
    return f"{text} {phase}" if phase else text


@dataclass(frozen=True)
class LiveRow:
    name: str
    label: str
    value: str
    unit: str
    t: float


def format_value(value: float, unit: str) -> tuple[str, str]:
    """A value as a technician reads it off a meter: energy in kWh, others in their unit."""
    if unit == "Wh":
        return f"{value / 1000:,.3f}", "kWh"
    decimals = _DECIMALS.get(unit, 2)
    return f"{value:,.{decimals}f}", unit


def live_rows(values: Mapping[str, LiveValue]) -> list[LiveRow]:
    def rank(name: str) -> tuple[int, str]:
        if name in _LAST:
            return len(_ORDER) + 1, name
        return next((i for i, prefix in enumerate(_ORDER) if name.startswith(prefix)), len(_ORDER)), name

    rows = []
    for name in sorted(values, key=rank):
        v = values[name]
        text, unit = format_value(v.value, v.unit)
        rows.append(LiveRow(name, quantity_label(name), text, unit, v.t))
    return rows


@dataclass(frozen=True)
class IntervalRow:
    start: int
    end: int
    wh: int
    quality: str
    word: str
    estimated: bool
    method: int | None
    reason: int | None


def interval_rows(rows: Sequence[StoredInterval]) -> list[IntervalRow]:
    """Newest first, as a technician looks for the latest."""
    return [IntervalRow(r.start, r.end, r.wh, r.quality, QUALITY_WORDS.get(r.quality, r.quality),
                        r.quality in ("E", "S", "F"), r.method, r.reason)
            for r in sorted(rows, key=lambda r: r.start, reverse=True)]


@dataclass(frozen=True)
class BillView:
    projection: MeterProjection | None
    problem: str | None
    last_day: date | None
    """The period's last day (its end is exclusive)."""
    confidence_word: str

    @property
    def budget(self) -> dict[str, object] | None:
        return self.projection.budget_dict() if self.projection else None


def confidence_word(confidence: float) -> str:
    if confidence < 0.25:
        return "low"
    return "medium" if confidence < 0.6 else "high"


async def bill_view(source: IntervalSource, cfg: GatewayConfig | None, meter: str, now: float) -> BillView:
    if cfg is None:
        return BillView(None, "no configuration", None, "")
    from gateway.reports.service import ReportConfigError, meter_projection

    try:
        projection = await meter_projection(source, cfg, meter, datetime.fromtimestamp(now, UTC))
    except ReportConfigError as exc:
        return BillView(None, str(exc), None, "")
    except (GatewayError, ValueError) as exc:
        return BillView(None, f"the projection cannot be computed: {exc}", None, "")
    return BillView(projection, None, projection.period.end - timedelta(days=1),
                    confidence_word(projection.projection.confidence))


def kwh(wh: int | None) -> str:
    return "—" if wh is None else f"{wh / 1000:,.3f}"
