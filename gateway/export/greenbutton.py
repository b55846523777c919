"""Green Button (ESPI, NAESB REQ.21) Atom feed of 15-minute interval energy (pure).

Shape (FIELD_NOTES "Green Button"): one Atom ``feed``; one ``LocalTimeParameters`` entry for the
site zone; per meter with data a ``UsagePoint`` (ServiceCategory kind 0, electricity), its
``MeterReading``, a ``ReadingType`` and one ``IntervalBlock`` per *local* day of the site zone.
Resources are tied together the ESPI way, by Atom ``self``/``up``/``related`` links.

Choices:

* One ``MeterReading`` with its own ``ReadingType`` per channel (``gateway.channels``) of a meter:
  import is ``MeterReading/1`` with ``ReadingType/<meter>`` and flowDirection 1 (forward: delivered
  to the customer); export is ``MeterReading/2`` with ``ReadingType/<meter>/export`` and
  flowDirection 19 (reverse: received from the customer). The numbers are fixed per channel, not
  positions, so a resource keeps its id whether or not the other channel has data in a feed. A
  meter without export data gives exactly the feed it gave before channels existed.
* ReadingType: accumulationBehaviour 4 (delta data: each value is the energy *in* its interval),
  commodity 1 (electricity, secondary metered), flowDirection as above, intervalLength 900,
  kind 12 (energy), powerOfTenMultiplier 0 and uom 72 (Wh), so ``value`` is exactly the ledger's
  integer Wh with no scaling to get wrong.
* IntervalBlock ``interval`` is the local day as a UTC range (``start`` the local midnight in epoch
  seconds, ``duration`` 82800/86400/90000 s on DST days), so a block is what a customer calls "a
  day" and its readings are never split across two blocks.
* IntervalReading ``timePeriod`` is ``{duration 900, start epoch seconds UTC}``; ``value`` integer Wh.
* ReadingQuality: NEM12 ``A`` → 0 (valid: the value passed the gateway's validity and plausibility
  checks; 14 "raw" would claim it had not). ``E``/``S``/``F`` → 9 (estimated using linear
  interpolation) when the NEM12 method is linear (17 or 54), otherwise 8 (estimated using a
  reference day): ESPI's only other estimate code, 12 "projected", means a forecast of future use,
  which none of these values is. ``N`` (null) intervals and missing intervals produce *no*
  IntervalReading: ESPI has no "no data" quality, and a 0 Wh reading would be read as a measurement.
* Links point under ``base_url`` (default ``https://gateway.invalid/espi/1_1/resource``, a
  reserved non-resolvable host, because a file export has no server behind it). Resource ids are
  the meter name, the ISO date and the zone name, and entry ids are UUIDv5 of the self link, so
  exporting the same data twice yields identical ids and a consumer can de-duplicate.
* LocalTimeParameters: see ``gateway.export.localtime`` for how a tzdata zone is squeezed into
  ESPI's one-rule-per-year model.
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from urllib.parse import quote
from zoneinfo import ZoneInfo

from gateway.billing.period import local_midnight_utc, zone_for
from gateway.channels import Channel
from gateway.export.localtime import local_time_parameters
from gateway.export.model import ExportError, ExportInterval, MeterExportInfo, group_by_stream
from gateway.intervals.aggregate import local_day_of
from gateway.intervals.engine import INTERVAL_S

ATOM_NS = "http://www.w3.org/2005/Atom"
ESPI_NS = "http://naesb.org/espi"
DEFAULT_BASE_URL = "https://gateway.invalid/espi/1_1/resource"

FLOW_DIRECTION: dict[Channel, int] = {Channel.IMPORT: 1, Channel.EXPORT: 19}
"""ESPI flowDirection per channel: 1 forward (delivered to the customer), 19 reverse (received from them)."""

METER_READING_ID: dict[Channel, int] = {Channel.IMPORT: 1, Channel.EXPORT: 2}


def reading_type(channel: Channel) -> tuple[tuple[str, int], ...]:
    """ReadingType fields in ESPI schema order (the XSD is a sequence) for ``channel``."""
    return (
        ("accumulationBehaviour", 4),
        ("commodity", 1),
        ("flowDirection", FLOW_DIRECTION[channel]),
        ("intervalLength", INTERVAL_S),
        ("kind", 12),
        ("powerOfTenMultiplier", 0),
        ("uom", 72),
    )


READING_TYPE = reading_type(Channel.IMPORT)
"""The import channel's ReadingType."""

