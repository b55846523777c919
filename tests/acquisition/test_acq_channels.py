"""Import and export channels over real Modbus sockets (TCP and RTU on a pty) against the simulator.

The clock is a ManualClock: each step moves it one poll period and waits (real time, bounded) for that
poll's readings, so a register value is compared with the simulated meter's at the very instant polled.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from gateway.acquisition.modbus import ModbusBus
from gateway.channels import Channel
from gateway.clock import ManualClock
from gateway.config import BusConfig
from gateway.intervals import Reading
from gateway.profiles import Profile, builtin_profile, load_profile_file
from gateway.sim.load import LoadModel
from gateway.sim.modbus_sim import MeterSimulator, SimulatedMeter
from gateway.sim.rtu_line import LineOfMeters, RtuLine
from gateway.status import GatewayStatus, MeterHealth
from gateway.web.server import free_port

SDM630 = builtin_profile("eastron-sdm630")
EM24 = builtin_profile("carlo-gavazzi-em24")
PROFILES = Path(__file__).resolve().parents[2] / "firmware_profiles"
NOON = 1_798_459_200.0
"""2026-12-28 12:00 UTC: the simulated panels' noon (a solar house exports then)."""
MIDNIGHT = NOON + 12 * 3600
PERIOD_S = 60.0
WAIT_S = 10.0
"""Real seconds a poll may take on a loaded box; loopback answers in milliseconds."""
NAN32 = [0x7FC0, 0x0000]


