"""``meter-gateway sim``: simulated meters to practise commissioning on, without hardware.

``sim --tcp 5020 1=eastron-sdm630 5=abb-b23`` serves them as a Modbus TCP
gateway would (other ids get exception 0x0B); ``--rtu-over-tcp`` as a serial
device server passing raw RTU frames; ``--pty PATH`` as an RS-485 line on a
pseudo-terminal (other ids stay silent, as on a real line). The meters answer
their profile's whole map, identity registers included, with values that
follow a daily load curve; ``--solar 1=5`` puts 5 kWp of solar panels on the
house of id 1, so its export register grows by day (the export channel).
SIGTERM or Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from gateway.clock import SystemClock
from gateway.errors import ConfigError, ProfileError
from gateway.profiles import Profile, resolve_profile
from gateway.sim.load import LoadModel
from gateway.sim.modbus_sim import SimulatedMeter
from gateway.sim.rtu_line import RtuDevice, RtuLine, RtuTcpServer, meter_registers
from gateway.sim.tcp_gateway import ModbusTcpGateway

DEFAULT_PTY = "/tmp/meter-gateway-sim"
"""Where ``--pty`` puts the line's device link unless told otherwise (like a udev by-id name)."""


def parse_meter(text: str) -> tuple[int, Profile]:
    """``"5=abb-b23"`` → (5, the profile); a clear error for anything else."""
    unit_text, sep, ref = text.partition("=")
    if not sep or not ref:
        raise ConfigError(f"{text!r}: give each meter as ID=PROFILE, e.g. 1=eastron-sdm630 "
                          "('meter-gateway profiles list' shows the profiles)")
    try:
        unit = int(unit_text)
    except ValueError:
        raise ConfigError(f"{text!r}: {unit_text!r} is not a Modbus unit id (1-247)") from None
    if not 1 <= unit <= 247:
        raise ConfigError(f"{text!r}: unit id {unit} is outside 1-247")
    try:
        return unit, resolve_profile(ref, Path.cwd())
    except ProfileError as exc:
        raise ConfigError(f"{text!r}: {exc}") from None


def parse_solar(texts: list[str]) -> dict[int, float]:
    """``["1=5"]`` → {1: 5.0}: kWp of solar panels per unit id."""
    out: dict[int, float] = {}
    for text in texts:
        unit_text, sep, kwp_text = text.partition("=")
        try:
            unit, kwp = int(unit_text), float(kwp_text)
        except ValueError:
            raise ConfigError(f"--solar {text!r}: give ID=KWP, e.g. --solar 1=5 for 5 kWp on id 1") from None
        if not sep or not 0 < kwp <= 1000:
            raise ConfigError(f"--solar {text!r}: give ID=KWP with 0 < KWP <= 1000, e.g. --solar 1=5")
        out[unit] = kwp
    return out


def build_meters(specs: list[str], epoch: float, solar: dict[int, float] | None = None) -> list[SimulatedMeter]:
    parsed = [parse_meter(s) for s in specs]
    solar = solar or {}
    if unknown := sorted(set(solar) - {unit for unit, _ in parsed}):
        raise ConfigError(f"--solar for id(s) {unknown}, which no meter has")
    for unit, profile in parsed:
        if unit in solar and "energy_export" not in profile.quantities:
            raise ConfigError(f"--solar {unit}=...: profile {profile.id} has no export register to feed in on")
    return [SimulatedMeter(f"sim-{unit}-{n}", unit, profile,
                           LoadModel.for_meter(f"sim-{unit}-{n}", epoch, pv_kwp=solar.get(unit, 0.0)))
            for n, (unit, profile) in enumerate(parsed)]


async def serve(args: argparse.Namespace, stop: asyncio.Event) -> None:
    clock = SystemClock()
    meters = build_meters(args.meters, math.floor(clock.now()), parse_solar(getattr(args, "solar", [])))
    twice = sorted(u for u, n in Counter(m.unit_id for m in meters).items() if n > 1)
    if twice and args.pty is None:
        raise ConfigError(f"unit id(s) {twice} given twice: only --pty simulates two meters sharing an id "
                          "(they talk over each other, as on a real line)")
    devices = [RtuDevice(m.unit_id, meter_registers(m, clock)) for m in meters]
    listing = ", ".join(f"id {m.unit_id} {m.profile.id}" + (f" with {m.model.pv_kwp:g} kWp solar" if m.model.solar
                                                             else "") for m in meters)
    ids = f"{min(m.unit_id for m in meters)}-{max(m.unit_id for m in meters)}"
    server: ModbusTcpGateway | RtuTcpServer | None = None
    line: RtuLine | None = None
    if args.pty is not None:
        line = RtuLine(devices, Path(args.pty))
        line.start()
        where, hint = f"{args.pty} (Modbus RTU)", f"--port {args.pty}"
    elif args.rtu_over_tcp:
        server = RtuTcpServer(devices, args.host, args.tcp)
        await server.start()
        where, hint = f"{args.host}:{server.port} (RTU over TCP)", f"--host {args.host} --tcp-port {server.port} " \
                                                                  "--rtu-over-tcp"
    else:
        server = ModbusTcpGateway({d.unit: d.registers for d in devices}, args.host, args.tcp)
        await server.start()
        where, hint = f"{args.host}:{server.port} (Modbus TCP)", f"--host {args.host} --tcp-port {server.port}"
    print(f"simulating {len(meters)} meter(s) on {where}: {listing}", flush=True)
    print(f"try: meter-gateway scan {hint} --ids {ids}; stop with Ctrl-C", flush=True)
    try:
        await stop.wait()
    finally:
        if server is not None:
            await server.stop()
        if line is not None:
            line.stop()
    print("simulator stopped", flush=True)


def cmd_sim(args: argparse.Namespace) -> int:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(args, stop)

    if args.tcp is None and args.pty is None:
        raise ConfigError("say where to simulate: --tcp PORT or --pty [PATH]")
    asyncio.run(main())
    sys.stdout.flush()
    return 0


def register(subparsers: Any) -> None:
    """Add ``sim`` to the meter-gateway subcommands (an argparse subparsers object)."""
    p = subparsers.add_parser("sim", help="simulate meters (Modbus TCP or a pty RS-485 line) to practise on",
                              description="Simulated meters answering their profile's map; only the given ids "
                                          "answer. Example: meter-gateway sim --tcp 5020 1=eastron-sdm630 "
                                          "2=eastron-sdm120 5=abb-b23")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--tcp", type=int, metavar="PORT", help="serve Modbus TCP on this port (0: pick a free one)")
    where.add_argument("--pty", nargs="?", const=DEFAULT_PTY, metavar="PATH",
                       help=f"serve Modbus RTU on a pseudo-terminal linked at PATH (default {DEFAULT_PTY})")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on with --tcp (default 127.0.0.1)")
    p.add_argument("--rtu-over-tcp", action="store_true",
                   help="with --tcp: pass raw RTU frames, as a serial device server does")
    p.add_argument("--solar", action="append", default=[], metavar="ID=KWP",
                   help="solar panels on that meter's house (kWp): it exports by day; repeatable")
    p.add_argument("meters", nargs="+", metavar="ID=PROFILE", help="a meter to simulate, e.g. 1=eastron-sdm630")
    p.set_defaults(func=cmd_sim)
