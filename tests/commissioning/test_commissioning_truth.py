"""Scan reports only devices that really answer, each with its one model; read doubts absurd values."""

from __future__ import annotations

import argparse
import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from gateway.acquisition.modbus import ModbusBus
from gateway.cli import main
from gateway.clock import SystemClock
from gateway.commissioning import ScanResult, scan
from gateway.commissioning.plausible import implausible
from gateway.config import BusConfig
from gateway.intervals import Reading
from gateway.profiles import builtin_profile, decode, encode
from gateway.sim.cli import serve
from gateway.sim.load import LoadModel
from gateway.sim.modbus_sim import MeterSimulator, SimulatedMeter
from gateway.sim.rtu_line import meter_registers
from gateway.sim.tcp_gateway import ModbusTcpGateway
from tests.conftest import free_port

CLOCK = SystemClock()
MODELS = {1: "eastron-sdm630", 3: "eastron-sdm120", 5: "abb-b23", 6: "eastron-sdm230"}


def meters(models: dict[int, str] = MODELS) -> list[SimulatedMeter]:
    epoch = math.floor(CLOCK.now())
    return [SimulatedMeter(f"m{u}", u, builtin_profile(p), LoadModel.for_meter(f"m{u}", epoch))
            for u, p in models.items()]


async def _scan(cfg: dict[str, object], ids: range) -> ScanResult:
    async def discard(_: Reading) -> None:
        return None

    from gateway.status import GatewayStatus

    bus = ModbusBus(BusConfig.model_validate({"name": "t", "timeout_s": 0.1, "retries": 0, **cfg}), {}, CLOCK,
                    discard, GatewayStatus("t", "", CLOCK.now()), use_lock=False)
    task = asyncio.create_task(bus.run())
    try:
        return await scan(bus, ids)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def models_found(result: ScanResult) -> dict[int, str | None]:
    return {f.unit: f.model for f in result.found}


async def test_scan_of_pymodbus_simulator_ignores_its_exception_4_for_absent_ids() -> None:
    """pymodbus answers exception 4 for every id it does not host: those ids are not devices."""
    port = free_port()
    sim = MeterSimulator(meters(), CLOCK, port=port)
    await sim.start()
    try:
        result = await _scan({"kind": "tcp", "host": "127.0.0.1", "port": port}, range(1, 13))
    finally:
        await sim.stop()
    assert models_found(result) == MODELS
    assert set(result.exceptions_only) == set(range(1, 13)) - set(MODELS)
    assert all(codes == {4} for codes in result.exceptions_only.values())


@asynccontextmanager
async def gateway(sources_of: dict[int, dict[str, int | str]] | None = None) -> AsyncIterator[int]:
    ms = meters()
    server = ModbusTcpGateway({m.unit_id: meter_registers(m, CLOCK, (sources_of or {}).get(m.unit_id))
                               for m in ms})
    await server.start()
    try:
        yield server.port
    finally:
        await server.stop()


async def test_scan_treats_gateway_exceptions_as_absent() -> None:
    async with gateway() as port:
        result = await _scan({"kind": "tcp", "host": "127.0.0.1", "port": port}, range(1, 11))
    assert models_found(result) == MODELS
    assert result.exceptions_only == {}  # 0x0B means "nobody there", not "a device said no"


async def test_a_meter_its_registers_cannot_name_is_an_unknown_model_not_a_list() -> None:
    """An SDM whose meter code is in no profile: the serial number fits every SDM, so no model is named."""
    async with gateway({1: {"meter_code": 0x0099}}) as port:
        result = await _scan({"kind": "tcp", "host": "127.0.0.1", "port": port}, range(1, 2))
    [found] = result.found
    assert found.model is None
    assert found.models == []
    assert any("do not say which model" in n for n in found.notes)


def test_read_doubts_values_decoded_with_the_wrong_word_order() -> None:
    profile = builtin_profile("eastron-sdm630")
    truth = {"voltage_l1": 230.2, "frequency": 50.0, "power_total": 2300.0, "energy_import": 1_234_000.0}
    assert implausible(profile, truth) == {}
    wrong = {}
    for name, value in truth.items():
        q = profile.quantities[name]
        wrong[name] = decode(q.model_copy(update={"word_order": "little"}), encode(q, value))
    doubts = implausible(profile, wrong)
    assert {"voltage_l1", "frequency"} <= set(doubts), (wrong, doubts)
    assert "no mains voltage" in doubts["voltage_l1"]
    assert "power factor" in implausible(profile, {"power_factor": 17.0})["power_factor"]


def test_read_with_an_unknown_profile_is_bad_usage() -> None:
    assert main(["read", "--host", "127.0.0.1", "--id", "1", "--profile", "nosuch"]) == 2


async def test_sim_on_a_pty_answers_only_its_ids_and_stops(tmp_path: Path) -> None:
    path = tmp_path / "ttySIM"
    args = argparse.Namespace(meters=["2=eastron-sdm120", "4=abb-b23"], pty=str(path), tcp=None,
                              rtu_over_tcp=False, host="127.0.0.1")
    stop = asyncio.Event()
    task = asyncio.create_task(serve(args, stop))
    for _ in range(100):
        if path.exists():
            break
        await asyncio.sleep(0.02)
    try:
        result = await _scan({"kind": "rtu", "device": str(path), "timeout_s": 0.05}, range(1, 6))
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    assert models_found(result) == {2: "eastron-sdm120", 4: "abb-b23"}
    assert not path.exists()