@dataclass
class Scripted:
    """A meter whose registers follow scripts, one value per poll (stands in for LoadModel)."""

    start: float
    imports: list[int]
    exports: list[int]

    def _step(self, t: float, script: list[int]) -> int:
        return script[min(max(int((t - self.start) // PERIOD_S), 0), len(script) - 1)]

    def register_wh(self, t: float) -> int:
        return self._step(t, self.imports)

    def export_wh(self, t: float) -> int:
        return self._step(t, self.exports)

    def power_w(self, t: float) -> float:
        return 100.0

    def net_w(self, t: float) -> float:
        return 100.0


@dataclass
class Rig:
    """One bus, one simulated endpoint (TCP, or an RTU line on a pty), the readings it submits by channel."""

    meters: list[SimulatedMeter]
    clock: ManualClock
    kind: str = "tcp"
    tmp_path: Path | None = None
    quantities: list[str] | None = None
    readings: list[Reading] = field(default_factory=list)
    reads_at: list[int] = field(default_factory=list)
    """The simulator's request count when each poll's import reading came: its difference is requests per poll."""

    def __post_init__(self) -> None:
        self.status = GatewayStatus("gw", "k", self.clock.now())

    def of(self, channel: Channel, meter: str | None = None) -> list[Reading]:
        return [r for r in self.readings if r.channel is channel and (meter is None or r.meter == meter)]

    async def _submit(self, r: Reading) -> None:
        self.readings.append(r)
        if r.channel is Channel.IMPORT:
            self.reads_at.append(sum(m.reads for m in self.meters))

    @asynccontextmanager
    async def running(self) -> AsyncIterator[ModbusBus]:
        meters = [{"id": m.meter_id, "unit_id": m.unit_id, "profile": m.profile.id, "poll_s": PERIOD_S,
                   **({"quantities": self.quantities} if self.quantities else {})} for m in self.meters]
        profiles = {m.meter_id: m.profile for m in self.meters}
        if self.kind == "tcp":
            sim = MeterSimulator(self.meters, self.clock, port=free_port())
            await sim.start()
            cfg = BusConfig.model_validate({"name": "ep", "host": "127.0.0.1", "port": sim.port, "timeout_s": 1.0,
                                            "retries": 0, "meters": meters})
        else:
            assert self.tmp_path is not None
            line = RtuLine(LineOfMeters(self.meters, self.clock).devices, self.tmp_path / "ttyRS485")
            line.start()
            cfg = BusConfig.model_validate({"name": "ep", "kind": "rtu", "device": str(line.path), "baud": 9600,
                                            "timeout_s": 1.0, "retries": 0, "meters": meters})
        bus = ModbusBus(cfg, profiles, self.clock, self._submit, self.status, use_lock=False)
        task = asyncio.create_task(bus.run())
        try:
            await asyncio.sleep(0.05)  # the bus has taken the clock's time and put its polls on the grid
            yield bus
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            if self.kind == "tcp":
                await sim.stop()
            else:
                line.stop()

    async def poll(self, seconds: float = PERIOD_S, until: Callable[[], bool] | None = None) -> None:
        """Move the clock to the next slot and wait for every meter's poll of it (its import reading, or
        ``until``)."""
        polls = len(self.reads_at)
        self.clock.advance(seconds)
        async with asyncio.timeout(WAIT_S):
            while not (until() if until else len(self.reads_at) >= polls + len(self.meters)):
                await asyncio.sleep(0.005)


def _without_export(profile: Profile, tmp_path: Path) -> Profile:
    text = (PROFILES / f"{profile.id}.toml").read_text()
    block = text[text.index("[quantities.energy_export]"):]
    path = tmp_path / f"{profile.id}-import-only.toml"
    path.write_text(text.replace(block, "").replace(f'id = "{profile.id}"', f'id = "{profile.id}-import-only"'))
    return load_profile_file(path)


async def test_a_solar_house_exports_by_day_and_imports_by_night_two_readings_per_poll_in_three_requests() -> None:
    clock = ManualClock(start=NOON - 2 * PERIOD_S)
    house = SimulatedMeter.solar_house("house", 1, SDM630, NOON - 3600, pv_kwp=5.0)
    rig = Rig([house], clock)
    async with rig.running():
        for _ in range(5):
            await rig.poll()
    clock.advance(MIDNIGHT - clock.now() - PERIOD_S)  # a bus started again at night (a jump would be an overrun)
    async with rig.running():
        for _ in range(5):
            await rig.poll()
    imports, exports = rig.of(Channel.IMPORT), rig.of(Channel.EXPORT)
    assert len(imports) == len(exports) == 10
    for i, e in zip(imports, exports, strict=True):
        # One poll, one instant: the same t_ms on both; each value the meter's register then (float32 kWh:
        # within a Wh), its own modulus (a float does not wrap) and the meter's ceiling.
        assert i.t_ms == e.t_ms
        t = i.t_ms / 1000
        assert abs(i.register_wh - house.model.import_wh(t)) <= 1
        assert abs(e.register_wh - house.model.export_wh(t)) <= 1
        assert (i.register_modulus_wh, e.register_modulus_wh) == (None, None)
        assert i.max_power_w == e.max_power_w == SDM630.max_power_w
    day_i, night_i = imports[:5], imports[5:]
    day_e, night_e = exports[:5], exports[5:]
    assert day_e[-1].register_wh - day_e[0].register_wh > 4 * PERIOD_S * 2000 / 3600, "feeds in about noon"
    assert day_i[-1].register_wh - day_i[0].register_wh <= 1, "and draws nothing from the grid"
    assert night_e[-1].register_wh - night_e[0].register_wh <= 1, "no feed-in at night"
    assert night_i[-1].register_wh - night_i[0].register_wh > 4 * PERIOD_S * 200 / 3600, "it imports"
    assert rig.status.meters["house"].values["energy_export"].value == exports[-1].register_wh
    assert rig.status.meters["house"].last_register_wh == imports[-1].register_wh
    assert not rig.status.meters["house"].rejected
    # The export register rides in the import register's request: three per poll with it or without it.
    per_poll = {b - a for a, b in zip(rig.reads_at, rig.reads_at[1:], strict=False)}
    assert per_poll == {3}, per_poll


async def test_without_an_export_register_a_meter_has_no_export_channel_and_the_same_requests(tmp_path: Path) -> None:
    clock = ManualClock(start=NOON)
    profile = _without_export(SDM630, tmp_path)
    meter = SimulatedMeter("flat", 1, profile, LoadModel.for_meter("flat", NOON - 3600))
    rig = Rig([meter], clock)
    async with rig.running():
        for _ in range(3):
            await rig.poll()
    assert len(rig.of(Channel.IMPORT)) == 3
    assert rig.of(Channel.EXPORT) == []
    assert "energy_export" not in rig.status.meters["flat"].values
    assert {b - a for a, b in zip(rig.reads_at, rig.reads_at[1:], strict=False)} == {3}


async def test_a_bad_value_on_one_channel_is_rejected_alone_and_the_other_reading_goes_on() -> None:
    clock = ManualClock(start=NOON)
    house = SimulatedMeter.solar_house("house", 1, SDM630, NOON - 3600)
    rig = Rig([house], clock)
    with capture_logs() as logs:
        async with rig.running():
            status = rig.status.meters["house"]
            await rig.poll()
            house.raw["energy_export"] = NAN32
            await rig.poll()
            await rig.poll()
            house.raw = {"energy_import": NAN32}
            await rig.poll(until=lambda: len(rig.of(Channel.EXPORT)) == 2)
            house.raw = {"energy_import": NAN32, "energy_export": NAN32}
            await rig.poll(until=lambda: status.rejected["nan"] == 5)  # nothing at all from this one
            house.raw = {}
            await rig.poll()
    imports, exports = rig.of(Channel.IMPORT), rig.of(Channel.EXPORT)
    t0 = imports[0].t_ms
    polled = [round((r.t_ms - t0) / 1000 / PERIOD_S) for r in imports], [round((r.t_ms - t0) / 1000 / PERIOD_S)
                                                                          for r in exports]
    assert polled == ([0, 1, 2, 5], [0, 3, 5]), "each poll gave the readings of its good values, no more, no less"
    assert status.rejected["nan"] == 5, "each bad value counted"
    rejected = [e for e in logs if e["event"] == "value_rejected"]
    assert sorted(e["quantity"] for e in rejected) == ["energy_export"] * 3 + ["energy_import"] * 2
    assert status.health is MeterHealth.ONLINE


async def test_each_channel_judges_its_own_series_a_glitch_and_a_reset_of_the_export_register() -> None:
    clock = ManualClock(start=NOON)
    model = Scripted(NOON + PERIOD_S, imports=[1_000 + 10 * k for k in range(12)],
                     exports=[5_000, 5_010, 3, 5_020, 5_030, 7, 9, 11, 13, 15, 17, 19])
    meter = SimulatedMeter("m", 1, SDM630, model)  # type: ignore[arg-type]
    rig = Rig([meter], clock)
    with capture_logs() as logs:
        async with rig.running():
            for _ in range(12):
                await rig.poll()
    imports = [r.register_wh for r in rig.of(Channel.IMPORT)]
    exports = [r.register_wh for r in rig.of(Channel.EXPORT)]
    assert imports == [1_000 + 10 * k for k in range(12)], "the import channel never noticed"
    assert 3 not in exports, "the single glitch is not passed on"
    assert exports[:4] == [5_000, 5_010, 5_020, 5_030]
    assert exports[4:] == [7, 9, 11, 13, 15, 17, 19], "the new series confirmed by three reads, in order"
    resets = [e for e in logs if e["event"] == "register_reset_detected"]
    assert [(e["channel"], e["old_wh"], e["new_wh"]) for e in resets] == [("export", 5_030, 7)]
    assert all(e["channel"] == "export" for e in logs if e["event"] == "value_rejected")
    # The glitch and the new series' three reads (each off the old series when it came, then passed on).
    assert rig.status.meters["m"].rejected["backwards"] == 4


async def test_each_channel_has_the_modulus_of_its_own_data_type(tmp_path: Path) -> None:
    text = (PROFILES / "dzg-dvh4013.toml").read_text()
    mixed = tmp_path / "mixed.toml"
    # The same meter, but its export register a float32 kWh (which does not wrap) at a free address.
    mixed.write_text(text.replace('id = "dzg-dvh4013"', 'id = "mixed"').replace(
        'energy_export = { address = 0x4100, function = 3, datatype = "uint32", scale = 1, unit = "Wh", '
        'invalid = [-1] }',
        'energy_export = { address = 0x4100, function = 3, datatype = "float32", scale = 1000, unit = "Wh" }'))
    profile = load_profile_file(mixed)
    assert profile.quantities["energy_export"].datatype.is_float
    clock = ManualClock(start=NOON)
    rig = Rig([SimulatedMeter.solar_house("m", 1, profile, NOON - 3600)], clock)
    async with rig.running():
        await rig.poll()
        await rig.poll()
    imports, exports = rig.of(Channel.IMPORT), rig.of(Channel.EXPORT)
    assert len(imports) == len(exports) == 2
    assert {r.register_modulus_wh for r in imports} == {2**32}
    assert {r.register_modulus_wh for r in exports} == {None}


@pytest.mark.parametrize("profile", [EM24, SDM630], ids=["em24-own-block", "sdm630-shared-block"])
async def test_a_unit_without_its_export_register_loses_only_its_export_channel(profile: Profile) -> None:
    # Some EM24 variants answer exception 2 for 0x5C (its profile says so). On the EM24 the export register
    # has a request of its own; on an SDM630 it shares the import register's, which then fails as a whole.
    clock = ManualClock(start=NOON)
    meter = SimulatedMeter("m", 1, profile, LoadModel.for_meter("m", NOON - 3600), missing=frozenset({"energy_export"}))
    rig = Rig([meter], clock)
    with capture_logs() as logs:
        async with rig.running():
            for _ in range(4):
                await rig.poll()
    assert len(rig.of(Channel.IMPORT)) == 4, "the import reading of every poll, the first included"
    assert rig.of(Channel.EXPORT) == []
    status = rig.status.meters["m"]
    assert status.health is MeterHealth.ONLINE
    assert status.consecutive_failures == 0
    assert status.reads_failed == 0
    assert status.rejected["export_unavailable"] == 1
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["export_register_unavailable"]
    # From then on it is not asked for any more: polls 2-4 take the plan without it. The refused requests are
    # the first poll's (on the SDM630: its shared block, then the export register alone).
    assert rig.status.lines["ep"].errors == (1 if profile is EM24 else 2)


def _with_energy_total(tmp_path: Path) -> Profile:
    """An SDM630 profile with one more register right after the export one (0x4C)."""
    text = (PROFILES / "eastron-sdm630.toml").read_text()
    path = tmp_path / "sdm630-total.toml"
    path.write_text(text.replace('id = "eastron-sdm630"', 'id = "sdm630-total"')
                    + '\n[quantities.energy_total]\naddress = 0x4C\nfunction = 4\ndatatype = "float32"\n'
                      'scale = 1000\nunit = "Wh"\n')
    return load_profile_file(path)


async def test_reads_go_around_a_refused_export_register_and_a_fault_elsewhere_keeps_it(tmp_path: Path) -> None:
    profile = _with_energy_total(tmp_path)
    energy = ["energy_import", "energy_export", "energy_total"]
    clock = ManualClock(start=NOON)
    # The export register refused: polls and one-off reads go on for the registers on both sides of it.
    meter = SimulatedMeter("m", 1, profile, LoadModel.for_meter("m", NOON - 3600),
                           missing=frozenset({"energy_export"}))
    rig = Rig([meter], clock, quantities=["energy_total"])
    async with rig.running() as bus:
        for _ in range(3):
            await rig.poll()
        values, problems = await bus.read_values(1, profile, energy)
    assert len(rig.of(Channel.IMPORT)) == 3
    assert rig.of(Channel.EXPORT) == []
    assert "energy_total" in rig.status.meters["m"].values, "the register after the hole still reads"
    assert set(values) == {"energy_import", "energy_total"}, "a one-off read keeps the rest of the block"
    assert set(problems) == {"energy_export"}
    assert "exception 2" in problems["energy_export"]
    # Another register of the block refused (a wrong address in a custom profile): the export register
    # answers alone, so it is kept, and the poll fails as it always did.
    meter.missing = frozenset({"energy_total"})
    rig = Rig([meter], clock, quantities=["energy_total"])
    with capture_logs() as logs:
        async with rig.running() as bus:
            await rig.poll(until=lambda: rig.status.meters["m"].reads_failed == 1)
            values, problems = await bus.read_values(1, profile, energy)
    assert rig.readings == []
    assert "export_register_unavailable" not in [e["event"] for e in logs]
    assert rig.status.meters["m"].rejected["export_unavailable"] == 0
    assert set(values) == {"energy_export"}, "the one-off read asked the export register alone: it answers"
    assert set(problems) == {"energy_import", "energy_total"}, "and the rest of its block failed as before"


async def test_over_rtu_a_poll_gives_both_channels(tmp_path: Path) -> None:
    clock = ManualClock(start=NOON)
    houses = [SimulatedMeter.solar_house(f"h{u}", u, SDM630, NOON - 3600) for u in (1, 2)]
    rig = Rig(houses, clock, kind="rtu", tmp_path=tmp_path)
    async with rig.running():
        for _ in range(3):
            await rig.poll()
    for house in houses:
        imports, exports = rig.of(Channel.IMPORT, house.meter_id), rig.of(Channel.EXPORT, house.meter_id)
        assert len(imports) == len(exports) == 3
        assert [r.t_ms for r in imports] == [r.t_ms for r in exports]
        assert all(abs(r.register_wh - house.model.export_wh(r.t_ms / 1000)) <= 1 for r in exports)
        assert exports[-1].register_wh > exports[0].register_wh
    assert rig.status.lines["ep"].errors == 0
