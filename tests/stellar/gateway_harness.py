"""A gateway on a local ledger for the Stellar uplink's tests: a tenant onboarded, credits in a real ledger file.

What the tests check on chain they read over plain HTTP from Horizon's routes (not through the
uplink's own client), so a bug in that client cannot hide itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from stellar_sdk import Keypair

from cloud_sync.horizon.faults import FaultPlan
from cloud_sync.horizon.ledger import DB_FILE, LocalLedger
from cloud_sync.horizon.server import RunningLedger, serve_ledger
from cloud_sync.stellar.amounts import rate_stroops, to_stroops
from cloud_sync.stellar.store import UPLINK
from cloud_sync.stellar.uplink import StellarUplink
from gateway.channels import Channel
from gateway.clock import Clock, SimulatedClock, SystemClock
from gateway.config import StellarConfig
from gateway.intervals import Reading
from gateway.ledger.store import Ledger
from gateway.sim.utility import Utility, onboard

T0 = 1_767_225_600_000  # a quarter-hour boundary, ms
GW = "gw-stellar"
CLOSE_INTERVAL_S = 1
"""One ledger a second: a transaction's bound (10 ledgers) passes within seconds."""
UPLINK_SPEED = 10.0
"""The uplink's clock runs ten times faster than the host's: its backoffs (and Retry-After) pass
quickly, while the ledger keeps real time, so the network's bounds are not hurried."""
SETTLE_S = 60.0
"""Host seconds a test waits for the uplink to pay everything (it takes well under one)."""


def readings(meter: str, n_intervals: int, *, start_wh: int = 10_000, per_min: int = 7,
             t0: int = T0, channel: Channel = Channel.IMPORT) -> list[Reading]:
    """One reading a minute: ``per_min × 15`` Wh per interval."""
    return [Reading(meter, t0 + k * 60_000, start_wh + per_min * k, channel=channel)
            for k in range(n_intervals * 15 + 1)]


def stellar_config(url: str, utility: Utility, passphrase: str, **overrides: Any) -> StellarConfig:
    return StellarConfig.model_validate({
        "horizon_url": url, "network_passphrase": passphrase, "asset_code": utility.asset_code,
        "asset_issuer": utility.issuer.public_key, "platform_signer": utility.platform.public_key,
        "rate": "0.001", "company_account": utility.company.public_key, "backoff_max_s": 2,
        "balance_refresh_s": 3600, **overrides})


class LedgerServer:
    """The local ledger served in this loop, restartable on the same port and data (a ledger restart)."""

    def __init__(self, data_dir: Path, *, port: int = 0, faults: FaultPlan | None = None) -> None:
        self.data_dir = data_dir
        self.port = port
        self.faults = faults if faults is not None else FaultPlan()
        self.ledger: LocalLedger | None = None
        self._cm: contextlib.AbstractAsyncContextManager[RunningLedger] | None = None
        self.running: RunningLedger | None = None

    async def start(self) -> RunningLedger:
        fresh = not (self.data_dir / DB_FILE).exists()
        self.ledger = LocalLedger(self.data_dir, SystemClock(), close_interval_s=CLOSE_INTERVAL_S if fresh else None)
        self._cm = serve_ledger(self.ledger, port=self.port, faults=self.faults)
        self.running = await self._cm.__aenter__()
        self.port = int(self.running.url.rsplit(":", 1)[1])
        return self.running

    async def stop(self) -> None:
        if self._cm is not None:
            await self._cm.__aexit__(None, None, None)
            self._cm = None
        if self.ledger is not None:
            self.ledger.close()
            self.ledger = None


@dataclass
class Tenant:
    url: str
    server: LedgerServer
    utility: Utility
    keypair: Keypair
    cfg: StellarConfig
    ledger: Ledger
    clock: Clock = field(default_factory=lambda: SimulatedClock(time.time(), speed=UPLINK_SPEED))
    alarms: dict[str, str] = field(default_factory=dict)

    @property
    def running(self) -> RunningLedger:
        assert self.server.running is not None
        return self.server.running

    @property
    def per_wh(self) -> int:
        return rate_stroops(self.cfg.rate)

    def uplink(self, meters: list[str], serials: Callable[[str], Awaitable[str]] | None = None) -> StellarUplink:
        async def serial_of(meter: str) -> str:
            return f"SN-{meter}"

        return StellarUplink(self.cfg, self.ledger, self.clock, self.keypair, meters=meters,
                             serials=serials or serial_of, alarms=self.alarms)

    async def credits(self) -> dict[str, tuple[int, int, int]]:
        """Per meter, of the import credits in the outbox (the only ones paid): (sum of Wh, positive credits,
        negative credits)."""
        rows = await self.ledger.read_rows(
            "SELECT meter, SUM(wh), SUM(wh > 0), SUM(wh < 0) FROM credits WHERE channel = 'import' GROUP BY meter")
        return {str(m): (int(s), int(p), int(n)) for m, s, p, n in rows}

    async def accounts(self) -> dict[str, str]:
        rows = await self.ledger.read_rows("SELECT meter, account_id FROM stellar_accounts WHERE state='active'")
        return {str(m): str(a) for m, a in rows}

    async def settled(self) -> bool:
        summary = await self.ledger.uplink_summary(UPLINK)
        pending = await self.ledger.read_rows("SELECT COUNT(*) FROM stellar_txs WHERE state='pending'")
        return summary.backlog == 0 and pending[0][0] == 0


