"""Modbus RTU over pseudo-terminals: several unit ids on one simulated line, faults on one device.

Real frames over a real tty (the gateway opens the pty by a /dev/serial/by-id-like
symlink with pyserial), real time: the acceptance criterion is that healthy
meters keep their poll period within 10 % while another device on the same
line fails.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from gateway.acquisition.modbus import ModbusBus
from gateway.acquisition.portlock import PortBusy, PortLock, endpoint_key
from gateway.channels import Channel
from gateway.clock import SystemClock
from gateway.config import BusConfig
from gateway.intervals import Reading
from gateway.profiles import builtin_profile
from gateway.sim.load import LoadModel
from gateway.sim.modbus_sim import SimulatedMeter
from gateway.sim.rtu_line import LineOfMeters, RtuLine
from gateway.status import GatewayStatus, MeterHealth

PERIOD_S = 0.5
TIMEOUT_S = 0.05
UNITS = (1, 2, 3, 4)
SDM630 = builtin_profile("eastron-sdm630")


def bus_config(path: Path, units: tuple[int, ...] = UNITS, period_s: float = PERIOD_S, **extra: object) -> BusConfig:
    return BusConfig.model_validate({
        "name": "rs485", "kind": "rtu", "device": str(path), "baud": 9600, "timeout_s": TIMEOUT_S, "retries": 1,
        "meters": [{"id": f"m{u}", "unit_id": u, "profile": "eastron-sdm630", "poll_s": period_s} for u in units],
        **extra,
    })


class Harness:
    def __init__(self, tmp_path: Path, units: tuple[int, ...] = UNITS, period_s: float = PERIOD_S,
                 **bus_extra: object) -> None:
        self.clock = SystemClock()
        epoch = math.floor(self.clock.now())
        self.meters = [SimulatedMeter(f"m{u}", u, SDM630, LoadModel.for_meter(f"m{u}", epoch)) for u in units]
        self.sim = LineOfMeters(self.meters, self.clock)
        self.line = RtuLine(self.sim.devices, tmp_path / "ttyRS485")
        self.cfg = bus_config(self.line.path, units, period_s, **bus_extra)
        self.status = GatewayStatus("gw", "key", self.clock.now())
        self.readings: list[Reading] = []
        self.bus = ModbusBus(self.cfg, {m.id: SDM630 for m in self.cfg.meters}, self.clock, self._submit,
                             self.status)

    async def _submit(self, reading: Reading) -> None:
        if reading.channel is Channel.IMPORT:  # one reading per poll; channels: test_acq_channels.py
            self.readings.append(reading)

    def of(self, meter: str) -> list[Reading]:
        return [r for r in self.readings if r.meter == meter]

    @asynccontextmanager
    async def running(self) -> AsyncIterator[ModbusBus]:
        self.line.start()
        task = asyncio.create_task(self.bus.run())
        try:
            yield self.bus
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            self.line.stop()


def periods_ms(readings: list[Reading]) -> list[int]:
    return [b.t_ms - a.t_ms for a, b in itertools.pairwise(readings)]


def assert_period_holds(readings: list[Reading], minimum: int, period_s: float = PERIOD_S) -> None:
    gaps = periods_ms(readings)
    assert len(gaps) >= minimum, f"only {len(readings)} readings"
    for gap in gaps:
        assert abs(gap - period_s * 1000) <= 0.10 * period_s * 1000, f"period broke: {gaps}"


async def test_several_units_on_one_line_are_polled_on_their_grid(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    async with h.running():
        await asyncio.sleep(2.6)
        assert h.status.lines["rs485"].connected
    for m, sim in zip(h.cfg.meters, h.meters, strict=True):
        readings = h.of(m.id)
        assert len(readings) >= 4
        assert_period_holds(readings, 3)
        for r in readings:
            # On the grid: each poll starts at a multiple of the period (the midpoint lags it a little).
            assert (r.t_ms % 500) < 200
            truth = sim.model.register_wh(r.t_ms / 1000)
            assert abs(r.register_wh - truth) <= 2, (r, truth)
    line = h.status.lines["rs485"]
    assert line.errors == 0
    assert line.cycle_overruns == 0
    assert 0 < line.utilisation < 1
    assert line.transactions_per_s > 0
    assert all(h.status.meters[m.id].health is MeterHealth.ONLINE for m in h.cfg.meters)


@pytest.mark.parametrize("mode", ["silent", "garbage", "exception", "late"])
async def test_a_failing_device_stays_local_and_recovers(tmp_path: Path, mode: str) -> None:
    # Every gap counts, including the slot in which the device starts failing: that failure cannot be
    # foreseen and holds the line for one timeout (its retry goes to the back of the slot, and from then
    # on the failing device is served after the healthy ones). One timeout must therefore fit in a tenth of
    # the period, as it does on a real bus (timeouts of 0.1-0.3 s, energy polled every 10-60 s).
    period = 1.0
    h = Harness(tmp_path, period_s=period)
    bad = h.sim.device(2)
    bad.late_s = 3 * TIMEOUT_S
    async with h.running():
        while len(h.of("m2")) < 2:
            await asyncio.sleep(0.01)
        bad.mode = mode
        while h.status.meters["m2"].consecutive_failures == 0:
            await asyncio.sleep(0.01)
        await asyncio.sleep(5.1 * period)
        st = h.status.meters["m2"]
        assert st.health is MeterHealth.OFFLINE
        assert st.consecutive_failures >= 3
        assert st.last_error
        for m in ("m1", "m3", "m4"):
            assert_period_holds(h.of(m), 7, period)
            assert h.status.meters[m].health is MeterHealth.ONLINE
        assert h.status.lines["rs485"].errors >= 3
        good_m2 = len(h.of("m2"))
        bad.mode = "ok"
        # Backoff is capped on the grid: the probe comes within a few periods.
        for _ in range(100):
            if h.status.meters["m2"].health is MeterHealth.ONLINE:
                break
            await asyncio.sleep(0.1)
    assert h.status.meters["m2"].health is MeterHealth.ONLINE
    assert len(h.of("m2")) > good_m2


async def test_garbage_injected_between_frames_is_discarded(tmp_path: Path) -> None:
    h = Harness(tmp_path, units=(1, 2))
    async with h.running():
        for _ in range(10):
            await asyncio.sleep(0.13)
            h.line.inject(b"\x00\xff\x13\x37noise")
    assert h.status.lines["rs485"].noise_bytes > 0
    assert len(h.of("m1")) >= 2
    assert len(h.of("m2")) >= 2


async def test_usb_adapter_unplugged_and_replugged_recovers_without_restart(tmp_path: Path) -> None:
    h = Harness(tmp_path, units=(1, 2))
    async with h.running():
        await asyncio.sleep(1.2)
        before = len(h.readings)
        assert before >= 2
        h.line.vanish()
        await asyncio.sleep(1.5)
        assert not h.status.lines["rs485"].connected
        during = len(h.readings)
        h.line.start()  # the node comes back (a new pty behind the same path)
        await asyncio.sleep(2.5)
        assert h.status.lines["rs485"].connected
    assert len(h.readings) >= during + 4
    # A line outage is not the meters' fault: no long device backoff afterwards.
    assert all(h.status.meters[m].health is MeterHealth.ONLINE for m in ("m1", "m2"))


def _float_regs(value: float) -> list[int]:
    raw = struct.pack(">f", value)
    return [int.from_bytes(raw[:2], "big"), int.from_bytes(raw[2:], "big")]


async def test_implausible_values_are_rejected_counted_and_never_stored(tmp_path: Path) -> None:
    h = Harness(tmp_path, units=(1,))
    device = h.sim.device(1)
    real = device.registers
    energy_kwh: list[float] = [1000.0]

    def source(function: int, start: int, count: int) -> list[int] | int:
        regs = real(function, start, count)
        if isinstance(regs, int) or not start <= 0x48 < start + count:
            return regs
        regs[0x48 - start : 0x48 - start + 2] = _float_regs(energy_kwh[0])
        return regs

    device.registers = source
    async with h.running():
        await asyncio.sleep(0.8)
        good = len(h.of("m1"))
        assert good >= 1
        energy_kwh[0] = float("nan")
        await asyncio.sleep(0.55)
        energy_kwh[0] = 999.0  # backwards
        await asyncio.sleep(0.55)
        energy_kwh[0] = 5000.0  # 4 MWh in half a second: far beyond 83 kW
        await asyncio.sleep(0.55)
        assert len(h.of("m1")) == good
        energy_kwh[0] = 1000.001
        await asyncio.sleep(0.55)
    rejected = h.status.meters["m1"].rejected
    assert rejected["nan"] >= 1
    assert rejected["backwards"] >= 1
    assert rejected["jump"] >= 1
    assert all(r.register_wh in (1_000_000, 1_000_001) for r in h.of("m1"))
    assert h.of("m1")[-1].register_wh == 1_000_001


async def test_one_off_reads_go_through_the_running_scheduler(tmp_path: Path) -> None:
    h = Harness(tmp_path, units=(1, 2))
    async with h.running() as bus:
        await asyncio.sleep(0.2)
        values, problems = await bus.read_values(2, SDM630)
        assert problems == {}
        assert set(values) == set(SDM630.quantities)
        assert 49 < values["frequency"] < 51
        serial = await bus.request(2, 3, 0xFC00, 2)
        assert serial == [0, 4_000_002] or (serial[0] << 16 | serial[1]) == 4_000_002
        await asyncio.sleep(1.1)
    assert_period_holds(h.of("m1"), 2)


async def test_the_daemon_holds_the_line_lock_while_running(tmp_path: Path) -> None:
    h = Harness(tmp_path, units=(1,))
    async with h.running():
        await asyncio.sleep(0.3)
        with pytest.raises(PortBusy, match="meter-gateway bus rs485"):
            PortLock(endpoint_key(device=str(h.line.path)), owner="test").acquire()
    with PortLock(endpoint_key(device=str(h.line.path)), owner="test"):
        pass


async def test_a_line_unplugged_at_start_is_locked_under_its_node_name_once_it_appears(tmp_path: Path) -> None:
    # The daemon starts while the adapter is unplugged: its by-id style path does not resolve, so the lock it
    # takes is under that path. Once the node appears and the bus opens it, a scan of the node itself
    # (/dev/pts/N here, /dev/ttyUSB0 on a box) must still be refused.
    h = Harness(tmp_path, units=(1,))
    task = asyncio.create_task(h.bus.run())
    try:
        await asyncio.sleep(0.3)
        assert not h.status.lines["rs485"].connected
        h.line.start()
        for _ in range(60):
            if h.of("m1"):
                break
            await asyncio.sleep(0.1)
        assert h.of("m1"), "the bus opened the line once it appeared"
        node = os.path.realpath(h.line.path)
        with pytest.raises(PortBusy, match="meter-gateway bus rs485"):
            PortLock(endpoint_key(device=node), owner="test").acquire()
        h.line.vanish()  # unplugged again: the node's lock goes with the open port
        for _ in range(60):
            if not h.status.lines["rs485"].connected:
                break
            await asyncio.sleep(0.1)
        assert not h.status.lines["rs485"].connected
        with PortLock(endpoint_key(device=node), owner="test"):
            pass
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        h.line.stop()


async def test_separate_period_for_instantaneous_values(tmp_path: Path) -> None:
    h = Harness(tmp_path, units=(1,))
    meters = [m.model_copy(update={"poll_s": 1.0, "poll_instant_s": 0.25}) for m in h.cfg.meters]
    h.cfg = h.cfg.model_copy(update={"meters": tuple(meters)})
    h.bus = ModbusBus(h.cfg, {"m1": SDM630}, h.clock, h._submit, h.status)
    async with h.running():
        await asyncio.sleep(2.2)
    # Energy on a 1 s grid; instantaneous values four times as often (three blocks vs one per read).
    assert 2 <= len(h.of("m1")) <= 3
    assert h.status.meters["m1"].last_power_w is not None
    assert h.status.lines["rs485"].transactions >= 2 + 4 * 2 * 1



async def test_a_one_off_read_abandoned_on_the_wire_does_not_take_the_line_down(tmp_path: Path) -> None:
    # The web API gives up on a read after its own timeout, possibly while the transaction is in flight.
    h = Harness(tmp_path, units=(1, 2))
    h.sim.device(2).mode = "silent"
    async with h.running() as bus:
        while len(h.of("m1")) < 2:
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.2)  # mid-slot (polls are on the wall-clock grid): the read goes on the wire at once
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.02):
                await bus.request(2, 4, 0x48, 2)
        await asyncio.sleep(0.1)  # the abandoned transaction times out on the wire meanwhile
        before = len(h.of("m1"))
        await asyncio.sleep(1.1)
        assert len(h.of("m1")) >= before + 2, "the line kept polling"
        assert await bus.request(1, 4, 0x48, 2), "and still serves one-off reads"


async def test_a_one_off_read_lists_every_quantity_it_could_not_get(tmp_path: Path) -> None:
    h = Harness(tmp_path, units=(1,))
    h.sim.device(1).mode = "silent"
    async with h.running() as bus:
        values, problems = await bus.read_values(1, SDM630)
    assert values == {}
    assert set(problems) == set(SDM630.quantities), "none silently missing"
    assert sum(p.startswith("not tried") for p in problems.values()) > 0


async def test_one_off_reads_wait_for_the_configured_turnaround(tmp_path: Path) -> None:
    h = Harness(tmp_path, units=(1,))
    meters = [m.model_copy(update={"turnaround_s": 0.2}) for m in h.cfg.meters]
    h.cfg = h.cfg.model_copy(update={"meters": tuple(meters)})
    h.bus = ModbusBus(h.cfg, {"m1": SDM630}, h.clock, h._submit, h.status)
    h.sim.device(1).turnaround_s = 0.15  # longer than the 50 ms timeout, shorter than turnaround + timeout
    async with h.running() as bus:
        values, problems = await bus.read_values(1, SDM630, ["energy_import", "voltage_l1"])
        await asyncio.sleep(0.6)
    assert problems == {}
    assert set(values) == {"energy_import", "voltage_l1"}
    assert h.of("m1"), "polls with the same turnaround work too"


@pytest.mark.parametrize("noise", [b"\x00", b"\xff", b"\x00\x00", b"\x00\x02"])
async def test_noise_bytes_in_front_of_an_answer_are_skipped(tmp_path: Path, noise: bytes) -> None:
    # FIELD_NOTES: a line without bias resistors shows spurious bytes when a driver turns on.
    h = Harness(tmp_path, units=(1, 2))
    h.sim.device(1).noise_prefix = noise
    async with h.running():
        await asyncio.sleep(1.2)
    assert len(h.of("m1")) >= 2
    assert h.status.meters["m1"].consecutive_failures == 0
    assert h.status.lines["rs485"].noise_bytes >= 2 * len(noise)
    assert len(h.of("m2")) >= 2


async def test_a_garbled_answer_is_still_an_error(tmp_path: Path) -> None:
    h = Harness(tmp_path, units=(1,))
    h.sim.device(1).noise_prefix = b"\x00" * 6  # more than noise: the answer is garbled
    async with h.running():
        await asyncio.sleep(1.2)
    assert h.of("m1") == []
    assert h.status.meters["m1"].consecutive_failures >= 2
