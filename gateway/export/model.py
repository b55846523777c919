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
* ``channel`` says which series the value belongs to (``gateway.channels``): import energy is
  written as NEM12 suffix E1 and ESPI flowDirection 1, export energy as B1 and flowDirection 19.
  Both are non-negative Wh: the direction is carried by the channel, never by a sign.
* ``reason_text`` and every identifier end up in a comma-separated file without quoting (NEM12
  has none) and in XML (which cannot carry control characters), so commas and control characters
  are refused rather than escaped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from gateway.channels import Channel
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
    channel: Channel = Channel.IMPORT
    """The series: imported (E1, flowDirection 1) or exported (B1, flowDirection 19) energy."""

    def __post_init__(self) -> None:
        _plain("meter", self.meter, max_len=200, required=True)
        if not isinstance(self.channel, Channel):
            raise ExportError(f"interval {self.meter}@{self.start}: channel must be a Channel, got {self.channel!r}")
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
    """How a gateway meter is identified to the market: NMI, data stream suffix, register, serial.

    ``nmi_suffix``/``register_id`` name the import stream (E1: general consumption); a meter with an
    export channel also has ``export_nmi_suffix``/``export_register_id`` (B1: energy exported to the
    grid, AEMO's NMI suffix convention). ``export_nmi_suffix`` ``None`` means the meter has no export
    channel, and then nothing about its file changes.
    """

    meter: str
    nmi: str
    register_id: str = "E1"
    nmi_suffix: str = "E1"
    serial: str = ""
    uom: str = "KWH"
    export_nmi_suffix: str | None = None
    export_register_id: str | None = None
    """Defaults to ``export_nmi_suffix`` (B1), as ``register_id`` does for import."""

    def __post_init__(self) -> None:
        _plain("meter", self.meter, max_len=200, required=True)
        _plain("nmi", self.nmi, max_len=10, required=True)
        _plain("register_id", self.register_id, max_len=10, required=True)
        _plain("nmi_suffix", self.nmi_suffix, max_len=2, required=True)
        _plain("serial", self.serial, max_len=12, required=False)
        if _plain("uom", self.uom, max_len=5, required=True).upper() not in ("KWH", "WH"):
            raise ExportError(f"uom {self.uom!r} is not supported: use 'KWH' (or 'WH')")
        if self.export_nmi_suffix is None:
            if self.export_register_id is not None:
                raise ExportError(f"meter {self.meter!r} has an export_register_id but no export_nmi_suffix (B1)")
            return
        _plain("export_nmi_suffix", self.export_nmi_suffix, max_len=2, required=True)
        if self.export_nmi_suffix == self.nmi_suffix:
            raise ExportError(f"meter {self.meter!r}: import and export cannot share NMI suffix {self.nmi_suffix}")
        if self.export_register_id is None:
            object.__setattr__(self, "export_register_id", self.export_nmi_suffix)
        _plain("export_register_id", self.export_register_id, max_len=10, required=True)

    @property
    def channels(self) -> tuple[Channel, ...]:
        """The meter's channels, import first: the order of its suffixes in NMIConfiguration."""
        return (Channel.IMPORT,) if self.export_nmi_suffix is None else (Channel.IMPORT, Channel.EXPORT)

    def suffix(self, channel: Channel) -> str:
        """The NMI suffix of ``channel``; an error for an export channel the meter does not have."""
        if channel is Channel.IMPORT:
            return self.nmi_suffix
        if self.export_nmi_suffix is None:
            raise ExportError(f"meter {self.meter!r} has export intervals but no export NMI suffix: "
                              "give it export_nmi_suffix (B1)")
        return self.export_nmi_suffix

    def register(self, channel: Channel) -> str:
        self.suffix(channel)  # same check
        return self.register_id if channel is Channel.IMPORT else str(self.export_register_id)


def _check_keys(meters: Mapping[str, MeterExportInfo]) -> None:
    for key, info in meters.items():
        if key != info.meter:
            raise ExportError(f"meters[{key!r}] describes meter {info.meter!r}: the key must be the meter name")


def group_by_stream(
    intervals: Iterable[ExportInterval], meters: Mapping[str, MeterExportInfo]
) -> dict[tuple[str, Channel], dict[int, ExportInterval]]:
    """Intervals per (meter, channel) keyed by start, refusing unknown meters and duplicate starts.

    Ordered by meter name, then import before export, so equal data gives an identical file.
    """
    _check_keys(meters)
    out: dict[tuple[str, Channel], dict[int, ExportInterval]] = {}
    for iv in intervals:
        if not isinstance(iv, ExportInterval):
            raise ExportError(f"expected ExportInterval, got {iv!r}")
        if iv.meter not in meters:
            raise ExportError(f"no MeterExportInfo for meter {iv.meter!r}: add its NMI to the export configuration")
        per_stream = out.setdefault((iv.meter, iv.channel), {})
        if iv.start in per_stream:
            raise ExportError(f"interval {iv.meter}@{iv.start} ({iv.channel}) appears more than once")
        per_stream[iv.start] = iv
    order = {channel: index for index, channel in enumerate(Channel)}
    return {key: dict(sorted(out[key].items())) for key in sorted(out, key=lambda k: (k[0], order[k[1]]))}


def group_by_meter(
    intervals: Iterable[ExportInterval], meters: Mapping[str, MeterExportInfo]
) -> dict[str, dict[int, ExportInterval]]:
    """Intervals per meter keyed by start, refusing unknown meters and duplicate starts.

    Meters are ordered by name so the same data always produces the same file byte for byte. One
    channel only (see :func:`group_by_stream` for both).
    """
    _check_keys(meters)
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
