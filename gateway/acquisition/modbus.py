"""The bus scheduler: everything that talks on one Modbus line or TCP endpoint.

One :class:`ModbusBus` task per physical line/endpoint owns its transport, so
exactly one transaction is ever in flight on the wire. Every reader goes
through it: the periodic polls, one-off reads from the local API or CLI
(:meth:`ModbusBus.request`, :meth:`ModbusBus.read_values`), scans.

Polls sit on a fixed wall-clock grid, in the order and with the fair shares on an
overbooked line that :mod:`gateway.acquisition.schedule` decides; a meter may poll
its instantaneous values on a different period than its energy register. One-off
requests run in the line's idle gaps, and ahead of waiting polls only within the
bus's ``one_off_share`` of the line (:mod:`gateway.acquisition.one_off`). What the
status page and the log say about the line (counts, rates from
:mod:`gateway.acquisition.line_stats`, outages, overload) is kept by
:mod:`gateway.acquisition.line_report`.

Faults stay local: bounded retries per transaction, then the meter alone is
backed off (capped exponential, still on its grid) and shown offline; it
recovers by itself on the first good answer. A vanished line (USB adapter
unplugged) is a line fault: it is reopened with its own backoff and does not
push any meter into backoff.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import structlog

from gateway.acquisition.energy import ENERGY_REGISTERS, ChannelSeries, channel_series, judge, polled_quantities
from gateway.acquisition.line_report import LineReport
from gateway.acquisition.one_off import BusBusy, OneOffQueue
from gateway.acquisition.portlock import PortBusy, PortLock, endpoint_key
from gateway.acquisition.read_once import read_once
from gateway.acquisition.read_plan import ReadBlock, ReadPlan, plan_reads, split_block
from gateway.acquisition.schedule import (
    PollJob,
    PollSchedule,
    job_specs,
    next_slot,
    poll_wire_s,
)
from gateway.acquisition.transport import (
    FrameError,
    ModbusTcpTransport,
    PortUnavailable,
    RtuTransport,
    Transport,
    make_transport,
    wire_cost,
)
from gateway.acquisition.waits import first_of as _first_of
from gateway.channels import CHANNEL_OF_REGISTER, Channel
from gateway.clock import Clock
from gateway.config import BusConfig, ModbusMeterConfig
from gateway.config.ceiling import modbus_ceiling
from gateway.errors import AcquisitionError, ConfigError, DeviceException, DeviceTimeout, ValueRejected
from gateway.intervals import Reading
from gateway.liveness import BUS_STALL_S, Progress
from gateway.profiles import Profile, Quantity, decode
from gateway.status import OFFLINE_AFTER, GatewayStatus, LineStatus, MeterHealth, MeterStatus

log = structlog.get_logger("gateway.modbus")

MAX_UNIT_ID = 247
MAX_REGISTERS_PER_READ = 125
"""Modbus limits: unit ids 1..247 (0 is broadcast), at most 125 registers per read."""
MAX_STAMP_UNCERTAINTY_S = 5.0
"""A read whose transaction took longer than this (retries, a slow device) is
not used: its timestamp would be too uncertain to place energy in an interval."""

NAP_S = 30.0
"""Longest wait between looks at the wall clock while no poll is due."""

STEP_GUARD_S = 1.0
"""Slack on the monotonic bound of a wall-precise wait."""

WALL_STEP_S = 2.0
"""A change of wall minus monotonic time larger than this is a clock step that moves the poll grid."""

BACKOFF_MAX_S = 900.0
"""A meter that stays offline is still tried at least once per interval."""

REOPEN_MIN_S = 0.5
REOPEN_MAX_S = 30.0
"""Host seconds between attempts to reopen a vanished line: a replugged USB adapter
reappears within a second or two; a dead one should not spin the CPU."""

LOCK_RETRY_S = 5.0
"""Host seconds between attempts to take a line a commissioning tool is using."""

RATE_WINDOW_S = 60
"""Line rates and utilisation cover this much recent (monotonic) time, in whole seconds."""

WANTED = ("energy_import", "power_total", "voltage_l1")
"""Quantities polled for a meter whose config lists none (``quantities``): the energy register, plus two for
the status page; the export register too where the profile maps one (:func:`polled_quantities`). With a
separate instantaneous period, energy_* quantities go on the energy grid, the rest on the other."""
ENERGY_IMPORT = "energy_import"
ENERGY_EXPORT = "energy_export"
ILLEGAL_DATA_ADDRESS = 2
"""Modbus exception 2: the device has no such register (some EM24 variants for their export register)."""

Submit = Callable[[Reading], Awaitable[None]]


@dataclass
class _Meter:
    cfg: ModbusMeterConfig
    profile: Profile
    quantities: dict[str, Quantity]
    status: MeterStatus
    order: int
    series: dict[Channel, ChannelSeries] = field(default_factory=dict)
    """One per energy channel the meter has (import; export where its profile maps the register)."""
    refused: list[Quantity] = field(default_factory=list)
    """Registers this unit turned out to lack (its export register): no read may cover them."""
    device_failures: int = 0
    """Failures the device is to blame for (not line outages): drives its backoff."""
    log_ctx: dict[str, object] = field(default_factory=dict)
    """Its bus, id and unit id for log events, filled on its first poll (never mutated by a log call)."""

    @property
    def max_power_w(self) -> float:
        """The most this meter can measure: config, else its profile, else the default ceiling."""
        return modbus_ceiling(self.cfg, self.profile).watts


_Job = PollJob[_Meter]


def _failing(meter: _Meter) -> bool:
    return meter.status.consecutive_failures > 0


class ModbusBus:
    """Scheduler and sole user of one line. Construct, then ``await run()``."""

    def __init__(self, bus: BusConfig, profiles: dict[str, Profile], clock: Clock, submit: Submit,
                 status: GatewayStatus, *, transport: Transport | None = None, use_lock: bool = True,
                 wanted: tuple[str, ...] = WANTED) -> None:
        self.cfg = bus
        self._clock = clock
        self._submit = submit
        self._transport: Transport = transport or make_transport(bus)
        self._use_lock = use_lock
        self._schedule = PollSchedule[_Meter](wire_timed=bus.kind != "tcp")
        self._meters: list[_Meter] = []
        self.one_off = OneOffQueue(bus, clock)
        self.progress = Progress(f"bus:{bus.name}", BUS_STALL_S)
        """Each transaction is a step: the daemon's watchdog stops when one never ends."""
        self._wall_offset: float | None = None
        """Wall minus monotonic time when the grid was last checked: a change is a wall-clock step."""
        self.cycle_times: deque[tuple[float, float]] = deque(maxlen=256)
        """(slot, seconds from the slot to its last poll's end), recent cycles, for benchmarks."""
        self.line = status.lines.setdefault(bus.name, LineStatus(bus.name, bus.kind, self._transport.endpoint,
                                                                 window_s=RATE_WINDOW_S))
        self._report = LineReport(self.line, bus.name, clock, RATE_WINDOW_S)
        now = clock.now()
        for order, meter_cfg in enumerate(bus.meters):
            profile = profiles[meter_cfg.id]
            quantities = polled_quantities(meter_cfg.quantities or wanted, profile)
            where = f"{bus.name}#{meter_cfg.unit_id}"
            meter_status = status.meters.setdefault(
                meter_cfg.id, MeterStatus(meter_cfg.id, "modbus", where, profile.id))
            meter = _Meter(meter_cfg, profile, quantities, meter_status, order)
            meter.series = channel_series(meter_cfg.id, quantities, meter.max_power_w)
            self._meters.append(meter)
            for names, period, energy in job_specs(meter_cfg, tuple(quantities)):
                self._add_job(meter, names, period, now, energy=energy)
        self.line.poll_period_s = self._schedule.shortest_period_s
        self.line.achievable_period_s = self.line.poll_period_s
        self.line.needed_period_s = self._schedule.needed_period_s

    def _add_job(self, meter: _Meter, names: tuple[str, ...], period: float, now: float, *, energy: bool) -> None:
        plan, wire_s = self._plan(meter, names)
        self._schedule.add(_Job(meter, names, plan, period, next_slot(now, period), energy, meter.order,
                                cost_s=wire_s))

    def _plan(self, meter: _Meter, names: tuple[str, ...]) -> tuple[ReadPlan, float]:
        """The read plan of a job and its wire time. The planner puts the export register in the import
        register's block wherever one block costs less wire time than two (an SDM630's 0x48 and 0x4A)."""
        cost = wire_cost(self.cfg, meter.cfg.turnaround_s)
        plan = plan_reads([meter.quantities[n] for n in names], max_registers=meter.profile.max_registers_per_read,
                          even_only=meter.profile.registers_even_only, cost=cost, avoid=meter.refused)
        return plan, poll_wire_s(plan, cost, self.cfg.inter_frame_gap_s or 0.0, self.cfg.device_switch_delay_s)

    # ---- public API for one-off reads -------------------------------------------------

    @property
    def profiles(self) -> dict[str, Profile]:
        """The profiles this line's meters use, by id (custom files included): one-off reads may name them."""
        return {m.profile.id: m.profile for m in self._meters}

    async def request(self, unit: int, function: int, start: int, count: int, *,
                      turnaround_s: float = 0.0) -> list[int]:
        """One read transaction, queued behind the one in flight; the bus must be running.

        Raises the same errors as a poll would (DeviceTimeout, DeviceException,
        FrameError, PortUnavailable) after the bus's retries; BusBusy at once when the queue is full.
        """
        if not 1 <= unit <= MAX_UNIT_ID:
            raise ConfigError(f"unit id {unit} is outside 1..{MAX_UNIT_ID}")
        if function not in (3, 4) or not 0 <= start <= 0xFFFF or not 1 <= count <= MAX_REGISTERS_PER_READ:
            raise ConfigError(f"cannot read {count} registers at {start} with function {function}")
        return await self.one_off.submit(unit, function, start, count, turnaround_s)

    async def read_values(self, unit: int, profile: Profile,
                          names: Iterable[str] | None = None) -> tuple[dict[str, float], dict[str, str]]:
        """Decode a profile's quantities once (every one by default), through the scheduler.

        Returns (values, problems): a quantity that failed decoding or whose
        block failed is listed in problems with the reason, not silently missing.
        Raises BusBusy at once when the line already has enough one-off reads in progress.
        """
        async with self.one_off.read():
            return await self._read_values(unit, profile, names)

    async def _read_values(self, unit: int, profile: Profile,
                           names: Iterable[str] | None) -> tuple[dict[str, float], dict[str, str]]:
        # A configured meter's turnaround applies to one-off reads too, or they time out where polls do not.
        turnaround = next((m.cfg.turnaround_s for m in self._meters if m.cfg.unit_id == unit), 0.0)

        async def request(function: int, start: int, count: int) -> list[int]:
            return await self.request(unit, function, start, count, turnaround_s=turnaround)

        wanted = [profile.quantities[n] for n in (names or profile.quantities)]
        return await read_once(request, profile, wanted, wire_cost(self.cfg, turnaround))

    # ---- the scheduler loop -------------------------------------------------------------

    async def run(self) -> None:
        """Poll and serve requests until cancelled. Never raises for a meter's fault."""
        lock = PortLock(self._lock_key(), owner=f"meter-gateway bus {self.cfg.name}") if self._use_lock else None
        try:
            if lock is not None:
                await self._take_lock(lock)
                if isinstance(self._transport, RtuTransport) and self.cfg.kind == "rtu":
                    self._transport.lock_device_on_open(lock.owner, lock.key)
            log.info("bus_started", bus=self.cfg.name, kind=self.cfg.kind, endpoint=self._transport.endpoint,
                     meters=len(self._meters))
            self._report.restart_rates()
            reopen_delay = REOPEN_MIN_S
            while True:
                job = await self._next_work()
                try:
                    if job is None:
                        await self._serve_request()
                    else:
                        if await self._poll(job):
                            self._reschedule(job)
                    reopen_delay = REOPEN_MIN_S
                    self._report.up()
                except PortUnavailable as exc:
                    self._report.down(str(exc), reopen_delay)
                    # Line outage: wait in host time (a physical replug), then try again.
                    await asyncio.sleep(reopen_delay)
                    reopen_delay = min(reopen_delay * 2, REOPEN_MAX_S)
                    self._schedule.resync(self._clock.now())  # once per meter when it is back, not per slot missed
        finally:
            self._transport.close()
            self.line.connected = False
            self.one_off.cancel_all()
            if lock is not None:
                lock.release()

    def _lock_key(self) -> str:
        if self.cfg.kind == "rtu":
            return endpoint_key(device=self.cfg.device)
        return endpoint_key(host=self.cfg.host, port=self.cfg.port or 502)

    async def _take_lock(self, lock: PortLock) -> None:
        warned = False
        while True:
            try:
                lock.acquire()
                return
            except PortBusy as exc:
                if not warned:
                    log.warning("bus_waiting_for_line", bus=self.cfg.name, error=str(exc))
                    warned = True
                await asyncio.sleep(LOCK_RETRY_S)

    async def _next_work(self) -> _Job | None:
        """The next poll to run, or None to serve the queued one-off request at the head."""
        while True:
            self._follow_wall_steps()
            job = self._schedule.pick(_failing)
            one_off_wait = self.one_off.wait_s(None if job is None else job.next_due)
            if one_off_wait is not None and one_off_wait <= 0:
                return None
            now = self._clock.now()
            if job is not None and job.next_due <= now:
                return job
            if (change := self._schedule.idle(now)) is not None:
                self._report.overload(change, self._schedule.overloaded_since)
            self._report.refresh_rates()
            self.one_off.arrived.clear()
            waits: list[Awaitable[object]] = [self.one_off.arrived.wait()]
            if job is not None:
                waits.append(self._sleep_until(job.next_due))
            if one_off_wait is not None:
                waits.append(self._clock.sleep(one_off_wait))
            await _first_of(*waits)

    def _follow_wall_steps(self) -> None:
        """Move the poll grid with a wall-clock step (NTP correcting a box that booted with a wrong time).

        Polls are due on the wall-clock grid; after a step back of an hour every slot would lie an hour
        ahead and the line would fall silent for that hour. Shifting each due time by the step keeps the
        wait until each poll what it was; a forward step would otherwise count as missed cycles.
        """
        offset = self._clock.now() - self._clock.monotonic()
        if self._wall_offset is None:
            self._wall_offset = offset
            return
        step = offset - self._wall_offset
        if abs(step) < WALL_STEP_S:
            return  # NTP slewing, not a step; also re-based below once it adds up
        self._wall_offset = offset
        log.warning("wall_clock_step", bus=self.cfg.name, step_s=round(step, 3))
        self._schedule.shift(step)
        # Noticed late (a wall-precise wait ends by its monotonic bound): a slot the shifted grid puts in the
        # past is read once, now, as after a stall, not once late and again at once for the next slot.
        self._schedule.resync(self._clock.now())
        if self.line.overloaded_since is not None:
            self.line.overloaded_since += step

    async def _sleep_until(self, wall: float) -> object:
        """Wait for a wall-clock instant, but never longer in monotonic time than it looked when we began.

        Waits are bounded by NAP_S so that a wall-clock step is noticed (and the grid moved with it) soon;
        a step back during the last, wall-precise part of a wait ends it after the monotonic span it had.
        """
        remaining = wall - self._clock.now()
        if remaining > NAP_S:
            await self._clock.sleep(NAP_S)
            return None
        await _first_of(self._clock.sleep_until(wall), self._clock.sleep(remaining + STEP_GUARD_S))
        return None

    async def _serve_request(self) -> None:
        req = self.one_off.pop()
        if req.future.done():  # the caller gave up
            return
        # The caller may give up (time out) while its read is on the wire: then its future is already
        # cancelled and must not be set, or the InvalidStateError would take the whole line down.
        future = req.future
        t0 = self._clock.monotonic()
        try:
            registers = await self._transact(req.unit, req.function, req.start, req.count, req.turnaround_s)
        except PortUnavailable as exc:
            _fail(future, exc)
            raise
        except AcquisitionError as exc:
            _fail(future, exc)
            return
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            # A bug must not leave the caller waiting forever; the bus task's supervisor restarts us.
            _fail(future, exc)
            raise
        finally:
            self.one_off.charge(self._clock.monotonic() - t0)
        if not future.done():
            future.set_result(registers)

    async def _transact(self, unit: int, function: int, start: int, count: int, turnaround_s: float,
                        attempts: int | None = None) -> list[int]:
        """One logical read with bounded retries (polls retry later in their slot instead: ``attempts=1``);
        every attempt is counted on the line."""
        last: AcquisitionError | None = None
        for _attempt in range(attempts or self.cfg.retries + 1):
            t0 = self._clock.monotonic()
            try:
                registers = await self.progress.step(
                    self._transport.transact(unit, function, start, count, turnaround_s=turnaround_s))
            except DeviceException as exc:
                self._record(t0, ok=False, error=str(exc))
                raise  # the device answered: asking again gets the same answer
            except PortUnavailable as exc:
                self._record(t0, ok=False, error=str(exc), line_down=True)
                raise
            except (DeviceTimeout, FrameError) as exc:
                self._record(t0, ok=False, error=str(exc))
                last = exc
                continue
            self._record(t0, ok=True)
            return registers
        assert last is not None
        raise last

    def _record(self, t0: float, *, ok: bool, error: str | None = None, line_down: bool = False) -> None:
        self._report.record(t0, ok=ok, error=error, line_down=line_down, noise_bytes=self._transport.noise_bytes)

    # ---- polling ------------------------------------------------------------------------

    def _reschedule(self, job: _Job, *, polled: bool = True) -> None:
        period = job.period
        now = self._clock.now()
        meter = job.meter
        backoff = None
        if job.energy and meter.device_failures >= OFFLINE_AFTER:
            backoff = min(period * 2 ** (meter.device_failures - OFFLINE_AFTER + 1), max(BACKOFF_MAX_S, period))
        done = self._schedule.done(job, now, backoff_s=backoff, polled=polled)
        if done.overrun:
            self.line.cycle_overruns += 1
        if done.change is not None:
            self._report.overload(done.change, self._schedule.overloaded_since)
        if self.line.overloaded and self._schedule.achieved_s is not None:
            self.line.achievable_period_s = self._schedule.achieved_s
        if done.cycle_s is not None:
            self.line.last_cycle_s = done.cycle_s
            self.cycle_times.append((done.slot, done.cycle_s))

    async def _poll(self, job: _Job) -> bool:
        """One attempt at a job. False when the caller must not reschedule it: put back for a retry later
        in its slot, or skipped and rescheduled already."""
        meter = job.meter
        if not job.energy and meter.status.health == MeterHealth.OFFLINE:
            self._reschedule(job, polled=False)  # the energy poll is the backed-off probe; do not hammer a dead device
            return False
        log_ctx = meter.log_ctx
        if not log_ctx:  # built once per meter, not per poll: it is only read when something goes wrong
            log_ctx.update(bus=self.cfg.name, meter=meter.cfg.id, unit_id=meter.cfg.unit_id)
        before = self._clock.now()
        if job.retries_used == 0:
            self._schedule.begin(job, self._clock.monotonic())
        try:
            values, raw = await self._read(job)
        except PortUnavailable as exc:
            job.retries_used = 0
            meter.status.read_failed(str(exc))
            raise
        except (DeviceTimeout, FrameError) as exc:
            if job.retries_used < self.cfg.retries:
                job.retries_used += 1
                log.debug("read_retry_later", error=str(exc), retry=job.retries_used, **log_ctx)
                return False
            job.retries_used = 0
            self._failed(meter, exc, log_ctx)
            return True
        except AcquisitionError as exc:
            job.retries_used = 0
            self._failed(meter, exc, log_ctx)
            return True
        job.retries_used = 0
        await self._use(job, values, raw, before, log_ctx)
        return True

    def _failed(self, meter: _Meter, exc: AcquisitionError, log_ctx: dict[str, object]) -> None:
        first = meter.status.consecutive_failures == 0
        meter.device_failures += 1
        meter.status.read_failed(str(exc))
        # First failure is news; the rest of a streak is noise.
        (log.warning if first else log.debug)("read_failed", error=str(exc),
                                              failures=meter.status.consecutive_failures, **log_ctx)

    async def _use(self, job: _Job, values: dict[str, float], raw: dict[str, list[int]], before: float,
                   log_ctx: dict[str, object]) -> None:
        """Turn a successful read into status and, for an energy poll, a reading per channel.

        Each channel is judged on its own (:mod:`gateway.acquisition.energy`): a value of one that failed
        decoding (counted and logged in :meth:`_read`) or is implausible is rejected, and the other's
        reading of the same poll still goes on, with the same timestamp.
        """
        meter = job.meter
        after = self._clock.now()
        t = (before + after) / 2
        meter.device_failures = 0
        if "power_total" in values:
            meter.status.last_power_w = values["power_total"]
        if "voltage_l1" in values:
            meter.status.last_voltage_v = values["voltage_l1"]
        for name, value in values.items():
            if name not in ENERGY_REGISTERS:  # a register is shown once its reading is accepted, below
                meter.status.set_value(name, value, meter.quantities[name].unit, t)
        if not job.energy:
            return
        if after - before > MAX_STAMP_UNCERTAINTY_S:
            self._reject(meter, "slow_read", f"read took {after - before:.1f} s", raw, log_ctx)
            return
        if Channel.IMPORT not in meter.series:
            self._reject(meter, "no_energy", "profile has no readable energy_import", raw, log_ctx)
        offers = judge(meter.series.values(), values, round(t * 1000), "modbus")
        for series, offered, old_wh in offers:
            if not offered.problem and not offered.new_series:
                continue  # the usual case: no context dict to build
            ctx = {**log_ctx, "channel": series.channel.value}
            if offered.problem:
                self._reject(meter, *offered.problem, raw, ctx)
            if offered.new_series:
                log.warning("register_reset_detected", old_wh=old_wh, new_wh=offered.submit[0].register_wh, **ctx)
        if any(offered.accepted for _, offered, _ in offers):
            meter.status.read_ok(t)
        for series, offered, _ in offers:
            if offered.accepted:
                wh = offered.submit[-1].register_wh
                if series.channel is Channel.IMPORT:
                    meter.status.last_register_wh = wh
                meter.status.set_value(series.register, float(wh), "Wh", t)
        for _, offered, _ in offers:
            for reading in offered.submit:
                await self._submit(reading)

    def _reject(self, meter: _Meter, reason: str, detail: str, raw: dict[str, list[int]],
                log_ctx: dict[str, object]) -> None:
        meter.status.rejected[reason] += 1
        log.warning("value_rejected", reason=reason, detail=detail, raw=raw, **log_ctx)

    async def _read(self, job: _Job) -> tuple[dict[str, float], dict[str, list[int]]]:
        meter = job.meter
        values: dict[str, float] = {}
        raw: dict[str, list[int]] = {}
        for block in job.plan.blocks:
            try:
                registers = await self._transact(meter.cfg.unit_id, block.function, block.start, block.count,
                                                 meter.cfg.turnaround_s, attempts=1)
            except DeviceException as exc:
                if not await self._export_unavailable(meter, block, exc):
                    raise
                if block.quantities == (ENERGY_EXPORT,):
                    continue
                return await self._read(job)  # the block without the export register, on the new plan
            for name, chunk in split_block(block, registers).items():
                raw[name] = chunk
                try:
                    values[name] = decode(meter.quantities[name], chunk)
                except ValueRejected as exc:
                    meter.status.rejected[exc.reason] += 1
                    channel = {"channel": CHANNEL_OF_REGISTER[name].value} if name in CHANNEL_OF_REGISTER else {}
                    log.warning("value_rejected", bus=self.cfg.name, meter=meter.cfg.id, quantity=name,
                                reason=exc.reason, raw=chunk, **channel)
        return values, raw

    async def _export_unavailable(self, meter: _Meter, block: ReadBlock, exc: DeviceException) -> bool:
        """Whether exception 2 on a block means this unit has no export register; if so, it is read without one.

        Some variants of a model lack the register its profile maps (an EM24's 0x5C, see its profile).
        When the block held other quantities too, the export register alone is asked once: only if that is
        refused as well is the export channel dropped (until the gateway restarts), so a wrong address
        elsewhere in a custom profile does not cost the meter its export channel.
        """
        if exc.code != ILLEGAL_DATA_ADDRESS or ENERGY_EXPORT not in block.quantities:
            return False
        q = meter.quantities[ENERGY_EXPORT]
        if block.quantities != (ENERGY_EXPORT,):
            try:
                await self._transact(meter.cfg.unit_id, q.function, q.address, q.register_count,
                                     meter.cfg.turnaround_s, attempts=1)
            except DeviceException as alone:
                if alone.code != ILLEGAL_DATA_ADDRESS:
                    return False
            else:
                return False  # it answers alone: the fault is elsewhere in the block
        meter.refused.append(meter.quantities.pop(ENERGY_EXPORT))
        meter.series.pop(Channel.EXPORT, None)
        for job in self._schedule.jobs:
            if job.meter is meter and ENERGY_EXPORT in job.names:
                job.names = tuple(n for n in job.names if n != ENERGY_EXPORT)
                job.plan, job.cost_s = self._plan(meter, job.names)
        meter.status.rejected["export_unavailable"] += 1
        log.warning("export_register_unavailable", bus=self.cfg.name, meter=meter.cfg.id,
                    unit_id=meter.cfg.unit_id, address=f"{q.address:#06x}", error=str(exc),
                    hint="this unit has no export register (some hardware variants lack it): it is read without "
                         "an export channel from now on; restart the gateway if its firmware changed")
        return True


def _fail(future: asyncio.Future[list[int]], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


__all__ = ["BusBusy", "ModbusBus", "ModbusTcpTransport", "RtuTransport", "polled_quantities", "wire_cost"]
