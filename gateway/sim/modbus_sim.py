"""Simulated Modbus meters: pymodbus servers that answer a firmware profile's map.

Values are computed at the moment a request arrives, from the injected clock
and each meter's :class:`LoadModel`, then encoded exactly as the profile says
the real device encodes them (data type, word order, scale). One server is
one endpoint; several unit ids on it stand for a multi-drop RS-485 line behind
a serial device server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from functools import partial

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from gateway.clock import Clock
from gateway.profiles import Profile, encode
from gateway.sim.identity_regs import identity_words
from gateway.sim.load import LoadModel

NOMINAL_V = 230.0


@dataclass
class SimulatedMeter:
    meter_id: str
    unit_id: int
    profile: Profile
    model: LoadModel
    failing: bool = False
    """When set, every request gets exception 4 (device failure): a broken meter."""
    reads: int = field(default=0)
    answer_delay_s: float = 0.0
    """Fault injection: host seconds to wait before answering (a device answering late)."""
    serial: int | None = None
    """What the profile's ``serial_number`` identity register answers (None: zeros, no serial)."""
    missing: frozenset[str] = frozenset()
    """Quantities of the profile this unit lacks: a read touching their registers gets exception 2 (illegal
    data address), as an EM24 variant without the export register answers."""

    raw: dict[str, list[int]] = field(default_factory=dict)
    """Fault injection: registers served as they are for these quantities instead of their value (a NaN
    float32 is ``[0x7FC0, 0]``), to see a bad value rejected on its own."""

    def words(self, name: str, value: float) -> list[int]:
        """The registers a quantity answers: its value encoded as the profile says, or the injected raw words."""
        if name in self.raw:
            return list(self.raw[name])
        return encode(self.profile.quantities[name], value)

    def refuses(self, function: int, start: int, count: int) -> bool:
        """Whether a read touches a register this unit lacks (see ``missing``)."""
        return any(q.function == function and q.address < start + count and start < q.end
                   for name, q in self.profile.quantities.items() if name in self.missing)

    @classmethod
    def solar_house(cls, meter_id: str, unit_id: int, profile: Profile, epoch: float, *, pv_kwp: float = 5.0,
                    pv_noon_s: float | None = None) -> SimulatedMeter:
        """A meter in a house with ``pv_kwp`` of solar panels: its export register grows by day, its import
        register by night (see :class:`~gateway.sim.load.LoadModel`); the profile must map ``energy_export``."""
        if "energy_export" not in profile.quantities:
            raise ValueError(f"profile {profile.id} has no energy_export register: a solar house needs one")
        noon = {} if pv_noon_s is None else {"pv_noon_s": pv_noon_s}
        return cls(meter_id, unit_id, profile, LoadModel.for_meter(meter_id, epoch, pv_kwp=pv_kwp, **noon))

    def values(self, t: float) -> dict[str, float]:
        """Every quantity at ``t``. Power is the net through the meter: negative while a solar house feeds in
        (as an SDM630's total system power is); the export register grows then, the import one otherwise."""
        power = self.model.net_w(t)
        per_phase = power / 3
        out = {
            "energy_import": float(self.model.register_wh(t)),
            "energy_export": float(self.model.export_wh(t)),
            "power_total": power,
            "frequency": 50.0,
            "power_factor": 0.97,
        }
        for i, phase in enumerate(("l1", "l2", "l3")):
            out[f"voltage_{phase}"] = NOMINAL_V + i * 0.7
            out[f"current_{phase}"] = abs(per_phase) / NOMINAL_V
            out[f"power_{phase}"] = per_phase
        return out


def _blocks(profile: Profile) -> tuple[list[SimData], list[SimData]]:
    holding: list[int] = []
    inputs: list[int] = []
    for q in profile.quantities.values():
        target = inputs if q.function == 4 else holding
        target.extend(range(q.address, q.address + q.register_count))
    for ident in profile.identity:
        (inputs if ident.function == 4 else holding).extend(range(ident.address, ident.address + ident.register_count))

    def block(addresses: list[int]) -> list[SimData]:
        if not addresses:
            return [SimData(0, count=1, values=0, datatype=DataType.REGISTERS)]
        lo, hi = min(addresses), max(addresses)
        return [SimData(lo, count=hi - lo + 1, values=0, datatype=DataType.REGISTERS)]

    return block(holding), block(inputs)


async def _answer(meter: SimulatedMeter, clock: Clock, function_code: int, start_address: int, address: int,
                  count: int, current_registers: list[int], set_values: object) -> ExcCodes | None:
    if meter.answer_delay_s:
        await asyncio.sleep(meter.answer_delay_s)
    if meter.failing:
        return ExcCodes.DEVICE_FAILURE
    if meter.refuses(4 if function_code == 4 else 3, address, count):
        return ExcCodes.ILLEGAL_ADDRESS
    meter.reads += 1
    values = meter.values(clock.now())
    wanted_fc = 4 if function_code == 4 else 3
    for name, q in meter.profile.quantities.items():
        if q.function != wanted_fc or q.address + q.register_count <= address or q.address >= address + count:
            continue
        if name not in values:
            continue
        for i, word in enumerate(meter.words(name, values[name])):
            current_registers[q.address + i - start_address] = word
    for ident in meter.profile.identity:  # so a scan of the demo's meters identifies each model
        if ident.function != wanted_fc or ident.address + ident.register_count <= address \
                or ident.address >= address + count:
            continue
        for i, word in enumerate(identity_words(ident, meter.unit_id,
                                                  None if meter.serial is None else {"serial_number": meter.serial})):
            if address <= ident.address + i < address + count:
                current_registers[ident.address + i - start_address] = word
    return None


class MeterSimulator:
    """One TCP endpoint serving several simulated meters."""

    def __init__(self, meters: list[SimulatedMeter], clock: Clock, host: str = "127.0.0.1", port: int = 0) -> None:
        self.meters = meters
        self.host = host
        self.port = port
        devices = []
        for meter in meters:
            holding, inputs = _blocks(meter.profile)
            bits = [SimData(0, count=1, values=False, datatype=DataType.BITS)]
            devices.append(SimDevice(meter.unit_id, simdata=(bits, list(bits), holding, inputs),
                                     action=partial(_answer, meter, clock)))
        self._server = ModbusTcpServer(devices, address=(host, port))
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
        self._task = asyncio.create_task(self._server.serve_forever(), name=f"sim:{self.port}")
        for _ in range(200):
            if getattr(self._server, "transport", None) is not None:
                return
            await asyncio.sleep(0.01)
        raise RuntimeError(f"simulated meters did not start on {self.host}:{self.port}")

    async def stop(self) -> None:
        await self._server.shutdown()  # type: ignore[no-untyped-call]
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
