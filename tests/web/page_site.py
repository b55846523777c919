"""A gateway's web app over real HTTP with a day of history: a real ledger filled through the real
interval engine (with a gap it estimates, and a meter that stopped), live values, a line that
degraded, a tariff and a budget. Served from a background loop so the synchronous browser can use it.
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
import types
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from stellar_sdk import Keypair

from gateway.channels import Channel
from gateway.clock import ManualClock, SystemClock
from gateway.config import GatewayConfig, parse_config
from gateway.intervals import INTERVAL_S, Reading
from gateway.ledger.store import Ledger
from gateway.status import GatewayStatus, LineStatus, LiveValue, MeterStatus
from gateway.web.app import WebContext, create_app
from gateway.web.auth import load_or_create_token
from gateway.web.server import serving
from gateway.web.users import UserStore

USER = "tech"
PASSWORD = "meter room 7 key"
METERS = ("flat-1", "flat-2", "shop")
EXPORTER = "shop"
"""The meter with an export channel (solar panels on its roof)."""
READ_EVERY_S = 300
HISTORY_S = 27 * 3600
GAP = (10 * 3600, 9 * 3600 + 900)
"""Seconds before now: flat-1 was not read in between (45 min): the engine estimates that span (E)."""
STOPPED_S = 90 * 60
"""flat-1 has not answered for the last 90 minutes."""
ERROR = "no answer from unit 1 on 127.0.0.1:502"
BILLS = [types.SimpleNamespace(number="BILL-202611-flat-1-0001", period_from="2026-11-01", period_to="2026-12-01",
                               total="61.20", issued_at=0.0, replaces=None),
         types.SimpleNamespace(number="BILL-202611-flat-1-0002", period_from="2026-11-01", period_to="2026-12-01",
                               total="61.35", issued_at=0.0, replaces="BILL-202611-flat-1-0001")]


def config(data_dir: Path) -> GatewayConfig:
    meters = "\n".join(f"""
  [[buses.meters]]
  id = "{m}"
  unit_id = {k + 1}
  profile = "eastron-sdm630"
  poll_s = {READ_EVERY_S}
{'  budget = "40.00"' if m == "flat-1" else ""}""" for k, m in enumerate(METERS))
    return parse_config(f"""
gateway_id = "gw-page-test"
data_dir = "{data_dir}"
site_timezone = "Europe/Berlin"
[billing]
tariff = "home"
[tariffs.home]
currency = "EUR"
fixed_charges = [{{ label = "Standing charge", amount = "9.00" }}]
[tariffs.home.energy]
kind = "tiered"
tiers = [{{ rate = "0.31" }}]
[[buses]]
name = "line-a"
host = "127.0.0.1"
port = 502
{meters}
""", base_dir=data_dir)


def power_w(meter: str, t: float) -> float:
    base = {"flat-1": 900.0, "flat-2": 450.0, "shop": 2200.0}[meter]
    return base * (1.3 + math.sin(t / 86400 * 2 * math.pi))


def export_w(t: float) -> float:
    """The shop's solar panels feed in from 07:00 to 19:00 Berlin time, most at 13:00; nothing at night."""
    local = datetime.fromtimestamp(t, ZoneInfo("Europe/Berlin"))
    hour = local.hour + local.minute / 60
    return 3000.0 * math.sin((hour - 7) / 12 * math.pi) if 7 <= hour < 19 else 0.0


def export_readings(now: float) -> list[Reading]:
    """The shop's export register (channel export) read with its import register."""
    out, register = [], 20_000.0
    t = (int(now) - HISTORY_S) // READ_EVERY_S * READ_EVERY_S
    while t < now - 60:
        register += export_w(t) * READ_EVERY_S / 3600
        out.append(Reading(EXPORTER, t * 1000, round(register), channel=Channel.EXPORT))
        t += READ_EVERY_S
    return out


