"""Polling meters on one Modbus line or TCP endpoint.

One :class:`ModbusBus` task per physical line/endpoint, one pymodbus client,
so exactly one transaction is ever in flight on the wire. Polls are placed on
a fixed grid (multiples of each meter's poll period in wall time) instead of
"sleep N seconds after the last poll": the schedule cannot drift, and a poll
lands on every 15-minute boundary, which is where the interval engine wants a
real register value.

A meter that fails is backed off on its own; the others keep their grid.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import structlog
from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from gateway.acquisition.read_plan import ReadPlan, WireCost, plan_reads
from gateway.clock import Clock
from gateway.config import BusConfig, ModbusMeterConfig
from gateway.errors import AcquisitionError, DeviceException, DeviceTimeout, ValueRejected
from gateway.intervals import Reading
from gateway.profiles import Profile, Quantity, decode
from gateway.status import OFFLINE_AFTER, GatewayStatus, MeterStatus

log = structlog.get_logger("gateway.modbus")

MAX_STAMP_UNCERTAINTY_S = 5.0
"""A read whose transaction took longer than this (retries, a slow device) is
not used: its timestamp would be too uncertain to place energy in an interval."""

BACKOFF_MAX_S = 900.0
"""A meter that stays offline is still tried at least once per interval."""

WANTED = ("energy_import", "power_total", "voltage_l1")
"""Quantities polled each cycle: the energy register, plus two for the status page."""

Submit = Callable[[Reading], Awaitable[None]]


@dataclass
class _Meter:
    cfg: ModbusMeterConfig
    profile: Profile
    plan: ReadPlan
    quantities: dict[str, Quantity]
    status: MeterStatus
    next_due: float
    last: Reading | None = None


def _make_client(bus: BusConfig) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
    # reconnect_delay=0: this module decides when to reconnect, per poll.
    if bus.kind == "rtu":
        assert bus.device is not None
        return AsyncModbusSerialClient(
            bus.device, framer=FramerType.RTU, baudrate=bus.baud, bytesize=8,
            parity=bus.framing[1], stopbits=int(bus.framing[2]),
            timeout=bus.timeout_s, retries=bus.retries, reconnect_delay=0,
        )
    assert bus.host is not None
    return AsyncModbusTcpClient(
        bus.host, port=bus.port or 502,
        framer=FramerType.RTU if bus.kind == "rtu-over-tcp" else FramerType.SOCKET,
        timeout=bus.timeout_s, retries=bus.retries, reconnect_delay=0,
    )


def wire_cost(bus: BusConfig) -> WireCost:
    bits = 11 if bus.framing in ("8E1", "8O1", "8N2") else 10
    return WireCost(bits_per_char=bits, baud=bus.baud)


class ModbusBus:
    def __init__(self, bus: BusConfig, profiles: dict[str, Profile], clock: Clock, submit: Submit,
                 status: GatewayStatus) -> None:
        self.cfg = bus
        self._clock = clock
        self._submit = submit
        self._meters: list[_Meter] = []
        self.cycle_overruns = 0
        now = clock.now()
        for meter_cfg in bus.meters:
            profile = profiles[meter_cfg.id]
            wanted = [profile.quantities[name] for name in WANTED if name in profile.quantities]
            plan = plan_reads(wanted, max_registers=profile.max_registers_per_read,
                              even_only=profile.registers_even_only, cost=wire_cost(bus))
            where = f"{bus.name}#{meter_cfg.unit_id}"
            meter_status = status.meters.setdefault(
                meter_cfg.id, MeterStatus(meter_cfg.id, "modbus", where, profile.id))
            self._meters.append(_Meter(meter_cfg, profile, plan, {q.name: q for q in wanted}, meter_status,
                                       next_due=_next_slot(now, meter_cfg.poll_s)))

    async def run(self) -> None:
        """Poll until cancelled. Never raises for a meter's fault."""
        if not self._meters:
            return
        client = _make_client(self.cfg)
        log.info("bus_started", bus=self.cfg.name, kind=self.cfg.kind, meters=len(self._meters))
        try:
            while True:
                meter = min(self._meters, key=lambda m: m.next_due)
                await self._clock.sleep_until(meter.next_due)
                await self._poll(client, meter)
                self._reschedule(meter)
        finally:
            client.close()

    def _reschedule(self, meter: _Meter) -> None:
        period = meter.cfg.poll_s
        now = self._clock.now()
        failures = meter.status.consecutive_failures
        if failures >= OFFLINE_AFTER:
            wait = min(period * 2 ** (failures - OFFLINE_AFTER + 1), max(BACKOFF_MAX_S, period))
            meter.next_due = _next_slot(now + wait - period, period)
            return
        meter.next_due += period
        if meter.next_due <= now:
            # The bus could not keep up (or the box was suspended): skip the missed
            # slots rather than firing a burst of late polls.
            self.cycle_overruns += 1
            meter.next_due = _next_slot(now, period)

    async def _poll(self, client: AsyncModbusTcpClient | AsyncModbusSerialClient, meter: _Meter) -> None:
        log_ctx = {"bus": self.cfg.name, "meter": meter.cfg.id, "unit_id": meter.cfg.unit_id}
        before = self._clock.now()
        try:
            if not client.connected and not await client.connect():
                raise DeviceTimeout(f"cannot connect to {self._endpoint()}")
            values, raw = await self._read(client, meter)
        except AcquisitionError as exc:
            first = meter.status.consecutive_failures == 0
            meter.status.read_failed(str(exc))
            # First failure is news; the rest of a streak is noise.
            (log.warning if first else log.debug)("read_failed", error=str(exc),
                                                  failures=meter.status.consecutive_failures, **log_ctx)
            return
        after = self._clock.now()
        if after - before > MAX_STAMP_UNCERTAINTY_S:
            self._reject(meter, "slow_read", f"read took {after - before:.1f} s", raw, log_ctx)
            return
        t = (before + after) / 2
        energy = values.get("energy_import")
        if energy is None:
            self._reject(meter, "no_energy", "profile has no readable energy_import", raw, log_ctx)
            return
        wh = round(energy)
        reading = Reading(meter.cfg.id, round(t * 1000), wh, "modbus")
        problem = _implausible(meter.last, reading, meter.profile.max_power_w)
        if problem:
            self._reject(meter, problem[0], problem[1], raw, log_ctx)
            return
        meter.last = reading
        meter.status.read_ok(t)
        meter.status.last_register_wh = wh
        meter.status.last_power_w = values.get("power_total")
        meter.status.last_voltage_v = values.get("voltage_l1")
        await self._submit(reading)

    def _reject(self, meter: _Meter, reason: str, detail: str, raw: dict[str, list[int]],
                log_ctx: dict[str, object]) -> None:
        meter.status.rejected[reason] += 1
        log.warning("value_rejected", reason=reason, detail=detail, raw=raw, **log_ctx)

    def _endpoint(self) -> str:
        return self.cfg.device or f"{self.cfg.host}:{self.cfg.port or 502}"

    async def _read(self, client: AsyncModbusTcpClient | AsyncModbusSerialClient,
                    meter: _Meter) -> tuple[dict[str, float], dict[str, list[int]]]:
        values: dict[str, float] = {}
        raw: dict[str, list[int]] = {}
        for block in meter.plan.blocks:
            reader = client.read_input_registers if block.function == 4 else client.read_holding_registers
            try:
                response = await reader(block.start, count=block.count, device_id=meter.cfg.unit_id)
            except ModbusException as exc:
                client.close()
                raise DeviceTimeout(f"no valid answer from unit {meter.cfg.unit_id} on {self._endpoint()}: "
                                    f"{exc}") from exc
            if response.isError():
                code = int(getattr(response, "exception_code", 0))
                raise DeviceException(f"unit {meter.cfg.unit_id} answered exception {code} to a read of "
                                      f"{block.count} registers at {block.start:#06x}", code)
            registers: Sequence[int] = response.registers
            for name in block.quantities:
                q = meter.quantities[name]
                offset = q.address - block.start
                chunk = list(registers[offset:offset + q.register_count])
                raw[name] = chunk
                try:
                    values[name] = decode(q, chunk)
                except ValueRejected as exc:
                    meter.status.rejected[exc.reason] += 1
                    log.warning("value_rejected", meter=meter.cfg.id, quantity=name, reason=exc.reason,
                                raw=chunk)
        return values, raw


def _next_slot(now: float, period: float) -> float:
    """The first grid point of ``period`` strictly after ``now``."""
    return (math.floor(now / period) + 1) * period


def _implausible(last: Reading | None, new: Reading, max_power_w: float | None) -> tuple[str, str] | None:
    if last is None:
        return None
    if new.register_wh < last.register_wh:
        return "backwards", f"register went from {last.register_wh} Wh to {new.register_wh} Wh"
    if max_power_w and new.t_ms > last.t_ms:
        hours = (new.t_ms - last.t_ms) / 3_600_000
        limit = max_power_w * hours + 1
        if new.register_wh - last.register_wh > limit:
            return "jump", (f"{new.register_wh - last.register_wh} Wh in {hours * 3600:.0f} s exceeds the "
                            f"meter's {max_power_w:.0f} W maximum")
    return None
