"""Modbus TCP against real pymodbus servers, and RTU-over-TCP against a simulated serial device server."""

from __future__ import annotations

import asyncio
import itertools
import math
from pathlib import Path

from gateway.acquisition.modbus import ModbusBus
from gateway.channels import Channel
from gateway.clock import ManualClock, SystemClock
from gateway.config import BusConfig
from gateway.intervals import Reading
from gateway.profiles import builtin_profile
from gateway.sim.load import LoadModel
from gateway.sim.modbus_sim import MeterSimulator, SimulatedMeter
from gateway.sim.rtu_line import LineOfMeters, RtuTcpServer
from gateway.status import GatewayStatus, MeterHealth
from gateway.web.server import free_port

PERIOD_S = 0.5
SDM630 = builtin_profile("eastron-sdm630")
ABB = builtin_profile("abb-b23")


def _meters(clock: SystemClock) -> list[SimulatedMeter]:
    epoch = math.floor(clock.now())
    return [SimulatedMeter("m1", 1, SDM630, LoadModel.for_meter("m1", epoch)),
            SimulatedMeter("m2", 2, ABB, LoadModel.for_meter("m2", epoch)),
            SimulatedMeter("m3", 3, SDM630, LoadModel.for_meter("m3", epoch))]


def _cfg(kind: str, port: int, meters: list[SimulatedMeter], *, period: float = PERIOD_S,
         timeout: float = 0.1) -> BusConfig:
    return BusConfig.model_validate({
        "name": "ep", "kind": kind, "host": "127.0.0.1", "port": port, "timeout_s": timeout, "retries": 0,
        "meters": [{"id": m.meter_id, "unit_id": m.unit_id, "profile": m.profile.id, "poll_s": period}
                   for m in meters],
    })


async def _run(bus: ModbusBus, seconds: float) -> None:
    task = asyncio.create_task(bus.run())
    await asyncio.sleep(seconds)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_modbus_tcp_with_a_late_device_keeps_the_others_on_schedule() -> None:
    # Every gap counts, the slot where m2 turns late included: that one costs the meter after it one
    # timeout (50 ms), which fits in a tenth of the 1 s period.
    period = 1.0
    clock = SystemClock()
    meters = _meters(clock)
    port = free_port()
    sim = MeterSimulator(meters, clock, port=port)
    await sim.start()
    readings: list[Reading] = []

    async def submit(r: Reading) -> None:
        if r.channel is Channel.IMPORT:  # one reading per poll; channels: test_acq_channels.py
            readings.append(r)

    status = GatewayStatus("gw", "k", clock.now())
    try:
        cfg = _cfg("tcp", port, meters, period=period, timeout=0.05)
        bus = ModbusBus(cfg, {m.meter_id: m.profile for m in meters}, clock, submit, status)
        task = asyncio.create_task(bus.run())
        try:
            while sum(r.meter == "m2" for r in readings) < 2:
                await asyncio.sleep(0.01)
            meters[1].answer_delay_s = 0.3  # answers after the timeout: a device answering late
            await asyncio.sleep(5.2 * period)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    finally:
        await sim.stop()
    by = {m: [r for r in readings if r.meter == m] for m in ("m1", "m2", "m3")}
    assert len(by["m2"]) == 2, "nothing from m2 once it answers late"
    assert status.meters["m2"].health is MeterHealth.OFFLINE
    for m in ("m1", "m3"):
        truth = next(x for x in meters if x.meter_id == m).model
        assert len(by[m]) >= 7
        gaps = [b.t_ms - a.t_ms for a, b in itertools.pairwise(by[m])]
        assert all(abs(g - period * 1000) <= 0.10 * period * 1000 for g in gaps), gaps
        assert all(abs(r.register_wh - truth.register_wh(r.t_ms / 1000)) <= 2 for r in by[m])


async def test_rtu_over_tcp_device_server(tmp_path: Path) -> None:
    clock = SystemClock()
    meters = _meters(clock)
    line = LineOfMeters(meters, clock)
    server = RtuTcpServer(line.devices)
    await server.start()
    readings: list[Reading] = []

    async def submit(r: Reading) -> None:
        if r.channel is Channel.IMPORT:  # one reading per poll; channels: test_acq_channels.py
            readings.append(r)

    status = GatewayStatus("gw", "k", clock.now())
    line.device(3).mode = "exception"
    try:
        bus = ModbusBus(_cfg("rtu-over-tcp", server.port, meters), {m.meter_id: m.profile for m in meters},
                        clock, submit, status)
        await _run(bus, 1.8)
    finally:
        await server.stop()
    assert {r.meter for r in readings} == {"m1", "m2"}
    assert status.meters["m3"].last_error
    assert "exception 4" in status.meters["m3"].last_error
    for m in meters[:2]:
        assert all(abs(r.register_wh - m.model.register_wh(r.t_ms / 1000)) <= 10
                   for r in readings if r.meter == m.meter_id)
    assert status.lines["ep"].transactions >= 6


async def test_polling_follows_a_wall_clock_step_back() -> None:
    # A box that booted with its clock an hour ahead gets corrected by NTP: the wall clock steps back.
    # The poll grid must move with it, not leave the line silent for an hour.
    clock = ManualClock(start=1_800_000_000.0)
    meter = SimulatedMeter("m1", 1, SDM630, LoadModel.for_meter("m1", 1_800_000_000))
    port = free_port()
    sim = MeterSimulator([meter], clock, port=port)
    await sim.start()
    readings: list[Reading] = []

    async def submit(r: Reading) -> None:
        if r.channel is Channel.IMPORT:  # one reading per poll; channels: test_acq_channels.py
            readings.append(r)

    status = GatewayStatus("gw", "k", clock.now())
    cfg = _cfg("tcp", port, [meter], period=10.0, timeout=0.5)
    bus = ModbusBus(cfg, {"m1": SDM630}, clock, submit, status)

    async def tick(seconds: float) -> None:
        clock.advance(seconds)
        await asyncio.sleep(0.05)  # real time for the transaction on the socket

    task = asyncio.create_task(bus.run())
    try:
        await asyncio.sleep(0.1)
        for _ in range(3):
            await tick(10)
        before = len(readings)
        assert before >= 2
        clock.step_wall(-3600)
        for _ in range(6):
            await tick(10)
        after = len(readings) - before
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sim.stop()
    assert after >= 4, f"{after} polls in 60 s after the step"
    stamps = [r.t_ms for r in readings[before:]]
    assert all(b - a == 10_000 for a, b in itertools.pairwise(stamps)), stamps
