"""Import and export channels in NEM12 (E1 and B1 streams of one NMI) and Green Button (flowDirection 1 and 19).

Built from intervals constructed here; the store-backed round trip (ledger → file → parser) is in
tests/reports/test_reports_export_channels.py.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
import zipfile
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nemreader import NEMFile

from gateway.channels import Channel
from gateway.export import ExportError, ExportInterval, MeterExportInfo, greenbutton_xml, nem12_text

CREATED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
NEM = timezone(timedelta(hours=10))
DAY0 = int(datetime(2026, 1, 1, tzinfo=NEM).timestamp())
ATOM = "{http://www.w3.org/2005/Atom}"
ESPI = "{http://naesb.org/espi}"
SOLAR = MeterExportInfo("pv", "NMI0000001", serial="SER1", export_nmi_suffix="B1")
PLAIN = MeterExportInfo("flat", "NMI0000002")


def _day(meter: str, channel: Channel, wh: int, day0: int = DAY0) -> list[ExportInterval]:
    return [ExportInterval(meter, day0 + i * 900, wh * (i % 5), "A", channel=channel) for i in range(96)]


def _nem12(intervals: list[ExportInterval], meters: dict[str, MeterExportInfo]) -> str:
    return nem12_text(intervals, meters, from_participant="GATEWAY", to_participant="RETAILER", created=CREATED)


def _rows(text: str) -> list[list[str]]:
    return [line.split(",") for line in text.split("\r\n") if line]


Parsed = dict[str, dict[str, list[tuple[int, int, str]]]]


def parse_nem12(tmp_path: Path, text: str, caplog: pytest.LogCaptureFixture) -> Parsed:
    """``{nmi: {suffix: [(start, Wh, quality), ...]}}`` as nemreader reads it, strictly (100 row required,
    and not one warning or error logged: a skipped or malformed record would only be logged)."""
    path = tmp_path / "export.zip"
    with zipfile.ZipFile(path, "w") as archive:  # nemreader closes zips, not plain files
        archive.writestr("export.csv", text)
    with caplog.at_level(logging.WARNING, logger="nemreader"):
        data = NEMFile(str(path), strict=True).nem_data()
    assert [r.getMessage() for r in caplog.records if r.name.startswith("nemreader")] == []
    out: Parsed = {}
    for nmi, suffixes in data.readings.items():
        for suffix, readings in suffixes.items():
            rows = out.setdefault(nmi, {}).setdefault(suffix, [])
            for r in readings:
                assert r.uom == "KWH"
                assert r.read_value is not None
                rows.append((int(r.t_start.replace(tzinfo=NEM).timestamp()), round(r.read_value * 1000),
                             r.quality_method or ""))
    return out


def test_one_meter_with_export_writes_e1_and_b1_streams_of_its_nmi() -> None:
    data = [*_day("pv", Channel.EXPORT, 300), *_day("pv", Channel.IMPORT, 100)]
    rows = _rows(_nem12(data, {"pv": SOLAR}))

    assert [r[0] for r in rows] == ["100", "200", "300", "200", "300", "900"]
    headers = [r for r in rows if r[0] == "200"]
    assert headers == [
        ["200", "NMI0000001", "E1B1", "B1", "B1", "N2", "SER1", "KWH", "15", ""],
        ["200", "NMI0000001", "E1B1", "E1", "E1", "N1", "SER1", "KWH", "15", ""],
    ]
    export_300, import_300 = (r for r in rows if r[0] == "300")
    assert export_300[2:7] == ["0.000", "0.300", "0.600", "0.900", "1.200"]
    assert import_300[2:7] == ["0.000", "0.100", "0.200", "0.300", "0.400"]


def test_configuration_names_b1_even_when_the_file_holds_only_import() -> None:
    rows = _rows(_nem12(_day("pv", Channel.IMPORT, 1), {"pv": SOLAR}))
    assert [r[1:6] for r in rows if r[0] == "200"] == [["NMI0000001", "E1B1", "E1", "E1", "N1"]]


def test_meter_without_export_is_written_as_before() -> None:
    rows = _rows(_nem12(_day("flat", Channel.IMPORT, 7), {"flat": PLAIN}))
    assert rows[1] == ["200", "NMI0000002", "E1", "E1", "E1", "N1", "", "KWH", "15", ""]
    assert len(rows) == 4


def test_export_intervals_for_a_meter_without_an_export_suffix_write_nothing() -> None:
    with pytest.raises(ExportError, match="no export NMI suffix: give it export_nmi_suffix"):
        _nem12(_day("flat", Channel.EXPORT, 1), {"flat": PLAIN})


def test_suffix_clashes_are_refused() -> None:
    with pytest.raises(ExportError, match="cannot share NMI suffix E1"):
        MeterExportInfo("x", "NMI0000001", export_nmi_suffix="E1")
    clash = {"pv": SOLAR, "other": MeterExportInfo("other", "NMI0000001", "B1", "B1")}
    with pytest.raises(ExportError, match="NMI NMI0000001 suffix B1"):
        _nem12(_day("pv", Channel.IMPORT, 1), clash)


def test_the_same_start_on_both_channels_is_two_values_not_a_duplicate() -> None:
    both = [ExportInterval("pv", DAY0, 5, "A"), ExportInterval("pv", DAY0, 6, "A", channel=Channel.EXPORT)]
    assert "appears more than once" not in _nem12(both, {"pv": SOLAR})
    with pytest.raises(ExportError, match=r"\(export\) appears more than once"):
        _nem12([*both, ExportInterval("pv", DAY0, 7, "A", channel=Channel.EXPORT)], {"pv": SOLAR})


def test_nemreader_reads_every_value_of_both_channels(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    imp = _day("pv", Channel.IMPORT, 111) + _day("pv", Channel.IMPORT, 13, DAY0 + 86_400)
    exp = _day("pv", Channel.EXPORT, 997)[30:70]  # daylight only: the rest of the day is N
    parsed = parse_nem12(tmp_path, _nem12([*exp, *imp, *_day("flat", Channel.IMPORT, 5)],
                                          {"pv": SOLAR, "flat": PLAIN}), caplog)

    assert sorted(parsed) == ["NMI0000001", "NMI0000002"]
    assert sorted(parsed["NMI0000001"]) == ["B1", "E1"]
    assert parsed["NMI0000001"]["E1"] == [(iv.start, iv.wh, "A") for iv in imp]
    expected_b1 = {iv.start: (iv.start, iv.wh, "A") for iv in exp}
    assert parsed["NMI0000001"]["B1"] == [expected_b1.get(DAY0 + i * 900, (DAY0 + i * 900, 0, "N")) for i in range(96)]
    assert parsed["NMI0000002"]["E1"] == [(iv.start, iv.wh, "A") for iv in _day("flat", Channel.IMPORT, 5)]


def _reading_types(root: ET.Element) -> dict[str, int]:
    found = {}
    for entry in root.findall(f"{ATOM}entry"):
        rt = entry.find(f"{ATOM}content/{ESPI}ReadingType")
        if rt is not None:
            links = entry.findall(f"{ATOM}link")
            self_link = next(link.attrib["href"] for link in links if link.attrib["rel"] == "self")
            found[self_link.rsplit("resource/", 1)[1]] = int(rt.findtext(f"{ESPI}flowDirection", ""))
    return found


def flow_per_reading(xml: bytes) -> dict[tuple[str, int], int]:
    """``{(meter reading path, interval start): flowDirection}`` for every IntervalReading, resolved the ESPI
    way: block → its MeterReading (the ``up`` link) → that reading's ``related`` ReadingType."""
    root = ET.fromstring(xml)
    entries = {}
    for entry in root.findall(f"{ATOM}entry"):
        links: dict[str, list[str]] = {}
        for link in entry.findall(f"{ATOM}link"):
            links.setdefault(link.attrib["rel"], []).append(link.attrib["href"])
        entries[links["self"][0]] = (entry, links)
    flow = {}
    for href, (entry, links) in entries.items():
        block = entry.find(f"{ATOM}content/{ESPI}IntervalBlock")
        if block is None:
            continue
        meter_reading = links["up"][0].rsplit("/IntervalBlock", 1)[0]
        _, mr_links = entries[meter_reading]
        (rt_href,) = [h for h in mr_links["related"] if "/ReadingType/" in h]
        rt = entries[rt_href][0].find(f"{ATOM}content/{ESPI}ReadingType")
        assert rt is not None, href
        direction = int(rt.findtext(f"{ESPI}flowDirection", ""))
        for reading in block.findall(f"{ESPI}IntervalReading"):
            flow[(meter_reading, int(reading.findtext(f"{ESPI}timePeriod/{ESPI}start", "")))] = direction
    return flow


