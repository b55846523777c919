"""``meter-gateway`` command line.

Exit codes: 0 ok, 2 bad usage or configuration, 1 any other failure.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import structlog

from cloud_sync.horizon.cli import register as register_stellar
from cloud_sync.stellar.cli import register as register_stellar_commands
from gateway import logs
from gateway.commissioning import register as register_commissioning
from gateway.errors import ConfigError, GatewayError
from gateway.reports.cli import register as register_reports

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

log = structlog.get_logger("gateway.cli")


def _run_until_signal(make: Callable[[asyncio.Event], Coroutine[Any, Any, Any]]) -> Any:
    """Run a coroutine that stops when its event is set; SIGTERM and SIGINT set it."""

    async def main() -> Any:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await make(stop)

    return asyncio.run(main())


def cmd_check_config(args: argparse.Namespace) -> int:
    from gateway.config import InvalidConfig, host_problems, load_config

    cfg = load_config(args.file)
    if problems := host_problems(args.file, cfg):
        raise InvalidConfig(args.file, problems)
    meters = cfg.all_meter_ids()
    print(f"{args.file}: OK — gateway {cfg.gateway_id!r}, {len(cfg.buses)} bus(es), {len(meters)} meter(s), "
          f"data dir {cfg.data_dir}")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from gateway.clock import SystemClock
    from gateway.config import InvalidConfig, host_problems, load_config
    from gateway.daemon import run_daemon

    cfg = load_config(args.config)
    if problems := host_problems(args.config, cfg):
        raise InvalidConfig(args.config, problems)
    logs.configure(cfg.logging.level, cfg.logging.format)
    _run_until_signal(lambda stop: run_daemon(cfg, SystemClock(), stop, config_dir=Path(args.config).resolve().parent))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.sim.demo import run_demo

    if args.speed <= 0:
        raise ConfigError("--speed must be positive")
    logs.configure(args.log_level, "console" if sys.stderr.isatty() else "json")
    result = _run_until_signal(
        lambda stop: run_demo(Path(args.data_dir), speed=args.speed, duration=args.duration, stop=stop,
                              web_port=args.web_port, receiver_url=args.receiver,
                              receiver_token_file=Path(args.receiver_token_file) if args.receiver_token_file
                              else None, stellar=not args.no_stellar, horizon_url=args.horizon))
    bad = [m for m, r in result.meters.items() if not (r["exact"] and r["contiguous"])]
    bad += [m for m, r in result.stellar.items() if not r["exact"]]
    return EXIT_FAILURE if bad else EXIT_OK


def cmd_profiles_list(args: argparse.Namespace) -> int:
    from gateway.profiles import builtin_profiles

    rows = [(p.id, p.manufacturer, p.model, ", ".join(sorted(p.quantities))) for p in builtin_profiles()]
    width = max(len(r[0]) for r in rows)
    for pid, maker, model, quantities in rows:
        print(f"{pid:<{width}}  {maker} {model}: {quantities}")
    return EXIT_OK


def cmd_identity(args: argparse.Namespace) -> int:
    from gateway import identity

    if args.config:
        from gateway.config import load_config

        data_dir = load_config(args.config).data_dir
    else:
        data_dir = Path(args.data_dir)
    print(identity.load_or_create(data_dir).public_key)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meter-gateway", description="Edge gateway daemon for smart meters.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the gateway daemon")
    p.add_argument("--config", required=True, help="TOML config file")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check-config", help="validate a config file and list every problem")
    p.add_argument("file")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("demo", help="run the whole product with simulated meters on loopback")
    p.add_argument("--speed", type=float, default=60.0, help="meter seconds per wall second (default 60)")
    p.add_argument("--duration", type=float, default=None, help="stop after this many wall seconds")
    p.add_argument("--data-dir", default="demo-data", help="where ledger, keys and config go (default ./demo-data)")
    p.add_argument("--web-port", type=int, default=8080, help="status page port (0 or busy: pick a free one)")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    p.add_argument("--receiver", metavar="URL", help="sync to this billing API instead of the built-in receiver")
    p.add_argument("--receiver-token-file", metavar="FILE", help="bearer token for --receiver")
    p.add_argument("--horizon", metavar="URL", help="use this (local) Stellar ledger instead of one in the demo")
    p.add_argument("--no-stellar", action="store_true", help="leave Stellar out (no ledger, no meter accounts)")
    p.set_defaults(func=cmd_demo)

    profiles = sub.add_parser("profiles", help="firmware profiles")
    psub = profiles.add_subparsers(dest="profiles_command", required=True, metavar="ACTION")
    p = psub.add_parser("list", help="list built-in meter profiles")
    p.set_defaults(func=cmd_profiles_list)

    register_commissioning(sub)
    register_reports(sub)
    register_stellar_commands(register_stellar(sub))

    p = sub.add_parser("identity", help="print this gateway's public key (creating the key on first use)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--config")
    group.add_argument("--data-dir", default="/var/lib/meter-gateway")
    p.set_defaults(func=cmd_identity)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logs.configure("warning", "console")
    try:
        code: int = args.func(args)
        return code
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except GatewayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK
