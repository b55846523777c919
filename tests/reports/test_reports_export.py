"""``meter-gateway export nem12|greenbutton`` from the stored intervals, read back by independent parsers."""

from __future__ import annotations

import xml.etree.ElementTree as ET
import zipfile
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from nemreader import NEMFile

from gateway.reports.service import nem_days
from tests.reports.conftest import (
    DEC_1,
    NMI_HOUSE,
    NMI_SHED,
    SHED_GAP,
    SHED_WH,
    Cli,
    Site,
    house_register,
)

NEM = timezone(timedelta(hours=10))
ESPI = "{http://naesb.org/espi}"


def _nemreader(tmp_path: Path, text: str) -> dict[str, dict[int, tuple[int, str]]]:
    """NMI -> interval start (Unix s) -> (Wh, quality method), parsed strictly by nemreader."""
    path = tmp_path / "export.zip"  # nemreader closes zipped files (a plain CSV would leak a handle)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("export.csv", text)
    data = NEMFile(str(path), strict=True).nem_data()
    assert data.header.version_header == "NEM12"
    assert (data.header.from_participant, data.header.to_participant) == ("GATEWAY", "RETAILER")
    out: dict[str, dict[int, tuple[int, str]]] = {}
    for nmi, channels in data.readings.items():
        assert list(channels) == ["E1"]
        for r in channels["E1"]:
            assert r.t_end - r.t_start == timedelta(minutes=15)
            assert r.read_value is not None
            start = int(r.t_start.replace(tzinfo=NEM).timestamp())
            out.setdefault(nmi, {})[start] = (round(r.read_value * 1000), r.quality_method or "")
    return out


def test_nem12_export_round_trips_through_nemreader_with_each_meters_nmi(site: Site, gateway_cli: Cli,
                                                                         tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    target = out_dir / "december.csv"
    code, out, err = gateway_cli(["export", "nem12", "--config", str(site.config_path), "--from", "2025-12-01",
                                  "--to", "2025-12-08", "--output", str(target)])
    assert code == 0, err
    assert not out
    raw = target.read_bytes()
    assert raw.startswith(b"100,NEM12,")
    assert raw.endswith(b"900\r\n")
    assert [p.name for p in out_dir.iterdir()] == ["december.csv"], "no temporary file left behind"
    parsed = _nemreader(tmp_path, raw.decode("ascii"))
    assert set(parsed) == {NMI_HOUSE, NMI_SHED}, "pv has no NMI and is left out"

    week_start = int(DEC_1.timestamp())
    nem_from, nem_to = nem_days(DEC_1, DEC_1 + timedelta(days=7))
    first, last = int(nem_from.timestamp()), int(nem_to.timestamp())
    assert first <= week_start
    assert last >= week_start + 7 * 86_400
    house = {s: v for s, v in parsed[NMI_HOUSE].items() if v[1] != "N"}
    assert sorted(house) == list(range(first, last, 900)), "the whole NEM days (UTC+10) covering the local week"
    base = (first - int(datetime(2025, 11, 30, 5, tzinfo=UTC).timestamp())) // 900
    for k, start in enumerate(sorted(house)):
        assert house[start] == (house_register(base + k + 1) - house_register(base + k), "A")

    shed = parsed[NMI_SHED]
    gap = range(int(SHED_GAP[0].timestamp()), int(SHED_GAP[1].timestamp()), 900)
    assert all(shed[s][0] == SHED_WH for s in gap), "energy across the gap is shared out, never lost"
    assert {shed[s][1][0] for s in gap} <= {"E", "S"}
    assert all(len(shed[s][1]) == 3 for s in gap), "estimated intervals carry a NEM12 method"
    assert {v[1] for s, v in shed.items() if s not in gap and first <= s < last} == {"A"}


def test_nem12_to_stdout_for_one_meter(site: Site, gateway_cli: Cli, tmp_path: Path) -> None:
    code, out, _ = gateway_cli(["export", "nem12", "--config", str(site.config_path), "--from", "2025-12-02",
                                "--to", "2025-12-03", "--meter", "house"])
    assert code == 0
    rows = [line.split(",") for line in out.split("\r\n") if line]
    assert [r[0] for r in rows if r[0] in ("100", "200", "900")] == ["100", "200", "900"]
    header = next(r for r in rows if r[0] == "200")
    assert header[1:5] == [NMI_HOUSE, "E1", "E1", "E1"]
    assert header[7:9] == ["KWH", "15"]
    assert set(_nemreader(tmp_path, out)) == {NMI_HOUSE}


def test_nem12_of_a_meter_without_nmi_is_a_config_error(site: Site, gateway_cli: Cli, tmp_path: Path) -> None:
    target = tmp_path / "pv.csv"
    code, _, err = gateway_cli(["export", "nem12", "--config", str(site.config_path), "--from", "2025-12-01",
                                "--to", "2025-12-02", "--meter", "pv", "--output", str(target)])
    assert code == 2
    assert "meter 'pv' has no NMI" in err
    assert not target.exists()


def test_green_button_export_holds_the_stored_wh_per_local_day(site: Site, gateway_cli: Cli, tmp_path: Path) -> None:
    target = tmp_path / "gb.xml"
    code, _, err = gateway_cli(["export", "greenbutton", "--config", str(site.config_path), "--from", "2025-12-05",
                                "--to", "2025-12-06", "--meter", "shed", "--output", str(target)])
    assert code == 0, err
    root = ET.fromstring(target.read_bytes())
    blocks = root.findall(f".//{ESPI}IntervalBlock")
    assert len(blocks) == 1, "one local day, one block"
    readings = blocks[0].findall(f"{ESPI}IntervalReading")
    assert len(readings) == 96
    assert {int(r.findtext(f"{ESPI}value", "")) for r in readings} == {SHED_WH}
    qualities = [int(r.findtext(f"{ESPI}ReadingQuality/{ESPI}quality", "")) for r in readings]
    assert qualities.count(0) == 96 - 8, "the two-hour gap is 8 estimated intervals"
    assert int(blocks[0].findtext(f"{ESPI}interval/{ESPI}start", "")) == int(SHED_GAP[0].replace(hour=0).timestamp())


def test_an_unwritable_output_is_a_failure_not_a_traceback(site: Site, gateway_cli: Cli, tmp_path: Path) -> None:
    code, _, err = gateway_cli(["export", "greenbutton", "--config", str(site.config_path), "--from", "2025-12-01",
                                "--to", "2025-12-02", "--output", str(tmp_path / "missing" / "gb.xml")])
    assert code == 1
    assert "cannot write" in err