@contextlib.asynccontextmanager
async def tenant(tmp_path: Path, *, allowance: str = "1000000", limit: str | None = None,
                 faults: FaultPlan | None = None, port: int = 0, **overrides: Any) -> AsyncIterator[Tenant]:
    server = LedgerServer(tmp_path / "horizon", port=port, faults=faults)
    keypair = Keypair.random()
    gw_ledger = await Ledger.open(tmp_path / "gateway", gateway_id=GW, keypair=keypair)
    try:
        running = await server.start()
        utility = Utility(Keypair.random(), Keypair.random(), Keypair.random())
        await onboard(utility, running.url, running.network_passphrase, keypair.public_key,
                      gateway_key=keypair, allowance=allowance, limit=limit)
        cfg = stellar_config(running.url, utility, running.network_passphrase, **overrides)
        yield Tenant(running.url, server, utility, keypair, cfg, gw_ledger)
    finally:
        await gw_ledger.close()
        await server.stop()


async def run_until(uplink: StellarUplink, done: Callable[[], Awaitable[bool]], *,
                    timeout_s: float = SETTLE_S) -> None:
    """Run the uplink as the daemon does until ``done()``; its errors surface here."""
    task = asyncio.create_task(uplink.run())
    deadline = time.monotonic() + timeout_s
    try:
        while not await done():
            if task.done():
                task.result()
                raise AssertionError("the uplink stopped")
            assert time.monotonic() < deadline, f"not done after {timeout_s} s; alarms: {uplink.alarms}"
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


# ---- what the network holds, read over plain HTTP ------------------------------------------------

async def records(url: str, path: str, **params: str) -> list[dict[str, Any]]:
    """Every record of a Horizon collection, following its cursor."""
    out: list[dict[str, Any]] = []
    cursor = ""
    async with httpx.AsyncClient(timeout=30) as http:
        while True:
            query = {"limit": "200", **params, **({"cursor": cursor} if cursor else {})}
            page = (await http.get(f"{url}{path}", params=query)).json()
            batch = page["_embedded"]["records"]
            out.extend(batch)
            if len(batch) < 200:
                return out
            cursor = batch[-1]["paging_token"]


async def account(url: str, account_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=30) as http:
        resp = await http.get(f"{url}/accounts/{account_id}")
        resp.raise_for_status()
        doc: dict[str, Any] = resp.json()
        return doc


async def asset_balance(url: str, account_id: str, code: str, issuer: str) -> int:
    for line in (await account(url, account_id))["balances"]:
        if line.get("asset_code") == code and line.get("asset_issuer") == issuer:
            return to_stroops(line["balance"])
    raise AssertionError(f"{account_id} has no trustline to {code}")


async def meter_payments(url: str, account_id: str, gateway: str) -> tuple[int, int]:
    """(payments from the gateway to the account, payments from the account back to the gateway)."""
    pays = [p for p in await records(url, f"/accounts/{account_id}/payments") if p["type"] == "payment"]
    return (sum(1 for p in pays if p["from"] == gateway and p["to"] == account_id),
            sum(1 for p in pays if p["from"] == account_id and p["to"] == gateway))


async def assert_exact(t: Tenant) -> dict[str, int]:
    """Every meter's balance = its credited Wh × rate to the stroop, each credit paid once."""
    accounts = await t.accounts()
    credits = await t.credits()
    assert set(accounts) >= set(credits), f"meters without an account: {set(credits) - set(accounts)}"
    balances = {}
    for meter, (wh, positive, negative) in credits.items():
        balance = await asset_balance(t.url, accounts[meter], t.cfg.asset_code, t.cfg.asset_issuer)
        assert balance == wh * t.per_wh, f"{meter}: balance {balance} stroops != {wh} Wh × {t.per_wh}"
        assert await meter_payments(t.url, accounts[meter], t.keypair.public_key) == (positive, negative), \
            f"{meter}: one payment per non-zero credit, none twice"
        balances[meter] = balance
    memos = [tx["memo"] for tx in await records(t.url, f"/accounts/{t.keypair.public_key}/transactions")
             if tx.get("memo_type") == "hash" and tx["successful"]]
    assert len(memos) == len(set(memos)), "no batch was paid twice"
    return balances
