"""``meter-gateway`` command line.

Exit codes: 0 ok, 2 bad usage or configuration, 1 any other failure. Every failure is one
``error: ...`` line that says what to do; no traceback reaches the user (a bug's traceback
goes to the log as the ``internal_error`` event).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import os
import signal
import sys
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import structlog

from gateway import logs
from gateway.errors import ConfigError, GatewayError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
STOP_DEADLINE_S = 4.0
"""Host seconds from SIGTERM (or any other stop) to exit at the latest; the unit promises 5 s. An
orderly stop takes about 2.5 s at most (the uplinks' last sync gets 2 s), so this only cuts a stop
that hangs: a stuck SD card, a task that ignores cancellation. Killing the process then is safe:
every commit is durable, as the SIGKILL crash test shows."""
DEMO_STOP_DEADLINE_S = 10.0
"""The demo also stops its simulators, broker and receiver and checks the result: a wider net."""

log = structlog.get_logger("gateway.cli")


def _force_exit(reason: str) -> None:
    log.error("shutdown_forced", reason=reason)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a full disk or a closed pipe: exit anyway
            stream.flush()
    os._exit(EXIT_FAILURE)


def _print_tasks() -> None:
    """SIGUSR1: what every task is waiting on, to stderr; for a daemon that seems stuck (``kill -USR1 PID``).

    It changes nothing and the daemon goes on; threads' stacks come from ``PYTHONFAULTHANDLER=1`` and SIGABRT."""
    tasks = asyncio.all_tasks()
    with contextlib.suppress(Exception):  # a diagnostic must never take the daemon down (a closed stderr, say)
        print(f"--- {len(tasks)} asyncio tasks (SIGUSR1)", file=sys.stderr)
        for task in sorted(tasks, key=lambda t: t.get_name()):
            print(f"task {task.get_name()}:", file=sys.stderr)
            task.print_stack(limit=12, file=sys.stderr)
        sys.stderr.flush()


def _run_until_signal(make: Callable[[asyncio.Event], Coroutine[Any, Any, Any]], *,
                      deadline_s: float = STOP_DEADLINE_S, bound_own_stop: bool = True) -> Any:
    """Run a coroutine that stops when its event is set; SIGTERM and SIGINT set it.

    Once stopping, the process exits within ``deadline_s`` whatever hangs (with
    ``bound_own_stop``, also when the coroutine set the event itself); a second signal exits at once.
    """
    deadline: list[threading.Timer] = []

    def arm() -> None:
        if not deadline:
            timer = threading.Timer(deadline_s, _force_exit, args=(f"the stop took over {deadline_s} s",))
            timer.daemon = True
            deadline.append(timer)
            timer.start()

    async def main() -> Any:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal() -> None:
            if stop.is_set():
                _force_exit("second signal")
            stop.set()
            arm()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        loop.add_signal_handler(signal.SIGUSR1, _print_tasks)

        async def armed_on_stop() -> None:  # a stop the daemon sets itself (a fatal failure) is bounded too
            await stop.wait()
            arm()

        watcher = asyncio.create_task(armed_on_stop()) if bound_own_stop else None
        try:
            return await make(stop)
        finally:
            if watcher:
                watcher.cancel()

    try:
        return asyncio.run(main())  # the deadline also covers asyncio.run's own teardown
    finally:
        for timer in deadline:
            timer.cancel()


def cmd_check_config(args: argparse.Namespace) -> int:
    from gateway.config import InvalidConfig, ceiling_report, host_problems, load_config

    cfg = load_config(args.file)
    if problems := host_problems(args.file, cfg):
        raise InvalidConfig(args.file, problems)
    meters = cfg.all_meter_ids()
    print(f"{args.file}: OK — gateway {cfg.gateway_id!r}, {len(cfg.buses)} bus(es), {len(meters)} meter(s), "
          f"data dir {cfg.data_dir}")
    from gateway.config.channels_report import channel_report
    from gateway.config.lines import line_report

    base_dir = Path(args.file).resolve().parent
    for line in [*ceiling_report(cfg, base_dir), *channel_report(cfg, base_dir), *line_report(cfg, base_dir)]:
        print(f"  {line}")
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
    from gateway.sim.demo import Rehearsal, run_demo

    if args.speed <= 0:
        raise ConfigError("--speed must be positive")
    if args.receiver and not args.receiver_token_file:
        raise ConfigError("--receiver needs --receiver-token-file FILE: the bearer token the billing API expects")
    if args.receiver_token_file and not args.receiver:
        raise ConfigError("--receiver-token-file is for --receiver URL (the built-in receiver makes its own token)")
    if args.receiver_token_file and not Path(args.receiver_token_file).is_file():
        raise ConfigError(f"--receiver-token-file {args.receiver_token_file}: no such file; put the billing API's "
                          "bearer token in it (one line)")
    if args.late_mqtt < 0 or args.late_mqtt == 1:
        raise ConfigError("--late-mqtt must be 0 (off) or at least 2 (every N-th message arrives late)")
    logs.configure(args.log_level, "console" if sys.stderr.isatty() else "json")
    result = _run_until_signal(
        lambda stop: run_demo(Path(args.data_dir), speed=args.speed, duration=args.duration, stop=stop,
                              web_port=args.web_port, receiver_url=args.receiver,
                              receiver_token_file=Path(args.receiver_token_file) if args.receiver_token_file
                              else None, stellar=not args.no_stellar, horizon_url=args.horizon,
                              rehearse=Rehearsal(args.late_mqtt, args.min_free_mb)),
        deadline_s=DEMO_STOP_DEADLINE_S, bound_own_stop=False)
    bad = [m for m, r in result.series.items() if not (r["exact"] and r["contiguous"])]
    bad += [m for m, r in result.stellar.items() if not r["exact"]]
    bad += [r for r in result.p2p.get("records", []) if r["state"] == "dead"]
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
    if not args.new_key:
        print(identity.load_or_create(data_dir).public_key)
        return EXIT_OK
    keypair, moved = identity.replace_key(data_dir)
    print(keypair.public_key)
    print(f"new key created{f'; the old one is kept as {moved}' if moved else ''}. Register this key at the billing "
          "system under a new gateway_id (set gateway_id in the config to it): the meters' credit chains start "
          "again at seq 1 there.", file=sys.stderr)
    return EXIT_OK


def cmd_recover_chains(args: argparse.Namespace) -> int:
    from gateway import identity
    from gateway.config import load_config
    from gateway.ledger import recovery

    cfg = load_config(args.config)
    logs.configure("warning", "console")  # the per-meter lines below are the output; warnings still show
    api = cfg.uplinks.billing_api
    url, token = recovery.api_settings(str(api.url) if api else None, api.token_file if api else None)
    keypair = identity.load_or_create(cfg.data_dir)
    meters = cfg.all_meter_ids()

    async def run() -> int:
        import time

        tips = await recovery.fetch_tips(url, token, cfg.gateway_id, meters, keypair.public_key)
        for meter in meters:
            print(recovery.describe(tips[meter], meter))
        target = await recovery.create_recovered_ledger(cfg.data_dir, cfg.gateway_id, keypair, tips,
                                                        now_ms=int(time.time() * 1000))
        print(f"recovered: {target}; start the gateway again (systemctl start meter-gateway)")
        return EXIT_OK

    code: int = asyncio.run(run())
    return code


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("meter-gateway")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown (not installed)"


def build_parser(*, only_run: bool = False) -> argparse.ArgumentParser:
    """Every command; with ``only_run``, ``run`` alone (see :func:`main`)."""
    parser = argparse.ArgumentParser(prog="meter-gateway", description="Edge gateway daemon for smart meters.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the gateway daemon")
    p.add_argument("--config", required=True, help="TOML config file")
    p.set_defaults(func=cmd_run)
    if only_run:
        return parser
    # The other commands' modules import what they use (httpx, pymodbus's simulator, stellar-sdk's CLI
    # helpers...): imported here, so that `run` (the daemon) does not carry them (issue 11).
    from cloud_sync.horizon.cli import register as register_stellar
    from cloud_sync.soroban_rpc.cli import register as register_soroban
    from cloud_sync.stellar.cli import register as register_stellar_commands
    from gateway.commissioning import register as register_commissioning
    from gateway.reports.cli import register as register_reports
    from gateway.sim.cli import register as register_sim
    from gateway.terminal import register as register_status
    from gateway.web.users_cli import register as register_users

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
    p.add_argument("--late-mqtt", type=int, default=0, metavar="N",
                   help="rehearse late readings: every N-th MQTT message arrives some polls late, out of order")
    p.add_argument("--min-free-mb", type=int, metavar="MB",
                   help="rehearse the low-disk path: the gateway's [ledger] min_free_mb (above the free disk)")
    p.set_defaults(func=cmd_demo)

    profiles = sub.add_parser("profiles", help="firmware profiles")
    psub = profiles.add_subparsers(dest="profiles_command", required=True, metavar="ACTION")
    p = psub.add_parser("list", help="list built-in meter profiles")
    p.set_defaults(func=cmd_profiles_list)

    register_commissioning(sub)
    register_sim(sub)
    register_status(sub)
    register_reports(sub)
    stellar_group = register_stellar(sub)
    register_stellar_commands(stellar_group)
    register_soroban(stellar_group)
    register_users(sub)

    p = sub.add_parser("identity", help="print this gateway's public key (creating the key on first use)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--config")
    group.add_argument("--data-dir", default="/var/lib/meter-gateway")
    p.add_argument("--new-key", action="store_true",
                   help="after losing the ledger: move the key aside and create a new one (new credit chains)")
    p.set_defaults(func=cmd_identity)

    p = sub.add_parser("recover-chains",
                       help="after losing the ledger: continue every meter's credit chain from the billing API")
    p.add_argument("--config", required=True, help="TOML config file")
    p.set_defaults(func=cmd_recover_chains)
    return parser


def _gateway_error(exc: BaseException) -> GatewayError | None:
    """The first gateway error in ``exc`` (a TaskGroup wraps its tasks' errors in a group)."""
    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            if (found := _gateway_error(inner)) is not None:
                return found
    return None


def _os_error_line(exc: OSError) -> str:
    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"no space left on the device{where}: free space there (old logs: "
                "'journalctl --vacuum-size=50M', other files) and start again")
    return f"{exc.strerror or exc}{where}"


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    # The daemon's command line gets a parser of `run` alone: the others' modules would cost the daemon
    # megabytes of imports it never uses (httpx, pymodbus's simulator...). `run --help` is the same.
    parser = build_parser(only_run=words[:1] == ["run"])
    args = parser.parse_args(argv)
    logs.configure("warning", "console")
    try:
        code: int = args.func(args)
        return code
    except KeyboardInterrupt:
        return EXIT_OK
    except Exception as exc:  # every failure ends as one line that says what to do
        found = _gateway_error(exc)
        if found is not None:
            print(f"error: {found}", file=sys.stderr)
            return EXIT_USAGE if isinstance(found, ConfigError) else EXIT_FAILURE
        if isinstance(exc, OSError):
            print(f"error: {_os_error_line(exc)}", file=sys.stderr)
            return EXIT_FAILURE
        log.error("internal_error", error=f"{type(exc).__name__}: {exc}", exc_info=exc)
        print(f"error: internal error ({type(exc).__name__}: {exc}); this is a bug, please report it with the "
              "log above", file=sys.stderr)
        return EXIT_FAILURE
