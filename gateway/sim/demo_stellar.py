"""The demo's Stellar side: a local ledger, the utility's onboarding, and the end-of-run check.

The demo plays the utility (issuer, platform and company accounts via friendbot; the gateway
funded with XLM and a capped allowance) on a local Horizon-compatible ledger — in this process
(``<data dir>/horizon``, real time: a ledger every 5 s), or an external one (``--horizon URL``,
which the crash tests keep alive across gateway kills). At the end it reads every meter's
on-chain balance and checks it against the energy credited, to the stroop.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from stellar_sdk import Keypair

from cloud_sync.stellar.amounts import format_amount, rate_stroops, to_stroops
from gateway.clock import SystemClock
from gateway.sim.utility import KEYS_FILE, RATE, Utility, onboard

if TYPE_CHECKING:
    from cloud_sync.soroban_rpc.server import RunningNetwork

LEDGER_DIR = "horizon"
ONBOARDED = "onboarded"
READ_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class DemoLedger:
    url: str
    passphrase: str
    utility: Utility
    local: bool
    network: RunningNetwork | None = None
    """The demo's own network, with the Soroban RPC and the energy-sharing contract beside Horizon."""

    def config_lines(self) -> list[str]:
        return self.utility.config_lines(self.url, self.passphrase)


@contextlib.asynccontextmanager
async def demo_ledger(data_dir: Path, gateway: Keypair, horizon_url: str | None) -> AsyncIterator[DemoLedger]:
    """The ledger for this run, with the tenant onboarded (idempotent: every step looks before it acts)."""
    utility = Utility.load_or_create(data_dir / KEYS_FILE)
    if horizon_url is not None:
        async with httpx.AsyncClient(timeout=READ_TIMEOUT_S) as http:
            passphrase = str((await http.get(horizon_url)).json()["network_passphrase"])
        await onboard(utility, horizon_url, passphrase, gateway.public_key, gateway_key=gateway)
        yield DemoLedger(horizon_url, passphrase, utility, local=False)
        return
    from cloud_sync.horizon.ledger import LocalLedger
    from cloud_sync.soroban_rpc.node import SorobanNode
    from cloud_sync.soroban_rpc.server import serve_network

    # Real time, not the demo's fast clock: at 900x a 5-s ledger would last 5 ms.
    ledger = LocalLedger(data_dir / LEDGER_DIR, SystemClock())
    node = SorobanNode(ledger, data_dir / LEDGER_DIR)
    marker = data_dir / LEDGER_DIR / ONBOARDED
    try:
        async with serve_network(node) as running:
            # This ledger is the demo's own: once onboarded (marker beside its data), a restart skips the checks.
            if not marker.exists() or marker.read_text().strip() != gateway.public_key:
                await onboard(utility, running.horizon_url, running.network_passphrase, gateway.public_key,
                              gateway_key=gateway)
                marker.write_text(gateway.public_key + "\n")
            yield DemoLedger(running.horizon_url, running.network_passphrase, utility, local=True, network=running)
    finally:
        node.close()
        ledger.close()


def outbox_wh(data_dir: Path) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(f"file:{data_dir / 'ledger.db'}?mode=ro", uri=True)) as db:
        # Import only: Stellar credits consumption; a solar house's export is never paid as such.
        return {str(m): int(w) for m, w in db.execute(
            "SELECT meter, SUM(wh) FROM credits WHERE channel = 'import' GROUP BY meter")}


def meter_accounts(data_dir: Path) -> dict[str, str]:
    with contextlib.closing(sqlite3.connect(f"file:{data_dir / 'ledger.db'}?mode=ro", uri=True)) as db:
        return {str(m): str(a) for m, a in db.execute(
            "SELECT meter, account_id FROM stellar_accounts WHERE state='active'")}


async def stellar_report(data_dir: Path, ledger: DemoLedger, credited_wh: dict[str, int]) -> dict[str, dict[str, Any]]:
    """Per meter: credited Wh, on-chain balance, and whether balance == credited × rate to the stroop."""
    per_wh = rate_stroops(RATE)
    accounts = meter_accounts(data_dir)
    code, issuer = ledger.utility.asset_code, ledger.utility.issuer.public_key
    report: dict[str, dict[str, Any]] = {}
    async with httpx.AsyncClient(timeout=READ_TIMEOUT_S) as http:
        for meter, wh in sorted(credited_wh.items()):
            account = accounts.get(meter)
            balance = None
            if account is not None:
                doc = (await http.get(f"{ledger.url}/accounts/{account}")).json()
                balance = next((to_stroops(b["balance"]) for b in doc.get("balances", [])
                                if b.get("asset_code") == code and b.get("asset_issuer") == issuer), None)
            report[meter] = {"account": account, "credited_wh": wh, "balance": None if balance is None else
                             format_amount(balance), "expected": format_amount(wh * per_wh),
                             "exact": balance == wh * per_wh}
    return report


def print_report(report: dict[str, dict[str, Any]], ledger: DemoLedger, source: str) -> None:
    code = ledger.utility.asset_code
    print(f"On the Stellar ledger ({ledger.url}), {code} at {RATE} per Wh, credited Wh from {source}:")
    for meter, r in report.items():
        verdict = "exact" if r["exact"] else f"MISMATCH (expected {r['expected']})"
        print(f"  {meter:10s} {r['credited_wh']} Wh credited, on-chain {r['balance'] or 'no account'} {code} "
              f"-> {verdict}")
