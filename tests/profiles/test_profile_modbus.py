"""Every built-in profile, served by a simulated pymodbus device over real TCP.

The served registers are produced with pymodbus's own converters, not with
`gateway.profiles.encode`, so a shared misunderstanding of word order or
scaling between encoder and decoder cannot make the test pass.
"""

from __future__ import annotations

import asyncio
import math
import struct
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Literal, cast

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType as SimType
from pymodbus.simulator import SimData, SimDevice

from gateway.acquisition.read_plan import WireCost, plan_profile, split_block
from gateway.profiles import (
    DataType,
    IdentityRegister,
    Profile,
    Quantity,
    builtin_profiles,
    decode,
    decode_identity,
    identity_matches,
)

DT = AsyncModbusTcpClient.DATATYPE
_PYMODBUS_TYPE = {t: DT[t.name] for t in DataType}
_NOMINAL = {"V": 230.1, "A": 12.345, "W": 4321.5, "Hz": 50.02, "": 0.987, "Wh": 12_345_678.9}
Registers = dict[int, int]  # address -> 16-bit word, per function code


def served_value(q: Quantity, index: int) -> tuple[list[int], float]:
    """Registers to serve for `q` and the SI value a correct decoder must report."""
    si = _NOMINAL.get(q.unit, 100.0) * (1 + index / 100)
    if q.name == "power_l2" and q.datatype.is_signed:
        si = -si  # exporting phase: proves the sign survives word order and scale
    if q.datatype.is_float:
        raw: float | int = si / q.scale
        if q.datatype is DataType.FLOAT32:
            (raw,) = struct.unpack(">f", struct.pack(">f", raw))
    else:
        raw = round(si / q.scale)
    regs = AsyncModbusTcpClient.convert_to_registers(raw, _PYMODBUS_TYPE[q.datatype], word_order=q.word_order)
    return regs, raw * q.scale


def identity_value(ident: IdentityRegister) -> list[int]:
    if ident.datatype == "string":
        text = str(ident.expect or "X").ljust(ident.register_count * 2)
        return AsyncModbusTcpClient.convert_to_registers(text, DT.STRING)
    number = ident.expect if isinstance(ident.expect, int) else 12_345_678
    return AsyncModbusTcpClient.convert_to_registers(number, DT[ident.datatype.upper()], ident.word_order)


def device_image(profile: Profile) -> tuple[dict[int, Registers], dict[str, float]]:
    image: dict[int, Registers] = {3: {}, 4: {}}
    expected: dict[str, float] = {}
    for index, q in enumerate(profile.quantities.values()):
        regs, expected[q.name] = served_value(q, index)
        image[q.function].update(zip(range(q.address, q.end), regs, strict=True))
    for ident in profile.identity:
        image[ident.function].update(enumerate(identity_value(ident), start=ident.address))
    return image, expected


def sim_block(registers: Registers) -> list[SimData]:
    # One contiguous block, gaps read as 0 like on most meters, plus two spare
    # registers so block reads padded for even-only devices stay in range.
    if not registers:
        return [SimData(address=0xFFF0, values=[0], datatype=SimType.REGISTERS)]
    lo, hi = min(registers), min(max(registers) + 2, 0xFFFF)
    values = [registers.get(a, 0) for a in range(lo, hi + 1)]
    return [SimData(address=lo, values=values, datatype=SimType.REGISTERS)]


@asynccontextmanager
async def serve(unit_id: int, image: Mapping[int, Registers]) -> AsyncIterator[AsyncModbusTcpClient]:
    bits = [SimData(address=0, values=[False] * 16, datatype=SimType.BITS)]
    device = SimDevice(id=unit_id, simdata=(bits, bits, sim_block(image[3]), sim_block(image[4])))
    server = ModbusTcpServer(device, address=("127.0.0.1", 0))  # port 0: the OS picks a free one
    await server.serve_forever(background=True)
    try:
        listener = cast(asyncio.Server, server.transport)
        port = listener.sockets[0].getsockname()[1]
        client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
        assert await client.connect()
        try:
            yield client
        finally:
            client.close()
    finally:
        await server.shutdown()  # type: ignore[no-untyped-call]  # pymodbus leaves it unannotated


async def read(
    client: AsyncModbusTcpClient, function: Literal[3, 4], address: int, count: int, unit_id: int
) -> list[int]:
    if function == 3:
        rr = await client.read_holding_registers(address, count=count, device_id=unit_id)
    else:
        rr = await client.read_input_registers(address, count=count, device_id=unit_id)
    assert not rr.isError(), f"FC{function:02d} {address:#06x}+{count}: {rr}"
    return list(rr.registers)


@pytest.mark.parametrize("profile", builtin_profiles(), ids=lambda p: p.id)
async def test_each_quantity_decodes_to_the_served_si_value(profile: Profile) -> None:
    image, expected = device_image(profile)
    unit_id = profile.serial.unit_id
    async with serve(unit_id, image) as client:
        for q in profile.quantities.values():
            regs = await read(client, q.function, q.address, q.register_count, unit_id)
            value = decode(q, regs)
            assert math.isclose(value, expected[q.name], rel_tol=1e-12, abs_tol=1e-12), (q.name, value)
        for ident in profile.identity:
            regs = await read(client, ident.function, ident.address, ident.register_count, unit_id)
            assert identity_matches(ident, regs), (ident.name, decode_identity(ident, regs))


@pytest.mark.parametrize("profile", builtin_profiles(), ids=lambda p: p.id)
async def test_optimal_block_reads_decode_like_single_reads(profile: Profile) -> None:
    image, expected = device_image(profile)
    unit_id = profile.serial.unit_id
    plan = plan_profile(profile, WireCost.from_serial(profile.serial, turnaround_s=0.01))
    decoded: dict[str, float] = {}
    async with serve(unit_id, image) as client:
        for block in plan.blocks:
            assert block.function in (3, 4)
            function: Literal[3, 4] = 3 if block.function == 3 else 4
            regs = await read(client, function, block.start, block.count, unit_id)
            for name, chunk in split_block(block, regs).items():
                decoded[name] = decode(profile.quantities[name], chunk)
    assert decoded.keys() == expected.keys()
    for name, value in decoded.items():
        assert math.isclose(value, expected[name], rel_tol=1e-12, abs_tol=1e-12), (name, value)


def test_string_identities_tell_models_apart() -> None:
    by_profile = {
        p.id: ident for p in builtin_profiles() for ident in p.identity if isinstance(ident.expect, str)
    }
    assert {"abb-b21", "abb-b23", "abb-b24"} <= set(by_profile)
    for pid, ident in by_profile.items():
        served = identity_value(ident)
        matching = {
            other
            for other, o in by_profile.items()
            if o.address == ident.address and identity_matches(o, served)
        }
        assert matching == {pid}