def test_green_button_export_readings_carry_flow_direction_19() -> None:
    imp = _day("pv", Channel.IMPORT, 100)
    exp = _day("pv", Channel.EXPORT, 300)[40:60]
    xml = greenbutton_xml([*exp, *imp, *_day("flat", Channel.IMPORT, 5)], {"pv": SOLAR, "flat": PLAIN},
                          tz="Australia/Brisbane", created=CREATED)
    root = ET.fromstring(xml)

    assert _reading_types(root) == {"ReadingType/pv": 1, "ReadingType/pv/export": 19, "ReadingType/flat": 1}
    flow = flow_per_reading(xml)
    base = "https://gateway.invalid/espi/1_1/resource/UsagePoint"
    assert {k: v for k, v in flow.items() if k[0] == f"{base}/pv/MeterReading/2"} == {
        (f"{base}/pv/MeterReading/2", iv.start): 19 for iv in exp}
    assert {k: v for k, v in flow.items() if k[0] == f"{base}/pv/MeterReading/1"} == {
        (f"{base}/pv/MeterReading/1", iv.start): 1 for iv in imp}
    assert {v for k, v in flow.items() if "/flat/" in k[0]} == {1}
    assert len(flow) == len(imp) + len(exp) + 96
    # One UsagePoint per meter, however many channels it has.
    usage_points = [e for e in root.findall(f"{ATOM}entry") if e.find(f"{ATOM}content/{ESPI}UsagePoint") is not None]
    assert len(usage_points) == 2


