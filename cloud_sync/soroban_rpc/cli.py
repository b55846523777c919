"""``meter-gateway stellar soroban``: one local network — Horizon and Soroban RPC on one port — until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.errors import ConfigError

if TYPE_CHECKING:
    from cloud_sync.soroban_rpc.rpc import RpcFaults


def _faults(path: str | None) -> RpcFaults:
    from cloud_sync.soroban_rpc.rpc import FaultRule, RpcFaults

    if path is None:
        return RpcFaults()
    try:
        doc = json.loads(Path(path).read_text())
        return RpcFaults([FaultRule.from_json(rule) for rule in (doc if isinstance(doc, list) else [doc])])
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--faults {path}: {exc}") from None


def cmd_soroban(args: argparse.Namespace) -> int:
    from cloud_sync.horizon.ledger import LocalLedger
    from cloud_sync.soroban_rpc.node import SorobanNode
    from cloud_sync.soroban_rpc.server import serve_network
    from gateway import logs
    from gateway.clock import Clock, SimulatedClock, SystemClock

    logs.configure(args.log_level, "auto")
    if args.speed is not None and args.speed <= 0:
        raise ConfigError("--speed must be positive")
    clock: Clock = SystemClock() if args.speed is None else SimulatedClock(SystemClock().now(), speed=args.speed)
    plan = _faults(args.faults)
    data_dir = Path(args.data_dir)
    ledger = LocalLedger(data_dir, clock)
    node = SorobanNode(ledger, data_dir)
    host, port = args.listen

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with serve_network(node, host=host, port=port, faults=plan) as running:
            print(f"horizon: {running.horizon_url}", flush=True)
            print(f"soroban rpc: {running.rpc_url}", flush=True)
            print(f"contract: {running.contract_id}", flush=True)
            print(f"network passphrase: {running.network_passphrase}", flush=True)
            print(f"data dir: {data_dir.resolve()}", flush=True)
            await stop.wait()

    try:
        asyncio.run(main())
    finally:
        node.close()
        ledger.close()
    return 0


def register(group: Any) -> None:
    """Add ``soroban`` to the ``stellar`` command group."""
    from cloud_sync.horizon.cli import _listen

    p = group.add_parser("soroban", help="run the local network with the P2P energy-sharing contract (Soroban RPC)",
                         description="Run the local Stellar network with Horizon and Soroban JSON-RPC on one port "
                                     "(RPC at /soroban/rpc) and the seed-001 energy-sharing contract deployed. "
                                     "State (accounts, contract, transactions) stays in DIR across restarts.")
    p.add_argument("--listen", type=_listen, default=("127.0.0.1", 8000), metavar="HOST:PORT",
                   help="address to serve on (default 127.0.0.1:8000; port 0 picks a free one)")
    p.add_argument("--data-dir", required=True, metavar="DIR", help="where the network's SQLite files live")
    p.add_argument("--speed", type=float, default=None, help="run the network's clock this many times faster")
    p.add_argument("--faults", default=None, metavar="FILE",
                   help="JSON list of RPC fault rules (see cloud_sync/soroban_rpc/rpc.py)")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=cmd_soroban)
    register_admin(group)


def _key(path: str) -> Any:
    from stellar_sdk import Keypair
    from stellar_sdk.exceptions import Ed25519SecretSeedInvalidError

    try:
        return Keypair.from_secret(Path(path).read_text().strip())
    except OSError as exc:
        raise ConfigError(f"cannot read the key file {path}: {exc.strerror}") from None
    except Ed25519SecretSeedInvalidError:
        raise ConfigError(f"{path} does not hold a Stellar secret seed (S…)") from None


def cmd_admin(args: argparse.Namespace) -> int:
    from stellar_sdk import SorobanServer, scval

    from cloud_sync.soroban_rpc.client import InvokeFailed, invoke
    from cloud_sync.soroban_rpc.scval import decode_struct

    source = _key(args.source_key)
    signers = {kp.public_key: kp for kp in (_key(f) for f in args.signer_key or [])}
    signers.setdefault(source.public_key, source)
    a = scval.to_address
    u = scval.to_uint64
    calls: dict[str, Any] = {
        "initialize": lambda: ("initialize", [a(args.admin or source.public_key), a(args.token or args.contract)]),
        "register": lambda: ("register_prosumer", [a(args.prosumer)]),
        "agreement": lambda: ("create_agreement", [a(args.provider), a(args.consumer), u(args.kwh), u(args.price),
                                                   u(args.deadline)]),
        "mint": lambda: ("mint", [a(args.to), u(args.amount)]),
        "show": lambda: ("get_agreement", [u(args.agreement)]),
    }
    function, call_args = calls[args.admin_action]()
    with SorobanServer(args.rpc) as server:
        passphrase = server.get_network().passphrase
        try:
            value = invoke(server, passphrase, args.contract, source, function, call_args, signers)
        except InvokeFailed as exc:
            print(f"error: {function} refused at {exc.stage}: {exc.detail}", file=sys.stderr)
            return 1
    if function == "get_agreement":
        print(json.dumps(decode_struct(value), indent=2))
    elif function == "create_agreement":
        print(f"agreement id: {scval.from_uint64(value)}")
    else:
        print(f"{function}: ok")
    return 0


def register_admin(group: Any) -> None:
    p = group.add_parser("soroban-admin", help="initialise the energy-sharing contract, register prosumers, "
                                               "create agreements (over Soroban RPC)")
    p.add_argument("--rpc", required=True, metavar="URL", help="Soroban RPC URL (…/soroban/rpc)")
    p.add_argument("--contract", required=True, metavar="C…", help="the contract id the network printed")
    p.add_argument("--source-key", required=True, metavar="FILE",
                   help="file holding the secret seed of the account that pays (the admin's for initialize/mint)")
    p.add_argument("--signer-key", action="append", metavar="FILE",
                   help="file with a secret seed that signs an address's authorisation (repeat; e.g. the gateway "
                        "key for a custodial provider account, the prosumer's key for register)")
    sub = p.add_subparsers(dest="admin_action", required=True, metavar="ACTION")
    s = sub.add_parser("initialize", help="set the admin and the payment token (once)")
    s.add_argument("--admin", default=None, metavar="G…", help="admin address (default: the source key's)")
    s.add_argument("--token", default=None, metavar="C…", help="token contract address (default: the contract)")
    s = sub.add_parser("register", help="register a prosumer (needs its authorisation)")
    s.add_argument("--prosumer", required=True, metavar="G…")
    s = sub.add_parser("agreement", help="create an agreement (needs the provider's authorisation)")
    s.add_argument("--provider", required=True, metavar="G…")
    s.add_argument("--consumer", required=True, metavar="G…")
    s.add_argument("--kwh", required=True, type=int)
    s.add_argument("--price", required=True, type=int, help="token units per kWh")
    s.add_argument("--deadline", required=True, type=int, help="delivery deadline, Unix seconds")
    s = sub.add_parser("mint", help="issue the stand-in's payment token to an address (admin)")
    s.add_argument("--to", required=True, metavar="G…")
    s.add_argument("--amount", required=True, type=int)
    s = sub.add_parser("show", help="print an agreement as the contract returns it")
    s.add_argument("--agreement", required=True, type=int)
    p.set_defaults(func=cmd_admin)
