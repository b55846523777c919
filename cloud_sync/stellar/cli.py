"""``meter-gateway stellar provision | invoice | accounts | onboard``.

Added to the ``stellar`` command group that :mod:`cloud_sync.horizon.cli` creates. Importing this
module is cheap: stellar-sdk and the uplink are imported by the commands themselves.

``provision`` may run beside the daemon: both write only through SQLite's lock, and at most one
envelope of the gateway is pending at a time (checked in the transaction that stores it), so
their sequence numbers never race. A line the daemon owns is not opened: the serial is then
taken from the config or from the ledger, or the daemon is left to provision that meter itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.errors import ConfigError, GatewayError

if TYPE_CHECKING:
    from cloud_sync.stellar.provision import RegisterReader
    from gateway.acquisition.modbus import ModbusBus
    from gateway.acquisition.portlock import PortLock
    from gateway.config import GatewayConfig, StellarConfig


def _config(path: str) -> tuple[GatewayConfig, StellarConfig]:
    from gateway.config import load_config

    cfg = load_config(path)
    if cfg.stellar is None:
        raise ConfigError(f"{path} has no [stellar] section: nothing to do (see README, Stellar)")
    return cfg, cfg.stellar


def _keypair(data_dir: Path) -> Any:
    from gateway import identity

    path = identity.key_path(data_dir)
    if not path.exists():
        raise ConfigError(f"no gateway key at {path}: start the daemon once, or run 'meter-gateway identity'")
    return identity.load(path)


async def _ledger_file(cfg: GatewayConfig, keypair: Any) -> Any:
    """The ledger file for a command that writes the Stellar tables (created on a box never started)."""
    from cloud_sync.stellar.store import StandaloneLedgerFile
    from gateway.ledger.store import DB_FILE, Ledger

    path = cfg.data_dir / DB_FILE
    if not path.exists():
        ledger = await Ledger.open(cfg.data_dir, gateway_id=cfg.gateway_id, keypair=keypair)
        await ledger.close()
    return await StandaloneLedgerFile.open(path)


class _Lines:
    """Line schedulers opened on demand for serial reads, each under its line lock (never beside the daemon)."""

    def __init__(self, cfg: GatewayConfig) -> None:
        self._cfg = cfg
        self._buses: dict[str, ModbusBus] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._locks: list[PortLock] = []
        self.busy: dict[str, str] = {}

    def get(self, name: str) -> RegisterReader | None:
        from gateway.acquisition.modbus import ModbusBus
        from gateway.acquisition.portlock import PortBusy, PortLock, endpoint_key
        from gateway.clock import SystemClock
        from gateway.intervals import Reading
        from gateway.status import GatewayStatus

        if name in self._buses:
            return self._buses[name]
        if name in self.busy:
            return None
        bus_cfg = next(b for b in self._cfg.buses if b.name == name)
        key = (endpoint_key(device=bus_cfg.device) if bus_cfg.kind == "rtu"
               else endpoint_key(host=bus_cfg.host, port=bus_cfg.port or 502))
        lock = PortLock(key, owner="meter-gateway stellar provision")
        try:
            lock.acquire()
        except PortBusy as exc:
            self.busy[name] = str(exc)
            return None
        self._locks.append(lock)

        async def discard(_: Reading) -> None:
            return None

        clock = SystemClock()
        bus = ModbusBus(bus_cfg.model_copy(update={"meters": ()}), {}, clock, discard,
                        GatewayStatus("provision", "", clock.now()), use_lock=False)
        self._tasks.append(asyncio.create_task(bus.run(), name=f"provision:{name}"))
        self._buses[name] = bus
        return bus

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for lock in self._locks:
            lock.release()


def cmd_provision(args: argparse.Namespace) -> int:
    cfg, _ = _config(args.config)
    meters = cfg.all_meter_ids()
    if args.meter:
        unknown = [m for m in args.meter if m not in meters]
        if unknown:
            raise ConfigError(f"no meter {', '.join(unknown)} in {args.config}; meters: {', '.join(meters)}")
        meters = list(args.meter)
    keypair = _keypair(cfg.data_dir)
    shown = asyncio.run(_provision(cfg, keypair, meters, Path(args.config).resolve().parent))
    bad = 0
    for meter in meters:
        a = shown.get(meter)
        if a is None or a.state != "active":
            bad += 1
            print(f"{meter:<12} {'waiting' if a is None else a.state}: {a.detail if a else 'not tried'}")
        else:
            print(f"{meter:<12} serial {a.serial:<14} {a.account}  active")
    return 1 if bad else 0


async def _provision(cfg: GatewayConfig, keypair: Any, meters: list[str], config_dir: Path) -> dict[str, Any]:
    from cloud_sync.stellar.provision import MeterSerials
    from cloud_sync.stellar.uplink import StellarUplink
    from gateway.clock import SystemClock
    from gateway.profiles import resolve_profile

    assert cfg.stellar is not None
    profiles = {m.id: resolve_profile(m.profile, config_dir) for b in cfg.buses for m in b.meters}
    db = await _ledger_file(cfg, keypair)
    lines = _Lines(cfg)
    serials = MeterSerials(cfg, profiles, lines.get)
    try:
        uplink = StellarUplink(cfg.stellar, db, SystemClock(), keypair, meters=meters, serials=serials)
        stored = await uplink.store.accounts()
        for meter in meters:
            bus = serials.bus_name(meter)
            row = stored.get(meter)
            if serials.needs_line(meter) and bus is not None and row is None and lines.get(bus) is None:
                print(f"note: {lines.busy.get(bus)}; the running daemon provisions meter {meter} itself",
                      file=sys.stderr)
        return await uplink.provision(meters)
    finally:
        await lines.close()
        await db.close()


def cmd_invoice(args: argparse.Namespace) -> int:
    cfg, stellar = _config(args.config)
    invoice = asyncio.run(_invoice(cfg, stellar, args))
    print(invoice.envelope)
    print(f"invoice {invoice.hash}: {invoice.amount} {stellar.asset_code} from meter {invoice.meter} "
          f"({invoice.meter_account}) to the platform {invoice.platform_account}; {invoice.payment_amount} "
          f"{invoice.payment_asset} from {invoice.payer} to the company {invoice.company}. Valid until "
          f"{invoice.valid_until} (Unix time). Sign it as the payer and as the platform, then submit it.",
          file=sys.stderr)
    return 0


async def _invoice(cfg: GatewayConfig, stellar: StellarConfig, args: argparse.Namespace) -> Any:
    from cloud_sync.stellar.horizon import HorizonClient
    from cloud_sync.stellar.invoice import create_invoice

    account = _account_rows(cfg.data_dir)[0].get(args.meter)
    if account is None or account[2] != "active":
        raise ConfigError(f"meter {args.meter} has no active Stellar account (meter-gateway stellar accounts)")
    async with HorizonClient(stellar.horizon_url, post_timeout_s=stellar.timeout_s) as horizon:
        return await create_invoice(horizon, stellar, meter=args.meter, meter_account=account[1], payer=args.payer,
                                    amount=args.amount, payment_amount=args.pay_amount, valid_s=args.valid_s)


def _account_rows(data_dir: Path) -> tuple[dict[str, tuple[str, str, str]], dict[str, str]]:
    """meter → (serial, account, state), and what the uplink last ran against; read-only, safe beside the daemon."""
    import contextlib
    import sqlite3

    from gateway.ledger.store import DB_FILE

    path = data_dir / DB_FILE
    if not path.is_file():
        raise GatewayError(f"no ledger at {path}: check data_dir (the daemon creates it on its first start)")
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as db:
            rows = db.execute("SELECT meter, serial, account_id, state FROM stellar_accounts ORDER BY meter").fetchall()
            meta = dict(db.execute("SELECT key, value FROM stellar_meta").fetchall())
    except sqlite3.Error as exc:
        raise GatewayError(f"cannot read Stellar accounts from {path} ({exc}): is [stellar] configured and has "
                           "this gateway version run once?") from None
    return {str(m): (str(s), str(a), str(st)) for m, s, a, st in rows}, {str(k): str(v) for k, v in meta.items()}


def cmd_accounts(args: argparse.Namespace) -> int:
    if args.config:
        from gateway.config import load_config

        cfg = load_config(args.config)
        data_dir = cfg.data_dir
        horizon_url = cfg.stellar.horizon_url if cfg.stellar else None
        asset = (cfg.stellar.asset_code, cfg.stellar.asset_issuer) if cfg.stellar else None
    else:
        data_dir, horizon_url, asset = Path(args.data_dir), None, None
    rows = asyncio.run(_accounts(data_dir, horizon_url, asset))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no meter has a Stellar account yet")
        return 0
    for r in rows:
        print(f"{r['meter']:<12} serial {r['serial']:<14} {r['account']}  {r['state']:<8} "
              f"{r['balance'] if r['balance'] is not None else '?'} {r['asset_code'] or ''}")
    return 0


async def _accounts(data_dir: Path, horizon_url: str | None, asset: tuple[str, str] | None) -> list[dict[str, Any]]:
    from cloud_sync.stellar.amounts import format_amount
    from cloud_sync.stellar.horizon import HorizonClient, HorizonError, balance_of

    accounts, meta = _account_rows(data_dir)
    horizon_url = horizon_url or meta.get("horizon_url")
    code, issuer = asset or (meta.get("asset_code"), meta.get("asset_issuer"))
    out = []
    client = HorizonClient(horizon_url, post_timeout_s=10) if horizon_url else None
    try:
        for meter, (serial, account, state) in accounts.items():
            balance = None
            if client is not None and state == "active" and code and issuer:
                try:
                    record = await client.account(account)
                    stroops = balance_of(record, code, issuer) if record else None
                    balance = None if stroops is None else format_amount(stroops)
                except HorizonError as exc:
                    print(f"note: balances not read, {horizon_url} does not answer: {exc}", file=sys.stderr)
                    await client.close()
                    client = None
            out.append({"meter": meter, "serial": serial, "account": account, "state": state, "balance": balance,
                        "asset_code": code})
    finally:
        if client is not None:
            await client.close()
    return out


def cmd_onboard(args: argparse.Namespace) -> int:
    from cloud_sync.stellar.onboarding import check

    cfg, stellar = _config(args.config)
    keypair = _keypair(cfg.data_dir)
    report = asyncio.run(check(stellar, keypair, trust_limit=args.limit))
    for ok, line in report.lines:
        print(f"  [{'ok' if ok else '!!'}] {line}")
    print("ready: the gateway can pay credits" if report.ready else "not ready yet: see the [!!] lines")
    return 0 if report.ready else 1


def register(group: Any) -> None:
    """Add the gateway's Stellar commands to the ``stellar`` group (see cloud_sync.horizon.cli.register)."""
    p = group.add_parser("provision", help="create each meter's custodial Stellar account (the daemon does it too)",
                         description="Create the custodial account of every meter (or --meter M) that has none: "
                                     "the serial is read from the meter or taken from the config. Safe to kill and "
                                     "rerun: a killed run's transaction is finished, never repeated.")
    p.add_argument("--config", required=True, metavar="FILE")
    p.add_argument("--meter", action="append", metavar="M", help="only this meter (repeatable)")
    p.set_defaults(func=cmd_provision)

    p = group.add_parser("invoice", help="print an unsigned invoice envelope (seed 000's CreateInvoice)",
                         description="Build the two-step payment: the meter's debt to the platform, the payer's "
                                     "payment to the company. Prints the unsigned base64 XDR for the payer and the "
                                     "platform to sign.")
    p.add_argument("--config", required=True, metavar="FILE")
    p.add_argument("--meter", required=True, metavar="M")
    p.add_argument("--payer", required=True, metavar="G...", help="the payer's account (not muxed)")
    p.add_argument("--amount", required=True, metavar="X", help="asset units moved from the meter's account")
    p.add_argument("--pay-amount", metavar="Y", help="what the payer pays in the payment asset (default: X)")
    p.add_argument("--valid-s", type=int, default=3600, metavar="S", help="seconds to sign and submit (default 3600)")
    p.set_defaults(func=cmd_invoice)

    p = group.add_parser("accounts", help="list meters, serials, Stellar accounts and balances")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", metavar="FILE")
    where.add_argument("--data-dir", metavar="DIR")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_accounts)

    p = group.add_parser("onboard", help="check the tenant's set-up for this gateway; add its trustline",
                         description="Check what the utility must have done (asset issuer, platform account, the "
                                     "gateway's XLM and allowance) and create the gateway's trustline to the asset "
                                     "(capped at --limit) if it has none.")
    p.add_argument("--config", required=True, metavar="FILE")
    p.add_argument("--limit", metavar="X", help="trustline limit = the most allowance the gateway may hold")
    p.set_defaults(func=cmd_onboard)