QUALITY_VALID = 0
QUALITY_ESTIMATED_REFERENCE_DAY = 8
QUALITY_ESTIMATED_LINEAR = 9
LINEAR_METHODS = frozenset({17, 54})
"""NEM12 methods that are linear interpolation (17 for type 1-4 meters, 54 for type 5-7)."""



def reading_quality(iv: ExportInterval) -> int | None:
    """ESPI QualityOfReading code for an interval, or ``None`` when it must not be exported (N)."""
    if iv.quality == "A":
        return QUALITY_VALID
    if iv.quality == "N":
        return None
    return QUALITY_ESTIMATED_LINEAR if iv.method in LINEAR_METHODS else QUALITY_ESTIMATED_REFERENCE_DAY


# Names are written already prefixed and the namespaces declared as plain attributes on the root.
# ElementTree's own namespace handling would need either ET.register_namespace (process-global
# state shared with every other user of ElementTree) or default_namespace=, which in Python 3.11
# refuses the unqualified attributes Atom uses (<link rel= href=>). The output is the same XML:
# Atom as the default namespace, ESPI as "espi:", exactly as Green Button sample files spell it.
def _a(tag: str) -> str:
    return tag


def _e(tag: str) -> str:
    return f"espi:{tag}"


def _sub(parent: ET.Element, tag: str, text: object = None) -> ET.Element:
    child = ET.SubElement(parent, tag)
    if text is not None:
        child.text = str(text)
    return child


def _rfc3339(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Feed:
    """Builds entries with consistent ids, links and timestamps."""

    def __init__(self, base_url: str, updated: str) -> None:
        self.base = base_url.rstrip("/")
        self.updated = updated
        self.root = ET.Element(_a("feed"), {"xmlns": ATOM_NS, "xmlns:espi": ESPI_NS})
        _sub(self.root, _a("id"), self._urn("feed"))
        _sub(self.root, _a("title"), "Green Button interval data")
        _sub(self.root, _a("updated"), updated)

    def _urn(self, path: str) -> str:
        return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'{self.base}/{path}')}"

    def entry(self, path: str, title: str, related: Iterable[str] = ()) -> ET.Element:
        """Add an entry for resource ``path``; return its ``content`` element to fill."""
        entry = _sub(self.root, _a("entry"))
        _sub(entry, _a("id"), self._urn(path))
        ET.SubElement(entry, _a("link"), rel="self", href=f"{self.base}/{path}")
        ET.SubElement(entry, _a("link"), rel="up", href=f"{self.base}/{path.rsplit('/', 1)[0]}")
        for target in related:
            ET.SubElement(entry, _a("link"), rel="related", href=f"{self.base}/{target}")
        _sub(entry, _a("title"), title)
        content = _sub(entry, _a("content"))
        _sub(entry, _a("published"), self.updated)
        _sub(entry, _a("updated"), self.updated)
        return content


def _interval_block(content: ET.Element, day: date, zone_key: str, readings: list[ExportInterval]) -> None:
    zone = zone_for(zone_key)
    start = local_midnight_utc(day, zone)
    end = local_midnight_utc(day + timedelta(days=1), zone)
    block = _sub(content, _e("IntervalBlock"))
    interval = _sub(block, _e("interval"))
    _sub(interval, _e("duration"), int((end - start).total_seconds()))
    _sub(interval, _e("start"), int(start.timestamp()))
    for iv in readings:
        reading = _sub(block, _e("IntervalReading"))
        quality = _sub(reading, _e("ReadingQuality"))
        _sub(quality, _e("quality"), reading_quality(iv))
        period = _sub(reading, _e("timePeriod"))
        _sub(period, _e("duration"), INTERVAL_S)
        _sub(period, _e("start"), iv.start)
        _sub(reading, _e("value"), iv.wh)


