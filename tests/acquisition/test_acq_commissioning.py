"""`scan` and `read` as a technician runs them: a real process on a simulated line (pty)."""

from __future__ import annotations

import asyncio
import math
import sys
from pathlib import Path

from gateway.acquisition.modbus import ModbusBus
from gateway.clock import SystemClock
from gateway.commissioning import parse_ids
from gateway.config import BusConfig
from gateway.intervals import Reading
from gateway.profiles import builtin_profile
from gateway.sim.load import LoadModel
from gateway.sim.modbus_sim import SimulatedMeter
from gateway.sim.rtu_line import RtuDevice, RtuLine, meter_registers
from gateway.status import GatewayStatus

CLI = """
import argparse, sys
from gateway.commissioning import register
from gateway.errors import GatewayError
from gateway import logs
logs.configure("warning", "console")  # as gateway.cli.main does
parser = argparse.ArgumentParser(prog="meter-gateway")
register(parser.add_subparsers(dest="command", required=True))
args = parser.parse_args(sys.argv[1:])
try:
    sys.exit(args.func(args))
except GatewayError as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(1)
"""
CLI_TIMEOUT_S = 60.0
"""Bounds a hung CLI; a scan of 8 ids on a pty takes about a second."""


def line_with_meters(tmp_path: Path) -> RtuLine:
    clock = SystemClock()
    epoch = math.floor(clock.now())

    def meter(mid: str, unit: int, profile: str) -> SimulatedMeter:
        return SimulatedMeter(mid, unit, builtin_profile(profile), LoadModel.for_meter(mid, epoch))

    devices = [
        RtuDevice(1, meter_registers(meter("a", 1, "eastron-sdm630"), clock)),
        RtuDevice(5, meter_registers(meter("b", 5, "abb-b23"), clock)),
        # Two factory-fresh meters both left at id 7: different serial numbers, one address.
        RtuDevice(7, meter_registers(meter("c", 7, "eastron-sdm630"), clock, {"serial_number": 12_345_678})),
        RtuDevice(7, meter_registers(meter("d", 7, "eastron-sdm630"), clock, {"serial_number": 87_654_321})),
    ]
    return RtuLine(devices, tmp_path / "ttyUSB9")


async def run_cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", CLI, *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(CLI_TIMEOUT_S):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def test_parse_ids() -> None:
    assert parse_ids("1-3,7,5-5") == [1, 2, 3, 5, 7]


async def test_scan_finds_identifies_and_flags_duplicates(tmp_path: Path) -> None:
    line = line_with_meters(tmp_path)
    line.start()
    try:
        code, out, err = await run_cli("scan", "--port", str(line.path), "--ids", "1-8", "--timeout", "0.05")
    finally:
        line.stop()
    assert code == 0, err
    rows = {int(r.split(":")[0].split()[1]): r for r in out.splitlines() if r.startswith("id ")}
    assert set(rows) == {1, 5, 7}
    assert "eastron-sdm630" in rows[1]
    assert "DUPLICATE" not in rows[1]
    assert rows[5].split(":")[1].strip().startswith("abb-b23")
    assert "LIKELY DUPLICATE ID" in rows[7]
    assert "8/8 ids, 3 found" in err  # the progress bar


async def test_read_prints_every_value_once(tmp_path: Path) -> None:
    line = line_with_meters(tmp_path)
    line.start()
    try:
        code, out, err = await run_cli("read", "--port", str(line.path), "--id", "5", "--profile", "abb-b23")
    finally:
        line.stop()
    assert code == 0, err
    profile = builtin_profile("abb-b23")
    *lines, channels = out.splitlines()
    assert channels == "channels: import + export", "both registers read: the meter will have both channels"
    assert len(lines) == len(profile.quantities)
    values = {ln.split()[0]: ln.split()[1] for ln in lines}
    assert set(values) == set(profile.quantities)
    assert float(values["frequency"]) == 50.0
    assert float(values["voltage_l1"]) == 230.0


async def test_scan_and_read_refuse_while_the_daemon_owns_the_line(tmp_path: Path) -> None:
    line = line_with_meters(tmp_path)
    line.start()
    clock = SystemClock()
    cfg = BusConfig.model_validate({"name": "a", "kind": "rtu", "device": str(line.path), "timeout_s": 0.05,
                                    "meters": [{"id": "x", "unit_id": 1, "profile": "eastron-sdm630", "poll_s": 1}]})

    async def submit(_: Reading) -> None:
        return None

    bus = ModbusBus(cfg, {"x": builtin_profile("eastron-sdm630")}, clock, submit, GatewayStatus("g", "k", 0))
    task = asyncio.create_task(bus.run())
    try:
        await asyncio.sleep(0.2)
        for args in (("scan", "--port", str(line.path), "--ids", "1"),
                     ("read", "--port", str(line.path), "--id", "1", "--profile", "eastron-sdm630")):
            code, _, err = await run_cli(*args)
            assert code == 1
            assert "is in use" in err
            assert "meter-gateway bus a" in err
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        line.stop()
