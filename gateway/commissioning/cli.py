"""``meter-gateway scan`` and ``meter-gateway read``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from gateway.acquisition.energy import describe_channels, profile_channels
from gateway.acquisition.modbus import ModbusBus
from gateway.acquisition.portlock import PortBusy, PortLock, endpoint_key
from gateway.channels import REGISTER_OF
from gateway.clock import SystemClock
from gateway.commissioning.plausible import implausible
from gateway.commissioning.scan import ScanResult, parse_ids, scan
from gateway.config import BusConfig
from gateway.errors import ConfigError, ProfileError
from gateway.intervals import Reading
from gateway.profiles import resolve_profile
from gateway.status import GatewayStatus

T = TypeVar("T")

SCAN_TIMEOUT_S = 0.2
"""Per-id answer timeout for scans: meters answer within ~50 ms at 9600 baud; 247 silent
ids then take under a minute. Raise it (--timeout) for slow devices or radio links."""
READ_TIMEOUT_S = 1.0
"""One-off reads are not in a hurry; a generous timeout avoids false "no answer"."""


def _unit_id(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 247:
        raise argparse.ArgumentTypeError(f"{value} is not a Modbus unit id (1-247)")
    return value


def _add_line_args(p: argparse.ArgumentParser, timeout: float) -> None:
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", help="serial device, e.g. /dev/ttyUSB0 (Modbus RTU)")
    where.add_argument("--host", help="Modbus TCP endpoint or serial device server")
    p.add_argument("--tcp-port", type=int, default=502, help="TCP port (default 502)")
    p.add_argument("--rtu-over-tcp", action="store_true", help="the host is a serial device server passing RTU frames")
    p.add_argument("--baud", type=int, default=9600, help="baud rate (default 9600)")
    p.add_argument("--framing", default="8N1", choices=["8N1", "8E1", "8N2", "8O1"])
    p.add_argument("--timeout", type=float, default=timeout, help=f"answer timeout in seconds (default {timeout})")
    p.add_argument("--retries", type=int, default=0, help="retries per request (default 0)")


def _bus_config(args: argparse.Namespace) -> BusConfig:
    kind = "rtu" if args.port else ("rtu-over-tcp" if args.rtu_over_tcp else "tcp")
    try:
        return BusConfig.model_validate({
            "name": "commissioning", "kind": kind, "device": args.port, "host": args.host,
            "port": None if args.port else args.tcp_port, "baud": args.baud, "framing": args.framing,
            "timeout_s": args.timeout, "retries": args.retries,
        })
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _lock(cfg: BusConfig) -> PortLock:
    key = endpoint_key(device=cfg.device) if cfg.kind == "rtu" else endpoint_key(host=cfg.host, port=cfg.port)
    lock = PortLock(key, owner="meter-gateway commissioning")
    where = cfg.device or f"{cfg.host}:{cfg.port}"
    try:
        lock.acquire()
    except PortBusy as exc:
        raise PortBusy(f"{where} is in use: {exc}. If that is the running gateway daemon, stop it first or "
                       "ask it for a one-off read through its local API (it reads through its own bus "
                       "scheduler, so nothing collides).", exc.holder_pid) from None
    return lock


async def _with_bus(cfg: BusConfig, work: Callable[[ModbusBus], Awaitable[T]]) -> T:
    clock = SystemClock()

    async def discard(_: Reading) -> None:  # no meters are configured, so nothing is polled
        return None

    bus = ModbusBus(cfg, {}, clock, discard, GatewayStatus("commissioning", "", clock.now()), use_lock=False)
    task = asyncio.create_task(bus.run(), name="commissioning-bus")
    try:
        return await work(bus)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _progress(done: int, total: int, found: int) -> None:
    width = 30
    filled = width * done // total
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} ids, {found} found")
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def cmd_scan(args: argparse.Namespace) -> int:
    cfg = _bus_config(args)
    try:
        ids = parse_ids(args.ids)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    lock = _lock(cfg)
    try:
        result: ScanResult = asyncio.run(_with_bus(cfg, lambda bus: scan(bus, ids, progress=_progress)))
    finally:
        lock.release()
    if result.exceptions_only:
        codes = sorted(set().union(*result.exceptions_only.values()))
        print(f"{len(result.exceptions_only)} id(s) answered every read with a Modbus exception "
              f"(code {', '.join(f'{c:#04x}' for c in codes)}) and no registers: not counted as devices "
              f"(ids {_ranges(sorted(result.exceptions_only))}); a simulator or gateway answering for absent ids")
    if not result.found:
        print(f"no device answered on ids {args.ids} (check wiring A/B, baud, framing and termination)")
        return 1
    for f in result.found:
        model = f.model or "unknown model"
        channels = f" (channels: {describe_channels(f.channels)})" if f.model else ""
        flag = "  !! LIKELY DUPLICATE ID" if f.duplicate_suspected else ""
        print(f"id {f.unit:3d}: {model}{channels}{flag}")
        for note in f.notes:
            print(f"        {note}")
    if any(f.duplicate_suspected for f in result.found):
        print("Duplicate ids: connect the meters one at a time and give each its own id.")
    return 0


def _ranges(ids: list[int]) -> str:
    """[1, 2, 3, 7] → "1-3,7"."""
    parts: list[str] = []
    for unit in ids:
        if parts and parts[-1].split("-")[-1] == str(unit - 1):
            parts[-1] = f"{parts[-1].split('-')[0]}-{unit}"
        else:
            parts.append(str(unit))
    return ",".join(parts)


def cmd_read(args: argparse.Namespace) -> int:
    cfg = _bus_config(args)
    try:
        profile = resolve_profile(args.profile)
    except ProfileError as exc:  # a typo on the command line is bad usage (exit 2), as the README says
        raise ConfigError(str(exc)) from None
    lock = _lock(cfg)
    try:
        values, problems = asyncio.run(_with_bus(cfg, lambda bus: bus.read_values(args.id, profile)))
    finally:
        lock.release()
    width = max(len(n) for n in profile.quantities)
    for name, q in sorted(profile.quantities.items(), key=lambda kv: (kv[1].function, kv[1].address)):
        where = f"FC{q.function:02d} {q.address:#06x}"
        if name in values:
            print(f"{name:<{width}}  {values[name]:>14.3f} {q.unit:<3}  ({where})")
        else:
            print(f"{name:<{width}}  {'-':>14} {q.unit:<3}  ({where}) {problems.get(name, '')}")
    channels = profile_channels(profile)
    unread = [c for c in channels if REGISTER_OF[c] not in values]
    print(f"channels: {describe_channels(channels)}"
          + (f" ({', '.join(c.value for c in unread)} not readable now: see above)" if unread else ""))
    if doubts := implausible(profile, values):
        print(f"warning: these values do not look like a {profile.manufacturer} {profile.model} measured them; "
              f"is {profile.id} the right profile (and word order)?", file=sys.stderr)
        for name, why in sorted(doubts.items()):
            print(f"warning:   {name}: {why}", file=sys.stderr)
    return 0 if values else 1


def register(subparsers: Any) -> None:
    """Add ``scan`` and ``read`` to the meter-gateway subcommands (an argparse subparsers object)."""
    p = subparsers.add_parser("scan", help="find responding Modbus unit ids on a line and identify them")
    _add_line_args(p, SCAN_TIMEOUT_S)
    p.add_argument("--ids", default="1-247", help="ids to try, e.g. 1-247 or 1,2,10-20 (default 1-247)")
    p.set_defaults(func=cmd_scan)

    p = subparsers.add_parser("read", help="read and decode every value of one meter once")
    _add_line_args(p, READ_TIMEOUT_S)
    p.add_argument("--id", type=_unit_id, required=True, help="unit id of the meter (1-247)")
    p.add_argument("--profile", required=True, help="built-in profile id or path to a profile file")
    p.set_defaults(func=cmd_read)
