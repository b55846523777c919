"""NEM12: record shapes, NEM-time days, V days with 400 runs, and a round trip through nemreader."""

from __future__ import annotations

import io
import zipfile
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nemreader import NEMFile

from gateway.export import ExportError, ExportInterval, MeterExportInfo, nem12_text, write_nem12
from gateway.export.nem12 import format_value, nem_slot

CREATED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)  # 13:04:05 NEM time
NEM = timezone(timedelta(hours=10))
DAY = date(2026, 1, 1)
DAY0 = int(datetime(2026, 1, 1, tzinfo=NEM).timestamp())  # NEM midnight = 2025-12-31T14:00Z
METERS = {"m1": MeterExportInfo("m1", "NMI0000001", serial="SER1")}


def _text(intervals: list[ExportInterval], meters: dict[str, MeterExportInfo] | None = None) -> str:
    return nem12_text(intervals, meters or METERS, from_participant="GATEWAY", to_participant="RETAILER",
                      created=CREATED)


def _rows(text: str) -> list[list[str]]:
    return [line.split(",") for line in text.split("\r\n") if line]


def _full_day(wh: int = 1234, quality: str = "A", method: int | None = None, reason: int | None = None,
              day0: int = DAY0, meter: str = "m1") -> list[ExportInterval]:
    return [ExportInterval(meter, day0 + i * 900, wh + i, quality, method, reason) for i in range(96)]


def test_golden_records_for_an_actual_day() -> None:
    text = _text(_full_day())
    assert text.endswith("\r\n")
    assert "\n" not in text.replace("\r\n", "")
    lines = text.split("\r\n")[:-1]
    assert lines[0] == "100,NEM12,202601021304,GATEWAY,RETAILER"
    assert lines[1] == "200,NMI0000001,E1,E1,E1,N1,SER1,KWH,15,"
    row = lines[2].split(",")
    assert len(row) == 103
    assert row[:4] == ["300", "20260101", "1.234", "1.235"]
    assert row[97] == "1.329"
    assert row[98:] == ["A", "", "", "20260102130405", ""]
    assert lines[3] == "900"
    assert len(lines) == 4


def test_substituted_day_carries_method_and_reason_on_the_300_row() -> None:
    rows = _rows(_text(_full_day(quality="S", method=54, reason=76)))
    assert [r[0] for r in rows] == ["100", "200", "300", "900"]
    assert rows[2][98:101] == ["S54", "76", ""]


def test_mixed_day_is_v_with_one_400_per_run_and_null_gaps() -> None:
    day = _full_day()
    day[10:14] = [ExportInterval("m1", iv.start, 50, "S", 54, 76) for iv in day[10:14]]
    day[20:22] = [ExportInterval("m1", iv.start, 0, "E", 52, 0, "meter swap") for iv in day[20:22]]
    del day[40:48]  # two hours missing
    rows = _rows(_text(day))
    assert [r[0] for r in rows] == ["100", "200", "300", "400", "400", "400", "400", "400", "400", "400", "900"]
    assert rows[2][98:101] == ["V", "", ""], "a V row must not carry a reason"
    assert rows[2][2 + 40:2 + 48] == ["0.000"] * 8
    assert [r[1:] for r in rows[3:10]] == [
        ["1", "10", "A", "", ""],
        ["11", "14", "S54", "76", ""],
        ["15", "20", "A", "", ""],
        ["21", "22", "E52", "0", "meter swap"],
        ["23", "40", "A", "", ""],
        ["41", "48", "N", "", ""],
        ["49", "96", "A", "", ""],
    ]
    assert all(len(r) == 6 for r in rows[3:10])


def test_days_follow_nem_time_not_utc_or_site_time() -> None:
    # 13:45Z is 23:45 NEM time (slot 95); 14:00Z is midnight NEM time (slot 0 of the next day).
    assert nem_slot(int(datetime(2026, 1, 1, 13, 45, tzinfo=UTC).timestamp())) == (date(2026, 1, 1), 95)
    assert nem_slot(int(datetime(2026, 1, 1, 14, 0, tzinfo=UTC).timestamp())) == (date(2026, 1, 2), 0)
    # No DST in NEM time: a Sydney DST change day still has 96 values in one row.
    sydney_change = int(datetime(2025, 10, 5, tzinfo=NEM).timestamp())
    rows = _rows(_text(_full_day(day0=sydney_change)))
    assert [r[1] for r in rows if r[0] == "300"] == ["20251005"]


