"""Numbered bills: issue, list, show, re-bill, immutability in SQLite, verification, the printable page, the API.

The ledger holds the reporting site (tests/reports/conftest.py: the seed's 850 kWh December for meter
``house``) under a real gateway key; each test issues into its own copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from gateway import identity
from gateway.billing import BillingPeriod
from gateway.clock import ManualClock
from gateway.config import load_config
from gateway.ledger.store import DB_FILE, Ledger
from gateway.reports.bills import intervals_digest, issue_bill
from gateway.reports.source import ReadOnlyLedger
from gateway.status import GatewayStatus
from gateway.web.app import WebContext, create_app
from gateway.web.auth import load_or_create_token
from gateway.web.headers import style_hash
from gateway.web.server import free_port, serving
from tests.reports.conftest import DEC_1, DECEMBER_INTERVALS, END, JAN_1, Cli, _ts, config_text, readings

DECEMBER = ["--from", "2025-12-01", "--to", "2026-01-01"]
SEED_LINES = [("Readiness to Serve", 1500), ("Usage Tier 1", 5000), ("Usage Tier 2", 4200),
              ("PSCR Surcharge", 106), ("SAF Surcharge", 700)]
DAEMON_NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir as a box has it: its key file, and a ledger of the reporting site signed with that key."""
    data = tmp_path_factory.mktemp("bills") / "data"

    async def fill() -> None:
        keypair = identity.load_or_create(data)
        ledger = await Ledger.open(data, gateway_id="gw-test-reports", keypair=keypair)
        try:
            await ledger.commit_readings(readings(), now_ms=_ts(END) * 1000)
        finally:
            await ledger.close()

    asyncio.run(fill())
    return data


