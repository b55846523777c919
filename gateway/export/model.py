"""What the exporters take as input: one interval in NEM12 quality terms, and how a meter is named outside.

Validation happens when a value is built, not when a file is half written: an exporter must never
emit a syntactically valid file that says something other than the ledger does. So every field a
format constrains is checked here once, for both formats:

* ``start`` on the 900 s grid and ``wh`` a non-negative integer (NEM12 has no sign; ESPI
  ``flowDirection 1`` is delivered energy).
* ``quality`` one of A, E, S, F, N. E, S and F must say *how* the value was made (a 2-digit NEM12
  method, e.g. 54 linear interpolation); A and N must not, because a method on them is meaningless
  and a receiving MDM rejects ``A54``.
* ``reason`` is a NEM12 reason code (0-999); reason 0 is "free text" and so needs ``reason_text``.
* ``reason_text`` and every identifier end up in a comma-separated file without quoting (NEM12
  has none) and in XML (which cannot carry control characters), so commas and control characters
  are refused rather than escaped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from gateway.errors import GatewayError
from gateway.intervals.aggregate import QUALITY_RANK
from gateway.intervals.engine import INTERVAL_S

ESTIMATED_QUALITIES = frozenset({"E", "S", "F"})
"""Qualities that describe a value somebody computed, and so must carry a method."""


class ExportError(GatewayError, ValueError):
    """The data or meter description cannot be written to an export format as given."""


def _plain(name: str, value: object, *, max_len: int, required: bool) -> str:
    if not isinstance(value, str):
        raise ExportError(f"{name} must be a string, got {value!r}")
    if required and not value:
        raise ExportError(f"{name} must not be empty")
    if len(value) > max_len:
        raise ExportError(f"{name} {value!r} is longer than {max_len} characters")
    if "," in value or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ExportError(
            f"{name} {value!r} must not contain commas or control characters (NEM12 fields are unquoted, "
            "and XML 1.0 cannot carry control characters)"
        )
    return value


def _int_or_none(name: str, value: object, low: int, high: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ExportError(f"{name} must be an integer from {low} to {high} or None, got {value!r}")


@dataclass(frozen=True, slots=True)
class ExportInterval:
    """One meter's energy in one 15-minute interval, with its NEM12 quality, method and reason."""

    meter: str
    start: int
    """Unix seconds UTC, a multiple of 900."""
    wh: int
    quality: str
    """NEM12 letter: A actual, E forward estimate, S substituted, F final substituted, N null."""
    method: int | None = None
    """2-digit NEM12 method for E/S/F (e.g. 54 linear interpolation, 52 previous read)."""
    reason: int | None = None
    """NEM12 reason code (e.g. 76 communications fault, 43 power outage, 89 time reset)."""
    reason_text: str = ""

    def __post_init__(self) -> None:
        _plain("meter", self.meter, max_len=200, required=True)
        if isinstance(self.start, bool) or not isinstance(self.start, int) or self.start % INTERVAL_S:
            raise ExportError(f"interval start {self.start!r} must be integer Unix seconds on the {INTERVAL_S} s grid")
        if isinstance(self.wh, bool) or not isinstance(self.wh, int) or self.wh < 0:
            raise ExportError(f"interval {self.meter}@{self.start} must have non-negative integer Wh, got {self.wh!r}")
        if self.quality not in QUALITY_RANK:
            raise ExportError(
                f"interval {self.meter}@{self.start} has quality {self.quality!r}; "
                f"expected one of {', '.join(QUALITY_RANK)}"
            )
        _int_or_none("method", self.method, 10, 99)
        if self.quality in ESTIMATED_QUALITIES and self.method is None:
            raise ExportError(
                f"interval {self.meter}@{self.start} has quality {self.quality} but no method: "
                "say how it was estimated, e.g. method=54 (linear interpolation)"
            )
        if self.quality not in ESTIMATED_QUALITIES and self.method is not None:
            raise ExportError(f"interval {self.meter}@{self.start}: quality {self.quality} cannot carry a method")
        _int_or_none("reason", self.reason, 0, 999)
        _plain("reason_text", self.reason_text, max_len=240, required=self.reason == 0)
        if self.reason is None and self.reason_text:
            raise ExportError(f"interval {self.meter}@{self.start} has reason_text but no reason code (use 0)")

    @property
    def quality_method(self) -> str:
        """NEM12 QualityMethod field: the letter, followed by the method for E/S/F (``S54``)."""
        return self.quality if self.method is None else f"{self.quality}{self.method:02d}"


@dataclass(frozen=True, slots=True)
class MeterExportInfo:
    """How a gateway meter is identified to the market: NMI, data stream suffix, register, serial."""

    meter: str
    nmi: str
    register_id: str = "E1"
    nmi_suffix: str = "E1"
    serial: str = ""
    uom: str = "KWH"

    def __post_init__(self) -> None:
        _plain("meter", self.meter, max_len=200, required=True)
        _plain("nmi", self.nmi, max_len=10, required=True)
        _plain("register_id", self.register_id, max_len=10, required=True)
        _plain("nmi_suffix", self.nmi_suffix, max_len=2, required=True)
        _plain("serial", self.serial, max_len=12, required=False)
        if _plain("uom", self.uom, max_len=5, required=True).upper() not in ("KWH", "WH"):
            raise ExportError(f"uom {self.uom!r} is not supported: use 'KWH' (or 'WH')")


def group_by_meter(
    intervals: Iterable[ExportInterval], meters: Mapping[str, MeterExportInfo]
) -> dict[str, dict[int, ExportInterval]]:
    """Intervals per meter keyed by start, refusing unknown meters and duplicate starts.

    Meters are ordered by name so the same data always produces the same file byte for byte.
    """
    for key, info in meters.items():
        if key != info.meter:
            raise ExportError(f"meters[{key!r}] describes meter {info.meter!r}: the key must be the meter name")
    out: dict[str, dict[int, ExportInterval]] = {}
    for iv in intervals:
        if not isinstance(iv, ExportInterval):
            raise ExportError(f"expected ExportInterval, got {iv!r}")
        if iv.meter not in meters:
            raise ExportError(f"no MeterExportInfo for meter {iv.meter!r}: add its NMI to the export configuration")
        per_meter = out.setdefault(iv.meter, {})
        if iv.start in per_meter:
            raise ExportError(f"interval {iv.meter}@{iv.start} appears more than once")
        per_meter[iv.start] = iv
    return {m: dict(sorted(out[m].items())) for m in sorted(out)}