def _meter_reading(feed: _Feed, meter: str, up: str, channel: Channel, readings: list[ExportInterval],
                   zone: ZoneInfo, tz: str) -> None:
    """One channel of a meter: its MeterReading, ReadingType and one IntervalBlock per local day."""
    mr = f"{up}/MeterReading/{METER_READING_ID[channel]}"
    rt = f"ReadingType/{quote(meter, safe='')}" + ("" if channel is Channel.IMPORT else f"/{channel.value}")
    what = "interval energy" if channel is Channel.IMPORT else "exported interval energy"
    unit = "15-minute energy, Wh" if channel is Channel.IMPORT else "15-minute exported energy, Wh"
    _sub(feed.entry(mr, f"{meter} {what}", [f"{mr}/IntervalBlock", rt]), _e("MeterReading"))
    type_element = _sub(feed.entry(rt, f"{meter} {unit}"), _e("ReadingType"))
    for name, value in reading_type(channel):
        _sub(type_element, _e(name), value)
    days: dict[date, list[ExportInterval]] = {}
    for iv in readings:
        days.setdefault(local_day_of(iv.start, zone), []).append(iv)
    for day, day_readings in days.items():
        content = feed.entry(f"{mr}/IntervalBlock/{day.isoformat()}", f"{meter} {day.isoformat()}")
        _interval_block(content, day, tz, day_readings)


def greenbutton_xml(
    intervals: Iterable[ExportInterval],
    meters: Mapping[str, MeterExportInfo],
    *,
    tz: str,
    created: datetime,
    base_url: str = DEFAULT_BASE_URL,
) -> bytes:
    """The Green Button feed as UTF-8 XML bytes with an XML declaration."""
    if created.utcoffset() is None:
        raise ExportError(f"created {created!r} must be timezone-aware")
    zone = zone_for(tz)
    grouped = group_by_stream(intervals, meters)
    streams = {key: [iv for iv in data.values() if reading_quality(iv) is not None] for key, data in grouped.items()}
    first_starts = [ivs[0].start for ivs in streams.values() if ivs]
    reference = datetime.fromtimestamp(min(first_starts), UTC) if first_starts else created
    feed = _Feed(base_url, _rfc3339(created))

    ltp_path = f"LocalTimeParameters/{quote(tz, safe='')}"
    params = local_time_parameters(zone, reference.astimezone(zone).year)
    ltp = _sub(feed.entry(ltp_path, f"Local time parameters for {tz}"), _e("LocalTimeParameters"))
    _sub(ltp, _e("dstEndRule"), params.dst_end_rule)
    _sub(ltp, _e("dstOffset"), params.dst_offset)
    _sub(ltp, _e("dstStartRule"), params.dst_start_rule)
    _sub(ltp, _e("tzOffset"), params.tz_offset)

    by_meter: dict[str, list[tuple[Channel, list[ExportInterval]]]] = {}
    for (meter, channel), readings in streams.items():
        if readings:
            by_meter.setdefault(meter, []).append((channel, readings))
    for meter, channels in by_meter.items():
        info = meters[meter]
        up = f"UsagePoint/{quote(meter, safe='')}"
        usage_point = _sub(feed.entry(up, f"{meter} (NMI {info.nmi})", [f"{up}/MeterReading", ltp_path]),
                           _e("UsagePoint"))
        _sub(_sub(usage_point, _e("ServiceCategory")), _e("kind"), 0)
        for channel, readings in channels:
            _meter_reading(feed, meter, up, channel, readings, zone, tz)

    return bytes(ET.tostring(feed.root, encoding="utf-8", xml_declaration=True))