def readings(meter: str, now: float) -> list[Reading]:
    out, register = [], 1_000_000.0
    t = (int(now) - HISTORY_S) // READ_EVERY_S * READ_EVERY_S
    while t < now - 60:
        register += power_w(meter, t) * READ_EVERY_S / 3600
        ago = now - t
        skipped = meter == "flat-1" and (GAP[1] < ago < GAP[0] or ago < STOPPED_S)
        if not skipped:
            out.append(Reading(meter, t * 1000, round(register)))
        t += READ_EVERY_S
    return out


@dataclass
class PageSite:
    url: str
    token: str
    now: float
    cfg: GatewayConfig
    ledger_path: Path

    def stored(self, meter: str, start: int, end: int, channel: Channel = Channel.IMPORT) -> list[tuple[int, int, str]]:
        with contextlib.closing(sqlite3.connect(f"file:{self.ledger_path}?mode=ro", uri=True)) as db:
            rows = db.execute("SELECT start, wh, quality FROM intervals WHERE meter=? AND channel=? AND start>=? "
                              "AND start<? AND quality != 'N' ORDER BY start",
                              (meter, channel.value, start, end)).fetchall()
        return [(int(s), int(w), str(q)) for s, w, q in rows]


def status_for(cfg: GatewayConfig, now: float) -> GatewayStatus:
    status = GatewayStatus(cfg.gateway_id, Keypair.random().public_key, now - 5 * 86400)
    for k, meter in enumerate(METERS):
        st = status.meters[meter] = MeterStatus(meter, "modbus", f"line-a#{k + 1}", "eastron-sdm630")
        last = now - (STOPPED_S if meter == "flat-1" else 40)
        st.read_ok(last)
        st.last_power_w = power_w(meter, last)
        st.last_register_wh = readings(meter, now)[-1].register_wh
        st.values = {
            "energy_import": LiveValue(float(st.last_register_wh), "Wh", last),
            "power_total": LiveValue(st.last_power_w, "W", last),
            "voltage_l1": LiveValue(231.4, "V", last),
            "current_l1": LiveValue(st.last_power_w / 231.4, "A", last),
            "frequency": LiveValue(49.98, "Hz", last),
            "power_factor": LiveValue(0.97, "", last),
        }
    for _ in range(3):
        status.meters["flat-1"].read_failed(ERROR)
    line = status.lines["line-a"] = LineStatus("line-a", "tcp", "127.0.0.1:502", connected=True)
    for minute in range(6 * 60, 0, -1):
        t = now - minute * 60
        for n in range(4):
            line.record(t + n, ok=not (minute < 40 and n == 0))  # the last 40 minutes: one read in four fails
    line.last_error = ERROR
    return status


@contextlib.asynccontextmanager
async def page_site(tmp: Path) -> AsyncIterator[PageSite]:
    now = float(int(SystemClock().now()) // 60 * 60 + 20)
    cfg = config(tmp / "data")
    ledger = await Ledger.open(cfg.data_dir, gateway_id=cfg.gateway_id, keypair=Keypair.random())
    try:
        batch = sorted([*(r for m in METERS for r in readings(m, now)), *export_readings(now)], key=lambda r: r.t_ms)
        await ledger.commit_readings(batch, now_ms=int(now * 1000))
        UserStore(cfg.data_dir).set_password(USER, PASSWORD)
        token = load_or_create_token(cfg.data_dir)
        ctx = WebContext(status_for(cfg, now), ledger, ManualClock(now), token, (), config=cfg)
        async with serving(create_app(ctx)) as url:
            yield PageSite(url, token, now, cfg, cfg.data_dir / "ledger.db")
    finally:
        await ledger.close()


def bills_module(found: list[Any]) -> types.ModuleType:
    """Stands in for ``gateway.reports.bills`` (numbered bills, built beside the page) in these tests only."""
    module = types.ModuleType("gateway.reports.bills")

    def list_bills(ledger: Ledger, meter: str) -> list[Any]:
        return list(found) if meter == "flat-1" else []

    module.list_bills = list_bills  # type: ignore[attr-defined]
    return module


def day_slots(now: float) -> tuple[int, int]:
    end = int(now) - int(now) % INTERVAL_S + INTERVAL_S
    return end - 86400, end
