"""``meter-gateway stellar soroban``: one local network — Horizon and Soroban RPC on one port — until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
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
