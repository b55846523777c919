"""Green Button: parse the feed back and check structure, values, qualities, timestamps and time zone."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from gateway.billing.period import local_midnight_utc
from gateway.export import ExportError, ExportInterval, MeterExportInfo, greenbutton_xml
from gateway.export.localtime import encode_rule, local_time_parameters

ATOM = "{http://www.w3.org/2005/Atom}"
ESPI = "{http://naesb.org/espi}"
CREATED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
METERS = {"m1": MeterExportInfo("m1", "NMI0000001"), "m2": MeterExportInfo("m2", "NMI0000002")}


def _midnight(day: date, tz: str) -> int:
    return int(local_midnight_utc(day, ZoneInfo(tz)).timestamp())


def _feed(intervals: list[ExportInterval], tz: str = "Europe/Berlin") -> ET.Element:
    data = greenbutton_xml(intervals, METERS, tz=tz, created=CREATED)
    assert data.startswith(b"<?xml version='1.0' encoding='utf-8'?>")
    return ET.fromstring(data)


def _content(root: ET.Element, kind: str) -> list[tuple[ET.Element, ET.Element]]:
    """``(entry, resource)`` for every entry whose content holds an ESPI ``kind`` resource."""
    out = []
    for entry in root.findall(f"{ATOM}entry"):
        resource = entry.find(f"{ATOM}content/{ESPI}{kind}")
        if resource is not None:
            out.append((entry, resource))
    return out


def _links(entry: ET.Element) -> dict[str, list[str]]:
    links: dict[str, list[str]] = {}
    for link in entry.findall(f"{ATOM}link"):
        links.setdefault(link.attrib["rel"], []).append(link.attrib["href"])
    return links


def _readings(block: ET.Element) -> list[tuple[int, int, int, int]]:
    """``(start, duration, value, quality)`` of every IntervalReading in a block."""
    return [
        (int(r.findtext(f"{ESPI}timePeriod/{ESPI}start", "")), int(r.findtext(f"{ESPI}timePeriod/{ESPI}duration", "")),
         int(r.findtext(f"{ESPI}value", "")), int(r.findtext(f"{ESPI}ReadingQuality/{ESPI}quality", "")))
        for r in block.findall(f"{ESPI}IntervalReading")
    ]


def test_feed_structure_namespaces_and_links() -> None:
    start = _midnight(date(2025, 6, 1), "Europe/Berlin")
    root = _feed([ExportInterval("m1", start, 5, "A"), ExportInterval("m2", start, 6, "A")])
    assert root.tag == f"{ATOM}feed"
    assert root.findtext(f"{ATOM}updated") == "2026-01-02T03:04:05Z"
    assert (root.findtext(f"{ATOM}id") or "").startswith("urn:uuid:")
    kinds = [next(iter(e.find(f"{ATOM}content") or [])).tag for e in root.findall(f"{ATOM}entry")]
    assert kinds == [f"{ESPI}{k}" for k in ["LocalTimeParameters",
                                             "UsagePoint", "MeterReading", "ReadingType", "IntervalBlock",
                                             "UsagePoint", "MeterReading", "ReadingType", "IntervalBlock"]]
    ids = [e.findtext(f"{ATOM}id") for e in root.findall(f"{ATOM}entry")]
    assert len(set(ids)) == len(ids)

    (up_entry, usage_point), _ = _content(root, "UsagePoint")
    assert usage_point.findtext(f"{ESPI}ServiceCategory/{ESPI}kind") == "0"
    links = _links(up_entry)
    assert links["self"] == ["https://gateway.invalid/espi/1_1/resource/UsagePoint/m1"]
    assert links["up"] == ["https://gateway.invalid/espi/1_1/resource/UsagePoint"]
    assert "https://gateway.invalid/espi/1_1/resource/UsagePoint/m1/MeterReading" in links["related"]
    (mr_entry, _), _ = _content(root, "MeterReading")
    assert "https://gateway.invalid/espi/1_1/resource/ReadingType/m1" in _links(mr_entry)["related"]
    (block_entry, _), _ = _content(root, "IntervalBlock")
    assert _links(block_entry)["self"] == [
        "https://gateway.invalid/espi/1_1/resource/UsagePoint/m1/MeterReading/1/IntervalBlock/2025-06-01"
    ]


def test_reading_type_is_15_minute_delivered_energy_in_wh() -> None:
    root = _feed([ExportInterval("m1", _midnight(date(2025, 6, 1), "UTC"), 5, "A")])
    (_, reading_type), = _content(root, "ReadingType")
    assert {child.tag.removeprefix(ESPI): int(child.text or "") for child in reading_type} == {
        "accumulationBehaviour": 4, "commodity": 1, "flowDirection": 1, "intervalLength": 900, "kind": 12,
        "powerOfTenMultiplier": 0, "uom": 72,
    }


def test_values_timestamps_and_quality_codes() -> None:
    tz = "America/Detroit"
    day0 = _midnight(date(2025, 6, 1), tz)
    data = [
        ExportInterval("m1", day0, 1234, "A"),
        ExportInterval("m1", day0 + 900, 50, "S", 54, 76),
        ExportInterval("m1", day0 + 1800, 60, "F", 17, 43),
        ExportInterval("m1", day0 + 2700, 70, "E", 52),
        ExportInterval("m1", day0 + 3600, 0, "N", reason=76),
        ExportInterval("m1", day0 + 86_400 - 900, 999_999, "A"),
    ]
    (_, block), = _content(_feed(data, tz), "IntervalBlock")
    assert block.findtext(f"{ESPI}interval/{ESPI}start") == str(day0)
    assert block.findtext(f"{ESPI}interval/{ESPI}duration") == "86400"
    assert _readings(block) == [
        (day0, 900, 1234, 0),
        (day0 + 900, 900, 50, 9),
        (day0 + 1800, 900, 60, 9),
        (day0 + 2700, 900, 70, 8),
        (day0 + 86_400 - 900, 900, 999_999, 0),  # the N interval is not a reading
    ]


@pytest.mark.parametrize(("day", "slots"), [(date(2025, 3, 30), 92), (date(2025, 10, 26), 100)])
def test_blocks_are_local_days_including_dst_days(day: date, slots: int) -> None:
    tz = "Europe/Berlin"
    start = _midnight(day, tz)
    data = [ExportInterval("m1", start + i * 900, i + 4, "A") for i in range(-4, slots + 4)]
    blocks = [b for _, b in _content(_feed(data, tz), "IntervalBlock")]
    assert len(blocks) == 3
    middle = blocks[1]
    assert middle.findtext(f"{ESPI}interval/{ESPI}start") == str(start)
    assert middle.findtext(f"{ESPI}interval/{ESPI}duration") == str(slots * 900)
    readings = _readings(middle)
    assert [r[0] for r in readings] == [start + i * 900 for i in range(slots)]
    assert [r[2] for r in readings] == [i + 4 for i in range(slots)]


@pytest.mark.parametrize(
    ("tz", "expected"),
    [
        ("America/Detroit", {"tzOffset": "-18000", "dstOffset": "3600", "dstStartRule": "360E2000",
                             "dstEndRule": "B40E2000"}),
        ("Europe/Berlin", {"tzOffset": "3600", "dstOffset": "3600", "dstStartRule": "3E0E2000",
                           "dstEndRule": "AE0E3000"}),
        ("Australia/Sydney", {"tzOffset": "36000", "dstOffset": "3600", "dstStartRule": "A40E2000",
                              "dstEndRule": "440E3000"}),
        ("Asia/Kolkata", {"tzOffset": "19800", "dstOffset": "0", "dstStartRule": "FFFFFFFF",
                          "dstEndRule": "FFFFFFFF"}),
    ],
)
def test_local_time_parameters(tz: str, expected: dict[str, str]) -> None:
    root = _feed([ExportInterval("m1", _midnight(date(2025, 6, 1), tz), 1, "A")], tz)
    (entry, ltp), = _content(root, "LocalTimeParameters")
    assert [c.tag.removeprefix(ESPI) for c in ltp] == ["dstEndRule", "dstOffset", "dstStartRule", "tzOffset"]
    assert {c.tag.removeprefix(ESPI): c.text for c in ltp} == expected
    (up_entry, _), = _content(root, "UsagePoint")
    assert _links(entry)["self"][0] in _links(up_entry)["related"]


def test_dst_rule_encoding_matches_the_published_us_example() -> None:
    # Green Button Alliance: 360E2000 = 2nd Sunday of March 02:00, B40E2000 = 1st Sunday of November 02:00.
    assert encode_rule(datetime(2025, 3, 9, 7, tzinfo=UTC), -5 * 3600) == "360E2000"
    assert encode_rule(datetime(2025, 11, 2, 6, tzinfo=UTC), -4 * 3600) == "B40E2000"
    dublin = local_time_parameters(ZoneInfo("Europe/Dublin"), 2025)  # tzdata models Irish winter as negative DST
    assert (dublin.tz_offset, dublin.dst_offset) == (0, 3600)


def test_output_is_deterministic_and_meters_without_data_are_left_out() -> None:
    data = [ExportInterval("m2", _midnight(date(2025, 6, 1), "UTC"), 1, "A")]
    first = greenbutton_xml(data, METERS, tz="UTC", created=CREATED)
    assert first == greenbutton_xml(list(reversed(data)), METERS, tz="UTC", created=CREATED)
    (entry, _), = _content(ET.fromstring(first), "UsagePoint")
    assert entry.findtext(f"{ATOM}title") == "m2 (NMI NMI0000002)"


def test_created_must_be_aware_and_meters_known() -> None:
    data = [ExportInterval("m1", 900, 1, "A")]
    with pytest.raises(ExportError, match="timezone-aware"):
        greenbutton_xml(data, METERS, tz="UTC", created=datetime(2026, 1, 1))  # noqa: DTZ001 - naive on purpose
    with pytest.raises(ExportError, match="no MeterExportInfo"):
        greenbutton_xml([ExportInterval("m9", 900, 1, "A")], METERS, tz="UTC", created=CREATED)
    other = datetime(2026, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    assert greenbutton_xml(data, METERS, tz="UTC", created=other) == greenbutton_xml(
        data, METERS, tz="UTC", created=CREATED)