def test_green_button_meter_with_only_export_data_has_only_the_export_reading() -> None:
    xml = greenbutton_xml(_day("pv", Channel.EXPORT, 3), {"pv": SOLAR}, tz="UTC", created=CREATED)
    assert _reading_types(ET.fromstring(xml)) == {"ReadingType/pv/export": 19}
    assert set(flow_per_reading(xml).values()) == {19}


_stream = st.dictionaries(st.integers(0, 2 * 96 - 1), st.integers(0, 3_000_000), max_size=120)


@given(imported=_stream, exported=_stream)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_both_channels_round_trip_through_nemreader_and_never_mix(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, imported: dict[int, int], exported: dict[int, int]
) -> None:
    data = [ExportInterval("pv", DAY0 + i * 900, wh, "A") for i, wh in imported.items()]
    data += [ExportInterval("pv", DAY0 + i * 900, wh, "A", channel=Channel.EXPORT) for i, wh in exported.items()]
    if not data:
        return
    parsed = parse_nem12(tmp_path, _nem12(data, {"pv": SOLAR}), caplog).get("NMI0000001", {})
    for suffix, values in (("E1", imported), ("B1", exported)):
        if not values:
            assert suffix not in parsed
            continue
        days = {i // 96 for i in values}
        assert parsed[suffix] == [(DAY0 + i * 900, values[i], "A") if i in values else (DAY0 + i * 900, 0, "N")
                                  for d in sorted(days) for i in range(d * 96, d * 96 + 96)]
