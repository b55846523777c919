"""``meter-gateway stellar ledger``: run the local Horizon-compatible ledger until SIGTERM/SIGINT.

``register`` adds the ``stellar`` command group and returns its sub-parsers, so the other
Stellar commands (provisioning, invoices, accounts) can be added to the same group.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.errors import ConfigError, GatewayError

if TYPE_CHECKING:
    from cloud_sync.horizon.faults import FaultPlan

DEFAULT_CLOSE_INTERVAL_S = 5  # the network's ledger time; ledger.py's default (imported lazily, like the server)


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:8000; port 0 picks a free one)")
    return host.strip("[]"), int(port)


def _faults(path: str | None) -> FaultPlan:
    from cloud_sync.horizon.faults import FaultPlan, FaultRule

    if path is None:
        return FaultPlan()
    try:
        doc = json.loads(Path(path).read_text())
        return FaultPlan(FaultRule.from_json(rule) for rule in (doc if isinstance(doc, list) else [doc]))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--faults {path}: {exc}") from None


def cmd_ledger(args: argparse.Namespace) -> int:
    from cloud_sync.horizon.ledger import LocalLedger
    from cloud_sync.horizon.server import serve_ledger
    from gateway import logs
    from gateway.clock import Clock, SimulatedClock, SystemClock

    logs.configure(args.log_level, "auto")
    if args.speed is not None and args.speed <= 0:
        raise ConfigError("--speed must be positive")
    clock: Clock = SystemClock() if args.speed is None else SimulatedClock(SystemClock().now(), speed=args.speed)
    plan = _faults(args.faults)
    ledger = LocalLedger(Path(args.data_dir), clock, network_passphrase=args.network_passphrase,
                         close_interval_s=args.close_interval, base_fee=args.base_fee, base_reserve=args.base_reserve)
    host, port = args.listen

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with serve_ledger(ledger, host=host, port=port, faults=plan) as running:
            print(f"local ledger: {running.url}", flush=True)
            print(f"network passphrase: {running.network_passphrase}", flush=True)
            print(f"friendbot: {running.url}/friendbot?addr=G...", flush=True)
            print(f"data dir: {Path(args.data_dir).resolve()}", flush=True)
            await stop.wait()

    try:
        asyncio.run(main())
    finally:
        ledger.close()
    return 0


def register(subparsers: Any) -> Any:
    """Add ``stellar ledger`` to the meter-gateway commands; returns the ``stellar`` sub-parsers."""
    stellar = subparsers.add_parser("stellar", help="Stellar: the local ledger for tests and the demo")
    group = stellar.add_subparsers(dest="stellar_command", required=True, metavar="ACTION")
    p = group.add_parser("ledger", help="run a local Horizon-compatible ledger (stellar-sdk talks to it)",
                         description="Run a local Stellar network with a Horizon-compatible API: it checks "
                                     "signatures, thresholds, sequence numbers, fees, reserves and trustlines like "
                                     "the network, and keeps its state in DIR across restarts.")
    p.add_argument("--listen", type=_listen, default=("127.0.0.1", 8000), metavar="HOST:PORT",
                   help="address to serve on (default 127.0.0.1:8000; port 0 picks a free one)")
    p.add_argument("--data-dir", required=True, metavar="DIR", help="where the ledger's SQLite file lives")
    p.add_argument("--network-passphrase", default=None,
                   help="passphrase of a new ledger (default: the standalone network's); fixed once created")
    p.add_argument("--close-interval", type=int, default=None, metavar="S",
                   help=f"seconds of clock time per ledger of a new ledger (default {DEFAULT_CLOSE_INTERVAL_S})")
    p.add_argument("--base-fee", type=int, default=None, metavar="STROOPS", help="base fee per operation")
    p.add_argument("--base-reserve", type=int, default=None, metavar="STROOPS", help="base reserve")
    p.add_argument("--speed", type=float, default=None,
                   help="run the ledger's clock this many times faster than real time (default: real time)")
    p.add_argument("--faults", default=None, metavar="FILE", help="JSON list of fault rules (see faults.py)")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"],
                   help="stderr log level (info logs faults delivered and upgrades; debug every transaction)")
    p.set_defaults(func=cmd_ledger)
    return group


def main(argv: list[str] | None = None) -> int:
    """``python -m cloud_sync.horizon``: the same options as ``meter-gateway stellar ledger``."""
    parser = argparse.ArgumentParser(prog="python -m cloud_sync.horizon")
    sub = parser.add_subparsers(dest="command")
    register(sub)
    args = parser.parse_args(["stellar", "ledger", *(argv if argv is not None else sys.argv[1:])])
    try:
        code: int = args.func(args)
        return code
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except GatewayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