def test_days_without_data_are_omitted_and_days_are_sorted() -> None:
    later = _full_day(day0=DAY0 + 3 * 86_400)
    earlier = [ExportInterval("m1", DAY0 + 5 * 900, 7, "A")]
    rows = _rows(_text([*later, *earlier]))
    assert [r[1] for r in rows if r[0] == "300"] == ["20260101", "20260104"]


@pytest.mark.parametrize(
    ("wh", "text"),
    [(0, "0.000"), (1, "0.001"), (999, "0.999"), (1000, "1.000"), (1001, "1.001"), (123_456_789, "123456.789")],
)
def test_kwh_values_are_exact(wh: int, text: str) -> None:
    assert format_value(wh) == text
    assert format_value(wh, "WH") == str(wh)


def test_two_channels_on_one_nmi_share_the_configuration() -> None:
    meters = {
        "import": MeterExportInfo("import", "NMI0000001", "E1", "E1", "SER1"),
        "export": MeterExportInfo("export", "NMI0000001", "B1", "B1", "SER1"),
        "other": MeterExportInfo("other", "NMI0000002"),
    }
    data = [*_full_day(meter="export"), *_full_day(meter="import"), *_full_day(meter="other")]
    headers = [r for r in _rows(_text(data, meters)) if r[0] == "200"]
    assert [r[1:7] for r in headers] == [
        ["NMI0000001", "E1B1", "B1", "B1", "N2", "SER1"],
        ["NMI0000001", "E1B1", "E1", "E1", "N1", "SER1"],
        ["NMI0000002", "E1", "E1", "E1", "N1", ""],
    ]


def test_created_is_written_in_nem_time() -> None:
    berlin = datetime(2026, 6, 30, 18, 0, tzinfo=timezone(timedelta(hours=2)))  # 16:00Z = 02:00 next day NEM
    text = nem12_text(_full_day(), METERS, from_participant="A", to_participant="B", created=berlin)
    assert text.startswith("100,NEM12,202607010200,A,B\r\n")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"created": datetime(2026, 1, 1)}, "timezone-aware"),  # noqa: DTZ001 - the naive value under test
        ({"from_participant": "A,B"}, "participant"),
        ({"to_participant": ""}, "participant"),
        ({"to_participant": "ELEVENCHARS"}, "participant"),
    ],
)
def test_bad_header_arguments_write_nothing(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"from_participant": "A", "to_participant": "B", "created": CREATED} | kwargs
    out = io.StringIO()
    with pytest.raises(ExportError, match=message):
        write_nem12(_full_day(), METERS, out=out, **args)  # type: ignore[arg-type]
    assert out.getvalue() == ""


def test_bad_data_writes_nothing() -> None:
    out = io.StringIO()
    data = [*_full_day(), ExportInterval("m1", DAY0, 1, "A")]
    with pytest.raises(ExportError, match="more than once"):
        write_nem12(data, METERS, from_participant="A", to_participant="B", created=CREATED, out=out)
    with pytest.raises(ExportError, match="no MeterExportInfo"):
        write_nem12([ExportInterval("ghost", DAY0, 1, "A")], METERS, from_participant="A", to_participant="B",
                    created=CREATED, out=out)
    assert out.getvalue() == ""


def test_two_meters_with_the_same_nmi_suffix_are_refused() -> None:
    meters = {"a": MeterExportInfo("a", "NMI0000001"), "b": MeterExportInfo("b", "NMI0000001")}
    with pytest.raises(ExportError, match="suffix E1"):
        _text(_full_day(meter="a"), meters)


# --- round trip through the independent nemreader parser -------------------------------------------------------


