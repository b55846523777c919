"""NEM12 (AEMO Meter Data File Format) writer for 15-minute interval data (pure).

Field choices, record by record (FIELD_NOTES "NEM12"):

``100,NEM12,DateTime,FromParticipant,ToParticipant``
    DateTime is ``created`` in NEM time (``YYYYMMDDhhmm``). Participant ids are the caller's
    (10 characters at most); the gateway does not guess market roles.
``200,NMI,NMIConfiguration,RegisterID,NMISuffix,MDMDataStreamIdentifier,MeterSerialNumber,UOM,15,``
    One per data stream that has data — a meter's import channel (suffix and RegisterID ``E1``) and,
    when it has one, its export channel (``B1``, energy exported to the grid, AEMO's suffix
    convention) — each followed by its own 300/400 records, ordered by NMI then suffix so equal
    input gives an identical file. NMIConfiguration lists the suffixes of *every* configured
    stream on that NMI (e.g. ``E1B1``) in the order of the ``meters`` mapping, import before export
    within a meter, because it describes the site, not this file's content. A meter without an
    export channel is written exactly as before channels existed.
    MDMDataStreamIdentifier is ``N<k>``, k the suffix's 1-based position in NMIConfiguration, which
    keeps it unique per NMI as the procedure requires. IntervalLength is always 15 and
    NextScheduledReadDate blank (the gateway reads continuously; there is no scheduled read).
``300,IntervalDate,V1..V96,QualityMethod,ReasonCode,ReasonDescription,UpdateDateTime,``
    103 fields. Days are NEM days: NEM time is UTC+10 all year (no DST), so an interval's slot is
    ``(start + 36000) mod 86400 // 900`` and every day has exactly 96 values whatever the site zone.
    Values are kWh with exactly three decimals written from integer Wh by integer formatting
    (``1234 Wh -> 1.234``), so no float ever rounds a watt-hour away; UOM ``WH`` writes integers.
    When all 96 intervals share quality, method and reason the 300 row carries them (``A``, ``S54``
    with reason 76, ...). Otherwise QualityMethod is ``V`` with ReasonCode and ReasonDescription
    blank (the spec forbids a reason on V) and 400 records carry the detail.
    UpdateDateTime is ``created`` in NEM time (``YYYYMMDDhhmmss``): the gateway does not track when
    each value last changed, and the file's creation is the latest that any of them can have.
    MSATSLoadDateTime is blank: only AEMO's MSATS fills it.
``400,StartInterval,EndInterval,QualityMethod,ReasonCode,ReasonDescription``
    One per maximal run of equal (quality, method, reason, reason text); intervals numbered 1-96,
    inclusive. Intervals missing from a day that has some data are written as ``0.000`` in an ``N``
    (null) run, which is what makes such a day ``V``. Days without any data are omitted.
``900``
    End of data.

Records end with CRLF, as MDFF files are exchanged; open files with ``newline=""`` so the text
layer does not add a second CR. No 500 (B2B) records: the gateway is not the meter data provider
responding to a service order.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from itertools import groupby
from typing import TextIO

from gateway.channels import Channel
from gateway.export.model import ExportError, ExportInterval, MeterExportInfo, group_by_stream
from gateway.intervals.engine import INTERVAL_S

NEM_TIME = timezone(timedelta(hours=10), "NEM")
"""Market time: AEST, UTC+10, never daylight saving."""

SLOTS_PER_DAY = 86_400 // INTERVAL_S
INTERVAL_MINUTES = INTERVAL_S // 60
CRLF = "\r\n"
_NEM_OFFSET_S = 10 * 3600
_EPOCH_DAY = date(1970, 1, 1)


@dataclass(frozen=True, slots=True)
class _Cell:
    """What a 300/400 record says about one interval besides its value."""

    quality_method: str
    reason: str
    reason_text: str


_NULL = _Cell("N", "", "")


def nem_slot(start: int) -> tuple[date, int]:
    """NEM day and 0-based slot (0..95) of the interval starting at Unix second ``start``."""
    day_index, second = divmod(start + _NEM_OFFSET_S, 86_400)
    return _EPOCH_DAY + timedelta(days=day_index), second // INTERVAL_S


def format_value(wh: int, uom: str = "KWH") -> str:
    """Exact decimal text of ``wh`` in the 200 record's unit (no float conversion)."""
    if uom.upper() == "WH":
        return str(wh)
    return f"{wh // 1000}.{wh % 1000:03d}"


def _nem_time(created: datetime, fmt: str) -> str:
    if created.utcoffset() is None:
        raise ExportError(f"created {created!r} must be timezone-aware (NEM12 times are written in UTC+10)")
    return created.astimezone(NEM_TIME).strftime(fmt)


