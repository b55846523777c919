"""What the demo shows of Stellar, checked from outside: its report, the status page and the JSON API.

Used by ``tests/test_demo_e2e.py`` (the demo as a user runs it).
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import time
from decimal import Decimal
from pathlib import Path

import httpx

from gateway.sim.demo import receiver_summary
from gateway.sim.utility import RATE

METERS = {"flat-1", "flat-2", "shop", "heat-pump", "pv-house"}
REPORT = re.compile(r"^  (\S+) +(-?\d+) Wh credited, on-chain (\S+) KWH -> (\S+)", re.MULTILINE)
BANNER = re.compile(r"status page : (http://127\.0\.0\.1:\d+)/")
BANNER_S = 60.0


def assert_stellar_report(stdout: str, data_dir: Path) -> dict[str, Decimal]:
    """The demo's last lines: per meter, credited Wh (at the receiver), on-chain balance, exact."""
    assert "On the Stellar ledger (http://127.0.0.1:" in stdout, stdout[-2000:]
    rows = {m: (int(wh), Decimal(balance), verdict) for m, wh, balance, verdict in REPORT.findall(stdout)}
    assert set(rows) == METERS, stdout[-2000:]
    held = {m: sum(c["wh"] for c in cs) for m, cs in receiver_summary(data_dir / "receiver.db").items()}
    for meter, (wh, balance, verdict) in rows.items():
        assert verdict == "exact", f"{meter}: {stdout[-2000:]}"
        assert balance == wh * Decimal(RATE), meter
        assert wh == held[meter], f"{meter}: the report's credited Wh are the receiver's"
    return {m: b for m, (_, b, _) in rows.items()}


def check_status_api(log: Path, data_dir: Path) -> None:
    """While the demo runs: each meter's account and balance in the API and on the page; Stellar in /sync."""
    deadline = time.monotonic() + BANNER_S
    found = None
    while found is None and time.monotonic() < deadline:
        found = BANNER.search(log.read_text())
        time.sleep(0.1)
    assert found, log.read_text()[-2000:]
    (base,) = found.groups()
    token = (data_dir / "web.token").read_text().strip()  # a machine client's bearer token
    headers = {"Authorization": f"Bearer {token}"}
    with contextlib.closing(sqlite3.connect(f"file:{data_dir / 'ledger.db'}?mode=ro", uri=True)) as db:
        accounts = dict(db.execute("SELECT meter, account_id FROM stellar_accounts WHERE state='active'"))
    with httpx.Client(base_url=base, headers=headers, timeout=10) as http:
        for _ in range(100):  # the balance is read once the uplink has paid something since start
            meter = http.get("/api/v1/meters/flat-1").json()
            if meter.get("stellar", {}).get("balance"):
                break
            time.sleep(0.1)
        stellar = meter["stellar"]
        assert stellar["account"] == accounts["flat-1"]
        assert stellar["state"] == "active"
        assert Decimal(stellar["balance"]) > 0
        assert stellar["serial"], "read from the SDM630's register 0xFC00"
        sync = {u["uplink"]: u for u in http.get("/api/v1/sync").json()["uplinks"]}
        assert set(sync) == {"billing_api", "stellar"}
        assert sync["stellar"]["stellar"]["asset"].startswith("KWH:")
        assert sync["stellar"]["dead_credits"] == 0
        page = http.get("/").text
        assert "Stellar account" in page
        assert accounts["flat-1"][:6] in page