def _parse(tmp_path: Path, text: str) -> dict[str, dict[str, list[tuple[int, int, str, str, str]]]]:
    # nemreader leaves a plain CSV file open (a ResourceWarning, an error under filterwarnings=error)
    # but closes zipped files, which it reads through the same parser: so hand it a zip.
    path = tmp_path / "export.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("export.csv", text)
    data = NEMFile(str(path), strict=True).nem_data()
    assert data.header.version_header == "NEM12"
    assert (data.header.from_participant, data.header.to_participant) == ("GATEWAY", "RETAILER")
    out: dict[str, dict[str, list[tuple[int, int, str, str, str]]]] = {}
    for nmi, channels in data.readings.items():
        for suffix, readings in channels.items():
            rows = out.setdefault(nmi, {}).setdefault(suffix, [])
            for r in readings:
                start = int(r.t_start.replace(tzinfo=NEM).timestamp())  # nemreader gives naive NEM time
                assert r.t_end - r.t_start == timedelta(minutes=15)
                assert r.read_value is not None
                rows.append((start, round(r.read_value * 1000), r.quality_method or "", r.event_code or "",
                             r.event_desc or ""))
    return out


def _expected(intervals: list[ExportInterval]) -> list[tuple[int, int, str, str, str]]:
    """What the file must say for every slot of every NEM day that has data: gaps are 0 Wh, quality N."""
    by_start = {iv.start: iv for iv in intervals}
    days = sorted({nem_slot(iv.start)[0] for iv in intervals})
    rows = []
    for day in days:
        day0 = int(datetime(day.year, day.month, day.day, tzinfo=NEM).timestamp())
        for start in range(day0, day0 + 86_400, 900):
            iv = by_start.get(start)
            if iv is None:
                rows.append((start, 0, "N", "", ""))
            else:
                reason = "" if iv.reason is None else str(iv.reason)
                rows.append((start, iv.wh, iv.quality_method, reason, iv.reason_text))
    return rows


def test_nemreader_reads_back_values_and_qualities_of_a_v_day(tmp_path: Path) -> None:
    day = _full_day()
    day[10:14] = [ExportInterval("m1", iv.start, 50, "S", 54, 76) for iv in day[10:14]]
    day[30] = ExportInterval("m1", day[30].start, 0, "F", 17, 43, "storm")
    del day[60:70]
    text = _text(day)
    assert ",V,," in text
    assert "\r\n400,61,70,N,,\r\n" in text
    parsed = _parse(tmp_path, text)
    assert list(parsed) == ["NMI0000001"]
    assert parsed["NMI0000001"]["E1"] == _expected(day)


def test_nemreader_reads_back_several_meters_and_days(tmp_path: Path) -> None:
    meters = {"a": MeterExportInfo("a", "NMI000000A", serial="S1"), "b": MeterExportInfo("b", "NMI000000B")}
    data = [*_full_day(meter="a"), *_full_day(7, "S", 54, 76, day0=DAY0 + 86_400, meter="a"),
            ExportInterval("b", DAY0 + 95 * 900, 999_999, "A")]
    parsed = _parse(tmp_path, _text(data, meters))
    assert parsed["NMI000000A"]["E1"] == _expected([iv for iv in data if iv.meter == "a"])
    assert parsed["NMI000000B"]["E1"] == _expected([iv for iv in data if iv.meter == "b"])


_cells = st.one_of(
    st.tuples(st.just("A"), st.none(), st.none()),
    st.tuples(st.sampled_from(["S", "F", "E"]), st.sampled_from([52, 54, 17]), st.sampled_from([None, 43, 76, 89])),
    st.tuples(st.just("N"), st.none(), st.none()),
)


@given(st.dictionaries(st.integers(0, 3 * 96 - 1), st.tuples(st.integers(0, 5_000_000), _cells), min_size=1,
                       max_size=150))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_nemreader_round_trip_property(
    tmp_path: Path, slots: dict[int, tuple[int, tuple[str, int | None, int | None]]]
) -> None:
    data = [ExportInterval("m1", DAY0 + i * 900, 0 if q == "N" else wh, q, m, r)
            for i, (wh, (q, m, r)) in slots.items()]
    parsed = _parse(tmp_path, _text(data))
    assert parsed["NMI0000001"]["E1"] == _expected(data)