def _participant(name: str, value: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 10 or any(c in value for c in ",\r\n"):
        raise ExportError(f"{name} {value!r} must be a participant id of 1-10 characters without commas")
    return value


def _cell(iv: ExportInterval | None) -> _Cell:
    if iv is None:
        return _NULL
    return _Cell(iv.quality_method, "" if iv.reason is None else str(iv.reason), iv.reason_text)


def _day_records(day: date, slots: list[ExportInterval | None], uom: str, updated: str) -> Iterator[list[str]]:
    values = [format_value(iv.wh, uom) if iv is not None else format_value(0, uom) for iv in slots]
    cells = [_cell(iv) for iv in slots]
    head = ["300", day.strftime("%Y%m%d"), *values]
    if len(set(cells)) == 1:
        only = cells[0]
        yield [*head, only.quality_method, only.reason, only.reason_text, updated, ""]
        return
    yield [*head, "V", "", "", updated, ""]
    index = 1
    for cell, run in groupby(cells):
        length = len(list(run))
        yield ["400", str(index), str(index + length - 1), cell.quality_method, cell.reason, cell.reason_text]
        index += length


def _stream_records(info: MeterExportInfo, channel: Channel, configuration: str, stream: str,
                    data: dict[int, ExportInterval], updated: str) -> Iterator[list[str]]:
    yield ["200", info.nmi, configuration, info.register(channel), info.suffix(channel), stream, info.serial,
           info.uom.upper(), str(INTERVAL_MINUTES), ""]
    days: dict[date, list[ExportInterval | None]] = {}
    for start, iv in data.items():
        day, slot = nem_slot(start)
        days.setdefault(day, [None] * SLOTS_PER_DAY)[slot] = iv
    for day in sorted(days):
        yield from _day_records(day, days[day], info.uom, updated)


def nem12_records(
    intervals: Iterable[ExportInterval],
    meters: Mapping[str, MeterExportInfo],
    *,
    from_participant: str,
    to_participant: str,
    created: datetime,
) -> Iterator[list[str]]:
    """The file as a sequence of records (lists of fields); everything is validated before the first."""
    header = ["100", "NEM12", _nem_time(created, "%Y%m%d%H%M"),
              _participant("from_participant", from_participant), _participant("to_participant", to_participant)]
    updated = _nem_time(created, "%Y%m%d%H%M%S")
    suffixes: dict[str, list[str]] = {}
    for info in meters.values():
        nmi_suffixes = suffixes.setdefault(info.nmi, [])
        for channel in info.channels:
            suffix = info.suffix(channel)
            if suffix in nmi_suffixes:
                raise ExportError(f"two meters are configured as NMI {info.nmi} suffix {suffix}")
            nmi_suffixes.append(suffix)
    grouped = group_by_stream(intervals, meters)
    for meter, channel in grouped:
        meters[meter].suffix(channel)  # an export stream needs an export suffix: refuse before the first byte
    ordered = sorted(grouped, key=lambda key: (meters[key[0]].nmi, meters[key[0]].suffix(key[1])))

    yield header
    for meter, channel in ordered:
        info = meters[meter]
        nmi_suffixes = suffixes[info.nmi]
        suffix = info.suffix(channel)
        stream = f"N{nmi_suffixes.index(suffix) + 1}"
        yield from _stream_records(info, channel, "".join(nmi_suffixes), stream, grouped[(meter, channel)], updated)
    yield ["900"]


def write_nem12(
    intervals: Iterable[ExportInterval],
    meters: Mapping[str, MeterExportInfo],
    *,
    from_participant: str,
    to_participant: str,
    created: datetime,
    out: TextIO,
) -> None:
    """Write a NEM12 file to ``out`` (open it with ``newline=""``); nothing is written if the input is invalid."""
    records = nem12_records(intervals, meters, from_participant=from_participant,
                            to_participant=to_participant, created=created)
    first = next(records)  # runs all validation before any byte reaches ``out``
    out.write(",".join(first) + CRLF)
    for record in records:
        out.write(",".join(record) + CRLF)


def nem12_text(
    intervals: Iterable[ExportInterval],
    meters: Mapping[str, MeterExportInfo],
    *,
    from_participant: str,
    to_participant: str,
    created: datetime,
) -> str:
    """The NEM12 file as a string (CRLF line endings)."""
    buffer = io.StringIO(newline="")
    write_nem12(intervals, meters, from_participant=from_participant, to_participant=to_participant,
                created=created, out=buffer)
    return buffer.getvalue()
