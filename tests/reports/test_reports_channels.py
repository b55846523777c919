"""A prosumer's export channel through the reports, from a real SQLite ledger filled by the real engine.

Meter ``solar`` imports exactly the seed's 850 kWh in December 2025 (America/Detroit) and exports 250 Wh in
every quarter hour from 10:00 to 16:00 local: 24 × 250 = 6 kWh a day, 186 kWh in December. Its tariff is
the seed tariff plus a flat feed-in of $0.05/kWh, so its December bill is::

    charges   15.00 + 50.00 + 42.00 + 1.06 + 7.00 = 115.06   (the seed bill, unchanged)
    feed-in   186 kWh × 0.05 = 9.30                          (a credit line of -9.30)
    net       115.06 - 9.30 = 105.76

Meter ``plain`` has the same import and no export: its bill, files and API answers are as before.
NEM12 files are parsed strictly by ``nemreader``, Green Button feeds with ElementTree, and every value is
compared with the stored intervals of its channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import sqlite3
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from gateway import identity
from gateway.billing import BillingPeriod
from gateway.channels import Channel
from gateway.clock import ManualClock
from gateway.config import GatewayConfig, load_config
from gateway.intervals import Reading
from gateway.ledger.store import DB_FILE, Ledger, StoredInterval
from gateway.reports.bills import get_bill, issue_bill, verify_bill
from gateway.reports.service import nem_days
from gateway.reports.source import ReadOnlyLedger
from gateway.reports.web import report_routes
from gateway.status import GatewayStatus, MeterStatus
from gateway.web.app import WebContext, create_app
from gateway.web.auth import load_or_create_token
from gateway.web.server import serving
from tests.export.test_export_channels import flow_per_reading, parse_nem12
from tests.reports.conftest import DEC_1, END, JAN_1, START, TZ, ZONE, Cli, _ts, house_register

NMI_SOLAR = "NMI0000009"
NMI_PLAIN = "NMI0000008"
EXPORT_WH = 250
DAYLIGHT = range(10, 16)
DECEMBER_EXPORT_WH = 31 * 24 * EXPORT_WH
DECEMBER = ["--from", "2025-12-01", "--to", "2026-01-01"]
NEM = timezone(timedelta(hours=10))
ATOM = "{http://www.w3.org/2005/Atom}"
ESPI = "{http://naesb.org/espi}"
AS_OF = datetime(2025, 12, 16, tzinfo=ZONE)
NOW = datetime(2026, 1, 5, 12, tzinfo=UTC)
SEED_LINES = [("Readiness to Serve", 1500), ("Usage Tier 1", 5000), ("Usage Tier 2", 4200),
              ("PSCR Surcharge", 106), ("SAF Surcharge", 700)]

CONFIG = '''
gateway_id = "gw-test-channels"
site_timezone = "{tz}"
data_dir = "{data}"

[[buses]]
name = "main"
host = "127.0.0.1"

  [[buses.meters]]
  id = "solar"
  unit_id = 1
  profile = "eastron-sdm630"
  nmi = "{solar}"
  tariff = "solar"

  [[buses.meters]]
  id = "plain"
  unit_id = 2
  profile = "eastron-sdm630"
  nmi = "{plain}"
  tariff = "seed"

[billing]
period_start_day = 1
nem12_from_participant = "GATEWAY"
nem12_to_participant = "RETAILER"

[tariffs.seed]
name = "Residential (seed bill)"
currency = "USD"
fixed_charges = [{{ label = "Readiness to Serve", amount = "15.00" }}]
kwh_surcharges = [{{ label = "PSCR Surcharge", rate = "0.00125" }}]
fixed_surcharges = [{{ label = "SAF Surcharge", amount = "7.00" }}]
energy = {{ kind = "tiered", tiers = [{{ up_to_kwh = "500", rate = "0.10" }}, {{ rate = "0.12" }}] }}

[tariffs.solar]
name = "Residential with solar"
currency = "USD"
fixed_charges = [{{ label = "Readiness to Serve", amount = "15.00" }}]
kwh_surcharges = [{{ label = "PSCR Surcharge", rate = "0.00125" }}]
fixed_surcharges = [{{ label = "SAF Surcharge", amount = "7.00" }}]
energy = {{ kind = "tiered", tiers = [{{ up_to_kwh = "500", rate = "0.10" }}, {{ rate = "0.12" }}] }}
feed_in = {{ label = "Solar feed-in", rate = "0.05" }}
'''


def _daylight(start: int) -> bool:
    return datetime.fromtimestamp(start, UTC).astimezone(ZONE).hour in DAYLIGHT


def readings() -> list[Reading]:
    n = (_ts(END) - _ts(START)) // 900
    out: list[Reading] = []
    exported = 2_000_000
    for i in range(n + 1):
        t = _ts(START) + 900 * i
        if i and _daylight(t - 900):
            exported += EXPORT_WH  # the interval that just ended was in daylight
        out.append(Reading("solar", t * 1000, house_register(i)))
        out.append(Reading("solar", t * 1000, exported, channel=Channel.EXPORT))
        out.append(Reading("plain", t * 1000, house_register(i)))
    return out


@dataclass(frozen=True)
class Site:
    data_dir: Path
    config_path: Path

    @property
    def cfg(self) -> GatewayConfig:
        return load_config(self.config_path)


def _write_config(root: Path, data: Path) -> Path:
    path = root / "gateway.toml"
    path.write_text(CONFIG.format(tz=TZ, data=data, solar=NMI_SOLAR, plain=NMI_PLAIN), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    root = tmp_path_factory.mktemp("channels")
    data = root / "data"

    async def fill() -> None:
        ledger = await Ledger.open(data, gateway_id="gw-test-channels", keypair=identity.load_or_create(data))
        try:
            await ledger.commit_readings(readings(), now_ms=_ts(END) * 1000)
        finally:
            await ledger.close()

    asyncio.run(fill())
    return Site(data, _write_config(root, data))


def stored(site: Site, meter: str, start: int, end: int, channel: Channel) -> list[StoredInterval]:
    async def read() -> list[StoredInterval]:
        async with await ReadOnlyLedger.open(site.data_dir) as ledger:
            return await ledger.stored_intervals(meter, start, end, channel=channel)

    return asyncio.run(read())


def test_the_ledger_holds_both_channels_of_solar_and_only_import_of_plain(site: Site) -> None:
    december = (_ts(DEC_1), _ts(JAN_1))
    exported = stored(site, "solar", *december, Channel.EXPORT)
    assert len(exported) == 31 * 96
    assert sum(iv.wh for iv in exported) == DECEMBER_EXPORT_WH
    assert {iv.channel for iv in exported} == {Channel.EXPORT}
    assert sum(iv.wh for iv in stored(site, "solar", *december, Channel.IMPORT)) == 850_000
    assert stored(site, "plain", *december, Channel.EXPORT) == []


def test_bill_shows_charges_feed_in_credit_and_net(site: Site, gateway_cli: Cli) -> None:
    code, out, err = gateway_cli(["bill", "solar", "--config", str(site.config_path), *DECEMBER, "--json"])
    assert code == 0, err
    bill = json.loads(out)
    assert [(i["label"], i["amount_minor"]) for i in bill["line_items"]] == [*SEED_LINES, ("Solar feed-in", -930)]
    assert (bill["export_wh"], bill["charges_minor"], bill["feed_in_minor"], bill["net_minor"]) == (
        DECEMBER_EXPORT_WH, 11506, -930, 10576)
    assert (bill["total_minor"], bill["total"]) == (10576, "105.76")
    assert bill["export_data"]["intervals_present"] == 31 * 96

    code, text, err = gateway_cli(["bill", "solar", "--config", str(site.config_path), *DECEMBER])
    assert code == 0, err
    assert "Exported 186 kWh" in text
    assert re.search(r"Charges USD\s+115\.06\n", text)
    assert re.search(r"Solar feed-in\s+186 kWh @ 0\.05\s+-9\.30\n", text)
    assert re.search(r"NET AMOUNT USD\s+105\.76\n", text)


def test_a_meter_without_export_is_billed_exactly_as_before(site: Site, gateway_cli: Cli) -> None:
    code, out, err = gateway_cli(["bill", "plain", "--config", str(site.config_path), *DECEMBER, "--json"])
    assert code == 0, err
    bill = json.loads(out)
    assert [(i["label"], i["amount_minor"]) for i in bill["line_items"]] == SEED_LINES
    assert bill["total"] == "115.06"
    assert not {"export_wh", "charges_minor", "feed_in_minor", "net_minor", "export_data"} & set(bill)
    code, text, _ = gateway_cli(["bill", "plain", "--config", str(site.config_path), *DECEMBER])
    assert re.search(r"TOTAL USD\s+115\.06\n", text)
    assert "Charges" not in text
    assert "NET" not in text
    assert "Exported" not in text


def _expected_stream(rows: list[StoredInterval], first: int, last: int) -> list[tuple[int, int, str]]:
    """Every slot of the NEM days written: the stored interval, or 0 Wh N where none is stored."""
    by_start = {iv.start: iv for iv in rows}
    days = sorted({(iv.start + 36_000) // 86_400 for iv in rows})
    out = []
    for day in days:
        for start in range(day * 86_400 - 36_000, (day + 1) * 86_400 - 36_000, 900):
            iv = by_start.get(start)
            out.append((start, 0, "N") if iv is None else (start, iv.wh, iv.quality))
    assert all(first <= s < last for s, _, _ in out)
    return out


def test_nem12_e1_and_b1_streams_equal_the_stored_intervals(site: Site, gateway_cli: Cli, tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    code, text, err = gateway_cli(["export", "nem12", "--config", str(site.config_path), "--from", "2025-12-01",
                                   "--to", "2025-12-08"])
    assert code == 0, err
    headers = [line.split(",") for line in text.split("\r\n") if line.startswith("200,")]
    assert [h[1:6] for h in headers] == [
        [NMI_PLAIN, "E1", "E1", "E1", "N1"],
        [NMI_SOLAR, "E1B1", "B1", "B1", "N2"],
        [NMI_SOLAR, "E1B1", "E1", "E1", "N1"],
    ]
    parsed = parse_nem12(tmp_path, text, caplog)
    first, last = (int(t.timestamp()) for t in nem_days(DEC_1, DEC_1 + timedelta(days=7)))
    for meter, nmi, channel, suffix in (("solar", NMI_SOLAR, Channel.IMPORT, "E1"),
                                        ("solar", NMI_SOLAR, Channel.EXPORT, "B1"),
                                        ("plain", NMI_PLAIN, Channel.IMPORT, "E1")):
        rows = stored(site, meter, first, last, channel)
        assert len(rows) == (last - first) // 900
        assert parsed[nmi][suffix] == _expected_stream(rows, first, last), (meter, channel)
    assert sorted(parsed[NMI_PLAIN]) == ["E1"]


def test_green_button_export_readings_have_flow_direction_19(site: Site, gateway_cli: Cli, tmp_path: Path) -> None:
    target = tmp_path / "feed.xml"
    code, _, err = gateway_cli(["export", "greenbutton", "--config", str(site.config_path), "--from", "2025-12-01",
                                "--to", "2025-12-03", "--meter", "solar", "--meter", "plain", "--output", str(target)])
    assert code == 0, err
    xml = target.read_bytes()
    flow = flow_per_reading(xml)
    start, end = _ts(DEC_1), _ts(DEC_1 + timedelta(days=2))
    base = "https://gateway.invalid/espi/1_1/resource/UsagePoint"
    expected = {}
    for meter, channel, reading, direction in (("solar", Channel.IMPORT, 1, 1), ("solar", Channel.EXPORT, 2, 19),
                                               ("plain", Channel.IMPORT, 1, 1)):
        rows = stored(site, meter, start, end, channel)
        assert len(rows) == 2 * 96
        expected |= {(f"{base}/{meter}/MeterReading/{reading}", iv.start): direction for iv in rows}
    assert flow == expected
    values = {}
    for entry in ET.fromstring(xml).iter(f"{ATOM}entry"):
        links = [link.attrib["href"] for link in entry.iter(f"{ATOM}link") if link.attrib["rel"] == "self"]
        if links[0].startswith(f"{base}/solar/MeterReading/2/IntervalBlock"):
            for r in entry.iter(f"{ESPI}IntervalReading"):
                values[int(r.findtext(f"{ESPI}timePeriod/{ESPI}start", ""))] = int(r.findtext(f"{ESPI}value", ""))
    assert values == {iv.start: iv.wh for iv in stored(site, "solar", start, end, Channel.EXPORT)}


@pytest.fixture
async def http(site: Site) -> AsyncIterator[httpx.AsyncClient]:
    ledger = await Ledger.open(site.data_dir, gateway_id="gw-test-channels", keypair=identity.load(
        identity.key_path(site.data_dir)))
    cfg = site.cfg
    status = GatewayStatus("gw-test-channels", "G", 0)
    for k, meter in enumerate(("solar", "plain")):
        status.meters[meter] = MeterStatus(meter, "modbus", f"main#{k + 1}", "eastron-sdm630")
    ctx = WebContext(status, ledger, ManualClock(AS_OF.timestamp()), "tok", (), config=cfg)
    app = Starlette(routes=[*create_app(ctx).routes, *report_routes(ctx, cfg)])
    try:
        async with serving(app) as url, httpx.AsyncClient(base_url=url, headers={"Authorization": "Bearer tok"}) as c:
            yield c
    finally:
        await ledger.close()


async def test_intervals_api_takes_a_channel(site: Site, http: httpx.AsyncClient) -> None:
    day = {"from": "2025-12-02", "to": "2025-12-03"}
    exported = (await http.get("/api/v1/meters/solar/intervals", params={**day, "channel": "export"})).json()
    imported = (await http.get("/api/v1/meters/solar/intervals", params=day)).json()
    explicit = (await http.get("/api/v1/meters/solar/intervals", params={**day, "channel": "import"})).json()
    bad = await http.get("/api/v1/meters/solar/intervals", params={**day, "channel": "sideways"})
    plain = (await http.get("/api/v1/meters/plain/intervals", params={**day, "channel": "export"})).json()

    assert (exported["channel"], imported["channel"]) == ("export", "import")
    assert imported == explicit
    start = _ts(datetime(2025, 12, 2, tzinfo=ZONE))
    rows = await asyncio.to_thread(stored, site, "solar", start, start + 86_400, Channel.EXPORT)
    assert [(i["wh"], i["quality"]) for i in exported["intervals"]] == [(iv.wh, iv.quality) for iv in rows]
    assert exported["total_wh"] == 24 * EXPORT_WH
    assert imported["total_wh"] != exported["total_wh"]
    assert bad.status_code == 400
    assert bad.json() == {"error": "unknown channel 'sideways': use one of import, export"}
    assert (plain["count"], plain["intervals"]) == (0, [])


async def test_projection_api_projects_the_feed_in(http: httpx.AsyncClient) -> None:
    """15 complete days: both channels are steady, so the month projects to itself:
    850 kWh (charges 115.06) and 186 kWh exported (credit 9.30): net 105.76."""
    solar = (await http.get("/api/v1/meters/solar/projection")).json()
    plain = (await http.get("/api/v1/meters/plain/projection")).json()

    daily = solar["projections"]["DAILY_AVERAGE"]
    assert daily["projected_export_wh"] == DECEMBER_EXPORT_WH
    bill = daily["projected_bill"]
    assert (bill["charges_minor"], bill["feed_in_minor"], bill["net_minor"]) == (11506, -930, 10576)
    assert solar["period_to_date"]["export_wh"] == 15 * 24 * EXPORT_WH
    assert solar["confidence"] == plain["confidence"] == pytest.approx(15 / 31)
    assert "projected_export_wh" not in plain["projections"]["DAILY_AVERAGE"]
    assert plain["projections"]["DAILY_AVERAGE"]["projected_total"] == "115.06"


async def test_charts_carry_the_export_channel_when_the_meter_has_one(http: httpx.AsyncClient) -> None:
    solar = (await http.get("/api/v1/charts/meters/solar/period")).json()
    plain = (await http.get("/api/v1/charts/meters/plain/period")).json()
    assert set(solar["channels"]) == {"import", "export"}
    assert set(plain["channels"]) == {"import"}
    assert solar["channels"]["export"]["wh"][:15] == [24 * EXPORT_WH] * 15
    assert solar["channels"]["export"]["wh"][15:] == [None] * 16, "days not begun"
    day = (await http.get("/api/v1/charts/meters/solar/day")).json()
    assert day["channels"]["export"]["count"] == 96


async def test_meter_page_shows_projected_feed_in_and_net(http: httpx.AsyncClient) -> None:
    """As of 16 Dec: 15 days exported 15 × 6 = 90 kWh; projected 186 kWh, credit -9.30, net 105.76."""
    solar = (await http.get("/meters/solar")).text
    plain = (await http.get("/meters/plain")).text

    assert '<dd id="exported">90.000 kWh</dd>' in solar
    assert '<dd class="money" id="projected-feed-in">-9.30 USD</dd>' in solar
    assert '<dd class="money" id="projected"><b>105.76 USD</b></dd>' in solar
    assert "Projected net amount" in solar
    assert '<dd class="money" id="projected"><b>115.06 USD</b></dd>' in plain
    assert "Exported so far" not in plain
    assert "feed-in" not in plain


def test_issued_bill_with_feed_in_verifies_and_detects_a_changed_export_interval(site: Site, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(site.data_dir, data)
    cfg = load_config(_write_config(tmp_path, data))
    period = BillingPeriod(DEC_1.date(), JAN_1.date(), TZ)

    async def issue_and_verify() -> tuple[dict[str, object], bool, tuple[str, ...]]:
        keypair = identity.load(identity.key_path(data))
        ledger = await Ledger.open(data, gateway_id=cfg.gateway_id, keypair=keypair)
        try:
            issued = await issue_bill(ledger, cfg, "solar", period, keypair=keypair, now=NOW)
            first = await verify_bill(ledger, issued)
        finally:
            await ledger.close()
        with contextlib.closing(sqlite3.connect(data / DB_FILE)) as db:
            db.execute("UPDATE intervals SET wh = wh + 1 WHERE meter='solar' AND channel='export' AND start=?",
                       (_ts(DEC_1) + 900 * 44,))
            db.commit()
        async with await ReadOnlyLedger.open(data) as reader:
            again = await verify_bill(reader, await get_bill(reader, issued.number))
        return issued.content, first.ok, again.problems

    doc, ok_before, problems = asyncio.run(issue_and_verify())
    assert ok_before
    assert any("export intervals for this period changed" in p for p in problems), problems
    assert (doc["total_minor"], doc["net_minor"], doc["feed_in_minor"]) == (10576, 10576, -930)
    export_data = doc["export_data"]
    assert isinstance(export_data, dict)
    assert (export_data["intervals"], export_data["qualities"]) == (31 * 96, {"A": 31 * 96})


async def test_printable_bill_shows_the_feed_in_line_and_the_net_amount(site: Site, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(site.data_dir, data)
    cfg = load_config(_write_config(tmp_path, data))
    keypair = identity.load(identity.key_path(data))
    ledger = await Ledger.open(data, gateway_id=cfg.gateway_id, keypair=keypair)
    token = load_or_create_token(data)
    ctx = WebContext(GatewayStatus(cfg.gateway_id, keypair.public_key, 0), ledger, ManualClock(NOW.timestamp()),
                     token, (), config=cfg, keypair=keypair)
    try:
        period = BillingPeriod(DEC_1.date(), JAN_1.date(), TZ)
        solar = await issue_bill(ledger, cfg, "solar", period, keypair=keypair, now=NOW)
        plain = await issue_bill(ledger, cfg, "plain", period, keypair=keypair, now=NOW)
        async with serving(create_app(ctx)) as url, httpx.AsyncClient(
                base_url=url, headers={"Authorization": f"Bearer {token}"}) as client:
            page = (await client.get(f"/bills/{solar.number}")).text
            plain_page = (await client.get(f"/bills/{plain.number}")).text
    finally:
        await ledger.close()
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", page)
    feed = cells.index("Solar feed-in")
    assert cells[feed:feed + 4] == ["Solar feed-in", "186 kWh", "0.05 /kWh", "-9.30"]
    assert '<td class="num charges">USD 115.06</td>' in page
    assert "Net amount</th>" in page
    assert '<td class="num total">USD 105.76</td>' in page
    assert '<dd class="exported">186 kWh</dd>' in page
    assert "Verified:" in page
    assert '<td class="num total">USD 115.06</td>' in plain_page
    assert "Net amount" not in plain_page
    assert "feed-in" not in plain_page.lower()