@dataclass
class Box:
    data_dir: Path
    config: Path

    def rows(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with contextlib.closing(sqlite3.connect(self.data_dir / DB_FILE)) as db:
            return list(db.execute(sql, params))


@pytest.fixture
def box(template: Path, tmp_path: Path) -> Box:
    data = tmp_path / "data"
    shutil.copytree(template, data)
    config = tmp_path / "gateway.toml"
    # shed gets the site tariff, so two meters bill side by side; web on a port nothing listens on.
    config.write_text(config_text(data, extra='tariff = "seed"').replace(
        '[billing]', f'[web]\nport = {free_port()}\n\n[billing]', 1), encoding="utf-8")
    return Box(data, config)


def _issue(cli: Cli, box: Box, meter: str = "house", *extra: str) -> tuple[int, dict[str, object] | str]:
    code, out, err = cli(["bill", meter, "--config", str(box.config), *DECEMBER, "--issue", "--json", *extra])
    return code, (json.loads(out) if code == 0 else err)


def test_issue_list_and_show_a_numbered_bill(box: Box, gateway_cli: Cli) -> None:
    code, bill = _issue(gateway_cli, box)
    assert code == 0, bill
    assert isinstance(bill, dict)
    assert bill["number"] == "BILL-202512-house-0001"
    assert (bill["total_minor"], bill["total"], bill["currency"]) == (11506, "115.06", "USD")
    assert [(i["label"], i["amount_minor"]) for i in bill["line_items"]] == SEED_LINES  # type: ignore[index]
    assert bill["replaces"] is None
    assert bill["status"] == "current"
    assert bill["period"] == {"start": "2025-12-01", "end": "2026-01-01", "tz": "America/Detroit", "days": 31}
    assert bill["tariff_as_used"]["fixed_charges"] == [  # type: ignore[index]
        {"label": "Readiness to Serve", "amount": "15.00"}]
    data = bill["data"]
    assert isinstance(data, dict)
    assert (data["intervals"], data["intervals_priced"], data["qualities"]) == (
        DECEMBER_INTERVALS, DECEMBER_INTERVALS, {"A": DECEMBER_INTERVALS})

    async def digest() -> str:
        async with await ReadOnlyLedger.open(box.data_dir) as ledger:
            return intervals_digest(await ledger.stored_intervals("house", _ts(DEC_1), _ts(JAN_1)))

    assert data["sha256"] == asyncio.run(digest()), "the digest is of exactly the period's stored intervals"

    code, out, _ = gateway_cli(["bill", "list", "house", "--config", str(box.config), "--json"])
    assert code == 0
    listed = json.loads(out)["bills"]
    assert [(b["number"], b["total"], b["period"]["last_day"], b["status"]) for b in listed] == [
        ("BILL-202512-house-0001", "115.06", "2025-12-31", "current")]

    code, out, _ = gateway_cli(["bill", "show", "BILL-202512-house-0001", "--config", str(box.config), "--json"])
    assert code == 0
    shown = json.loads(out)
    assert shown["verification"] == {"ok": True, "signature": True, "repriced": True, "intervals_unchanged": True,
                                     "problems": []}
    assert {k: v for k, v in shown.items() if k != "verification"} == bill
    code, out, _ = gateway_cli(["bill", "show", "BILL-202512-house-0001", "--config", str(box.config)])
    assert code == 0
    assert "Bill BILL-202512-house-0001 (current)" in out
    assert out.splitlines()[out.splitlines().index("  " + "-" * 72) + 1].split()[-1] == "115.06"
    assert "Verified: signature, re-pricing and intervals all match" in out

    code, _, err = gateway_cli(["bill", "show", "BILL-202512-house-0009", "--config", str(box.config)])
    assert (code, "no bill 'BILL-202512-house-0009'" in err) == (2, True)


def test_re_billing_references_the_replaced_bill_and_numbers_stay_gap_free_per_meter(box: Box,
                                                                                    gateway_cli: Cli) -> None:
    first = _issue(gateway_cli, box)[1]
    again = _issue(gateway_cli, box)[1]
    other = _issue(gateway_cli, box, "shed")[1]
    assert isinstance(first, dict)
    assert isinstance(again, dict)
    assert isinstance(other, dict)
    assert again["number"] == "BILL-202512-house-0002"
    assert again["replaces"] == "BILL-202512-house-0001"
    assert other["number"] == "BILL-202512-shed-0001", "each meter counts its own bills"
    # A shorter period over a billed one is refused unless it names the bill it takes the place of.
    code, out, err = gateway_cli(["bill", "house", "--config", str(box.config), "--from", "2025-12-01",
                                  "--to", "2025-12-16", "--issue"])
    assert code == 2
    assert not out
    assert "overlaps BILL-202512-house-0002 (2025-12-01 to 2026-01-01, end exclusive)" in err
    code, _, err = gateway_cli(["bill", "house", "--config", str(box.config), "--from", "2025-12-01", "--to",
                                "2025-12-16", "--issue", "--replaces", "BILL-202512-house-0001"])
    assert code == 2
    assert "already replaced by BILL-202512-house-0002" in err
    code, out, _ = gateway_cli(["bill", "house", "--config", str(box.config), "--from", "2025-12-01", "--to",
                                "2025-12-16", "--issue", "--replaces", "BILL-202512-house-0002", "--json"])
    assert code == 0
    stub = json.loads(out)
    assert (stub["number"], stub["replaces"], stub["days"], stub["line_items"][0]["amount_minor"]) == (
        "BILL-202512-house-0003", "BILL-202512-house-0002", 15, 750)
    code, out, _ = gateway_cli(["bill", "list", "house", "--config", str(box.config), "--json"])
    history = [(b["number"], b["replaces"], b["replaced_by"]) for b in json.loads(out)["bills"]]
    assert history == [
        ("BILL-202512-house-0001", None, "BILL-202512-house-0002"),
        ("BILL-202512-house-0002", "BILL-202512-house-0001", "BILL-202512-house-0003"),
        ("BILL-202512-house-0003", "BILL-202512-house-0002", None),
    ]
    # Nothing was overwritten: the first bill is still there, byte for byte, and still verifies.
    code, out, _ = gateway_cli(["bill", "show", "BILL-202512-house-0001", "--config", str(box.config), "--json"])
    shown = json.loads(out)
    assert (shown["status"], shown["replaced_by"], shown["total_minor"]) == ("replaced", "BILL-202512-house-0002",
                                                                             11506)
    assert shown["verification"]["ok"]
    code, out, _ = gateway_cli(["bill", "list", "house", "--config", str(box.config)])
    assert "replaced by BILL-202512-house-0002" in out


@pytest.mark.parametrize(("argv", "message"), [
    (["bill", "house", "--from", "2026-01-01", "--to", "2099-02-01", "--issue"], "is not over until"),
    (["bill", "nobody", *DECEMBER, "--issue"], "no meter 'nobody' in the configuration"),
    (["bill", "house", *DECEMBER, "--replaces", "BILL-202512-house-0001"], "--replaces only goes with --issue"),
    (["bill", "house", "--issue"], "needs --from and --to"),
    (["bill", "list", "house", *DECEMBER], "takes no --from"),
    (["bill", "house", "extra", *DECEMBER], "unexpected 'extra'"),
])
def test_bills_that_cannot_be_issued_exit_2_and_store_nothing(box: Box, gateway_cli: Cli, argv: list[str],
                                                              message: str) -> None:
    code, _out, err = gateway_cli([*argv, "--config", str(box.config)])
    assert code == 2, err
    assert message in err
    assert box.rows("SELECT COUNT(*) FROM bills") == [(0,)]


def test_issued_bills_cannot_be_changed_or_deleted_in_sqlite(box: Box, gateway_cli: Cli) -> None:
    _issue(gateway_cli, box)
    with contextlib.closing(sqlite3.connect(box.data_dir / DB_FILE)) as db:
        for sql in ("UPDATE bills SET total_minor = 1", "UPDATE bills SET replaces = 'x'", "DELETE FROM bills"):
            with pytest.raises(sqlite3.IntegrityError, match=r"immutable|never deleted"):
                db.execute(sql)
        row = db.execute("SELECT * FROM bills").fetchone()
        columns = [d[0] for d in db.execute("SELECT * FROM bills").description]
        forged = dict(zip(columns, row, strict=True))
        for change, match in (({"seq": 3, "number": "BILL-202512-house-0003"}, "gap-free"),
                              ({"seq": 2, "number": "BILL-202512-house-0001"}, "UNIQUE|CHECK"),
                              ({"seq": 2, "number": "BILL-202512-house-0002", "replaces": "BILL-202512-shed-0001"},
                               "same meter")):
            values = {**forged, **change}
            with pytest.raises(sqlite3.IntegrityError, match=match):
                db.execute(f"INSERT INTO bills ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
                           tuple(values.values()))
    assert box.rows("SELECT number, total_minor FROM bills") == [("BILL-202512-house-0001", 11506)]


def test_show_verifies_against_signature_tariff_and_the_intervals_now(box: Box, gateway_cli: Cli) -> None:
    _issue(gateway_cli, box)
    show = ["bill", "show", "BILL-202512-house-0001", "--config", str(box.config), "--json"]
    with contextlib.closing(sqlite3.connect(box.data_dir / DB_FILE)) as db:
        db.execute("UPDATE intervals SET wh = wh + 1 WHERE meter='house' AND start=?", (_ts(DEC_1) + 900 * 7,))
        db.commit()
    verdict = json.loads(gateway_cli(show)[1])["verification"]
    assert (verdict["ok"], verdict["signature"], verdict["intervals_unchanged"]) == (False, True, False)
    assert "changed since the bill was issued" in verdict["problems"][0]
    with contextlib.closing(sqlite3.connect(box.data_dir / DB_FILE)) as db:
        db.execute("UPDATE intervals SET wh = wh - 1 WHERE meter='house' AND start=?", (_ts(DEC_1) + 900 * 7,))
        # Someone with the file drops the guard and edits the bill: the signature gives it away.
        db.execute("DROP TRIGGER bills_never_updated")
        db.execute("UPDATE bills SET document = replace(document, '\"total_minor\":11506', '\"total_minor\":1506')")
        db.commit()
    verdict = json.loads(gateway_cli(show)[1])["verification"]
    assert (verdict["ok"], verdict["signature"], verdict["intervals_unchanged"]) == (False, False, True)
    assert "signature does not match" in verdict["problems"][0]


# ---- the web: printable bill, API, issuing by the running daemon ------------------------------------


@dataclass
class Daemon:
    url: str
    token: str
    ctx: WebContext


@pytest.fixture
async def daemon(box: Box) -> AsyncIterator[Daemon]:
    """The daemon's web app on the config's [web] port, over the box's ledger (as ``meter-gateway run`` has it)."""
    cfg = load_config(box.config)
    keypair = identity.load(identity.key_path(box.data_dir))
    ledger = await Ledger.open(box.data_dir, gateway_id=cfg.gateway_id, keypair=keypair, require_own_key=True)
    token = load_or_create_token(box.data_dir)
    ctx = WebContext(GatewayStatus(cfg.gateway_id, keypair.public_key, 0), ledger,
                     ManualClock(DAEMON_NOW.timestamp()), token, (), config=cfg, keypair=keypair)
    try:
        async with serving(create_app(ctx), port=cfg.web.port) as url:
            yield Daemon(url, token, ctx)
    finally:
        await ledger.close()


async def test_the_cli_issues_through_the_running_daemon_and_refuses_a_tariff_it_does_not_run(
        box: Box, daemon: Daemon, gateway_cli: Cli) -> None:
    code, out, err = await asyncio.to_thread(
        gateway_cli, ["bill", "house", "--config", str(box.config), *DECEMBER, "--issue", "--json"])
    assert code == 0, err
    bill = json.loads(out)
    assert bill["issued_at"] == "2026-01-05T12:00:00Z", "issued by the daemon, on its clock"
    assert bill["number"] == "BILL-202512-house-0001"
    edited = box.config.read_text(encoding="utf-8").replace('rate = "0.12"', 'rate = "0.13"')
    box.config.write_text(edited, encoding="utf-8")
    code, out, err = await asyncio.to_thread(
        gateway_cli, ["bill", "house", "--config", str(box.config), *DECEMBER, "--issue"])
    assert code == 2
    assert not out
    assert "under another tariff than your config file: restart the daemon" in err
    assert box.rows("SELECT COUNT(*) FROM bills") == [(1,)]


async def test_printable_bill_and_bill_api(box: Box, daemon: Daemon) -> None:
    auth = {"Authorization": f"Bearer {daemon.token}"}
    async with httpx.AsyncClient(base_url=daemon.url) as http:
        issued = await http.post("/api/v1/meters/house/bills", headers=auth,
                                 json={"from": "2025-12-01", "to": "2026-01-01"})
        assert issued.status_code == 201, issued.text
        await http.post("/api/v1/meters/house/bills", headers=auth, json={"from": "2025-12-01", "to": "2026-01-01"})
        assert (await http.get("/bills/BILL-202512-house-0001")).status_code == 401
        assert (await http.get("/api/v1/bills/BILL-202512-house-0001")).status_code == 401
        page = await http.get("/bills/BILL-202512-house-0001", headers=auth)
        current = await http.get("/bills/BILL-202512-house-0002", headers=auth)
        history = (await http.get("/api/v1/meters/house/bills", headers=auth)).json()
        one = (await http.get("/api/v1/bills/BILL-202512-house-0002", headers=auth)).json()
        missing = await http.get("/bills/BILL-202512-house-0042", headers=auth)
        junk = await http.get("/api/v1/bills/%3Cscript%3E", headers=auth)
        unknown_meter = await http.get("/api/v1/meters/nobody/bills", headers=auth)
        bad = await http.post("/api/v1/meters/house/bills", headers=auth, json={"from": "December"})
    assert page.status_code == 200
    html = page.text
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", html)
    for label, amount in SEED_LINES:
        row = cells[cells.index(label):cells.index(label) + 4]
        assert row[3] == f"{amount // 100}.{amount % 100:02d}", (label, row)
    assert cells[cells.index("Usage Tier 2") + 1:cells.index("Usage Tier 2") + 3] == ["350 kWh", "0.12 /kWh"]
    assert '<td class="num total">USD 115.06</td>' in html
    assert "2025-12-01 to 2025-12-31 (31 days)" in html
    assert "2976 of 2976 quarter-hour intervals priced" in html
    assert "2976 actual" in html
    assert 'title="2026-01-05T12:00:00Z UTC">2026-01-05 07:00</time>' in html, "local site time, UTC on hover"
    assert "Replaced by <a href=\"/bills/BILL-202512-house-0002\">" in html
    assert "@media print" in html
    assert "<script" not in html
    # The page's only inline code is its style, and the policy allows exactly that style.
    csp = page.headers["content-security-policy"]
    assert style_hash(html) in csp
    assert "script-src 'self';" in csp, "no inline script, only the box's own files"
    assert "'unsafe-inline'" not in csp
    assert "Replaced by" not in current.text
    assert "Replaces" in current.text
    assert "Verified:" in current.text
    assert [(b["number"], b["status"]) for b in history["bills"]] == [("BILL-202512-house-0001", "replaced"),
                                                                      ("BILL-202512-house-0002", "current")]
    assert (one["replaces"], one["total_minor"], one["verification"]["ok"]) == ("BILL-202512-house-0001", 11506,
                                                                                 True)
    assert (missing.status_code, junk.status_code, unknown_meter.status_code, bad.status_code) == (404, 404, 404, 400)


async def test_bills_issued_at_once_from_several_connections_get_unique_gap_free_numbers(box: Box) -> None:
    """Three writers on one ledger file (the daemon and two CLI runs, say) issuing two bills each at the same
    time: one chain of six numbers, each bill replacing the one before, none shared, none skipped."""
    cfg = load_config(box.config)
    keypair = identity.load(identity.key_path(box.data_dir))
    period = BillingPeriod(DEC_1.date(), JAN_1.date(), cfg.site_timezone)
    ledgers = [await Ledger.open(box.data_dir, gateway_id=cfg.gateway_id, keypair=keypair) for _ in range(3)]
    try:
        issued = await asyncio.gather(*(issue_bill(ledger, cfg, "house", period, keypair=keypair, now=DAEMON_NOW)
                                        for ledger in ledgers for _ in range(2)))
    finally:
        for ledger in ledgers:
            await ledger.close()
    numbers = sorted(bill.number for bill in issued)
    assert numbers == [f"BILL-202512-house-{n:04d}" for n in range(1, 7)]
    chain = box.rows("SELECT number, replaces FROM bills WHERE meter='house' ORDER BY seq")
    assert chain == [(numbers[0], None), *((numbers[k], numbers[k - 1]) for k in range(1, 6))]
