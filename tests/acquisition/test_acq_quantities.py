"""Per-meter quantities: what is polled, on which period, and how it shows as live values with units.

Over a real pymodbus TCP server answering the SDM630 map; the API is served over real HTTP.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import httpx
import pytest
from stellar_sdk import Keypair

from gateway.acquisition.modbus import ModbusBus
from gateway.acquisition.payloads import parse_payload
from gateway.channels import Channel
from gateway.clock import SystemClock
from gateway.config import InvalidConfig, MqttMeterConfig, parse_config
from gateway.intervals import Reading
from gateway.ledger.store import Ledger
from gateway.profiles import builtin_profile
from gateway.sim.load import LoadModel
from gateway.sim.modbus_sim import NOMINAL_V, MeterSimulator, SimulatedMeter
from gateway.status import GatewayStatus
from gateway.web.app import WebContext, create_app
from gateway.web.server import free_port, serving

SDM630 = builtin_profile("eastron-sdm630")
WAIT_S = 10.0
"""Bound on waiting for polls that take milliseconds each on loopback."""
CONFIGURED = ["energy_import", "power_total", "voltage_l1", "current_l1", "frequency"]


def _config(tmp_path: Path, port: int, meters: str) -> str:
    return f"""
gateway_id = "gw-q"
data_dir = "{tmp_path / 'data'}"
[[buses]]
name = "line"
host = "127.0.0.1"
port = {port}
timeout_s = 0.5
retries = 0
{meters}
"""


async def test_configured_quantities_are_polled_on_their_periods_and_served_with_units(tmp_path: Path) -> None:
    clock = SystemClock()
    epoch = math.floor(clock.now())
    sims = [SimulatedMeter(m, unit, SDM630, LoadModel.for_meter(m, epoch))
            for m, unit in (("flat-1", 1), ("flat-2", 2))]
    sim = MeterSimulator(sims, clock, port=free_port())
    await sim.start()
    cfg = parse_config(_config(tmp_path, sim.port, f"""
  [[buses.meters]]
  id = "flat-1"
  unit_id = 1
  profile = "eastron-sdm630"
  poll_s = 2
  poll_instant_s = 0.5
  quantities = {CONFIGURED!r}
  [[buses.meters]]
  id = "flat-2"
  unit_id = 2
  profile = "eastron-sdm630"
  poll_s = 0.5
  quantities = ["frequency"]
"""), base_dir=tmp_path)
    status = GatewayStatus(cfg.gateway_id, "G", clock.now())
    readings: list[Reading] = []

    async def submit(reading: Reading) -> None:
        if reading.channel is Channel.IMPORT:  # one reading per poll; channels: test_acq_channels.py
            readings.append(reading)

    bus = ModbusBus(cfg.buses[0], {"flat-1": SDM630, "flat-2": SDM630}, clock, submit, status, use_lock=False)
    ledger = await Ledger.open(cfg.data_dir, gateway_id=cfg.gateway_id, keypair=Keypair.random())
    task = asyncio.create_task(bus.run())
    try:
        async with asyncio.timeout(WAIT_S):
            while (len(status.meters["flat-1"].values) < len(CONFIGURED)
                   or sum(r.meter == "flat-1" for r in readings) < 1 or len(status.meters["flat-2"].values) < 2):
                await asyncio.sleep(0.05)
        # The instantaneous values run on their own 0.5 s grid, the register on the 2 s one.
        first = status.meters["flat-1"].values["frequency"].t
        async with asyncio.timeout(WAIT_S):
            while status.meters["flat-1"].values["frequency"].t < first + 1.4:
                await asyncio.sleep(0.05)
        ctx = WebContext(status, ledger, clock, "tok", (), config=cfg)
        async with serving(create_app(ctx)) as url, httpx.AsyncClient(base_url=url) as http:
            flat1 = (await http.get("/api/v1/meters/flat-1", headers={"Authorization": "Bearer tok"})).json()
            listing = (await http.get("/api/v1/meters", headers={"Authorization": "Bearer tok"})).json()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await ledger.close()
        await sim.stop()
    values = flat1["values"]
    assert set(values) == {*CONFIGURED, "energy_export"}, "the export register is polled like the import one"
    assert {name: v["unit"] for name, v in values.items()} == {
        "energy_import": "Wh", "energy_export": "Wh", "power_total": "W", "voltage_l1": "V", "current_l1": "A",
        "frequency": "Hz"}
    assert values["frequency"]["value"] == pytest.approx(50.0)
    assert values["voltage_l1"]["value"] == pytest.approx(NOMINAL_V)
    assert values["current_l1"]["value"] == pytest.approx(values["power_total"]["value"] / 3 / NOMINAL_V, rel=0.05)
    assert values["energy_import"]["value"] == flat1["register_wh"]
    assert values["frequency"]["t"].endswith("Z")
    energy_polls = sum(r.meter == "flat-1" for r in readings)
    assert energy_polls <= 4, "the register is read on its own 2 s period, not with every instantaneous poll"
    # A meter that lists only one quantity still polls its energy registers (each a billed channel), and nothing
    # else.
    flat2 = next(m for m in listing["meters"] if m["meter"] == "flat-2")
    assert set(flat2["values"]) == {"energy_import", "energy_export", "frequency"}
    assert any(r.meter == "flat-2" for r in readings)


async def test_meters_without_quantities_poll_the_default_or_what_the_bus_is_given(tmp_path: Path) -> None:
    clock = SystemClock()
    sim = MeterSimulator([SimulatedMeter("m", 1, SDM630, LoadModel.for_meter("m", math.floor(clock.now())))],
                         clock, port=free_port())
    await sim.start()
    cfg = parse_config(_config(tmp_path, sim.port, """
  [[buses.meters]]
  id = "m"
  unit_id = 1
  profile = "eastron-sdm630"
  poll_s = 0.5
"""), base_dir=tmp_path)

    async def submit(_: Reading) -> None:
        return None

    seen = {}
    try:
        for wanted in (None, ("power_l2", "frequency")):
            status = GatewayStatus("gw", "G", clock.now())
            extra = {} if wanted is None else {"wanted": wanted}
            bus = ModbusBus(cfg.buses[0], {"m": SDM630}, clock, submit, status, use_lock=False, **extra)
            task = asyncio.create_task(bus.run())
            try:
                async with asyncio.timeout(WAIT_S):
                    while len(status.meters["m"].values) < 4:
                        await asyncio.sleep(0.05)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            seen[wanted] = set(status.meters["m"].values)
    finally:
        await sim.stop()
    assert seen[None] == {"energy_import", "energy_export", "power_total", "voltage_l1"}
    assert seen[("power_l2", "frequency")] == {"energy_import", "energy_export", "power_l2", "frequency"}


def test_check_config_refuses_an_unknown_quantity_with_the_profiles_list_and_its_line(tmp_path: Path) -> None:
    text = _config(tmp_path, 502, """
  [[buses.meters]]
  id = "flat-1"
  unit_id = 1
  profile = "eastron-sdm630"
  quantities = ["energy_import", "voltage_l4", "frequency", "power_total", "frequency"]
""")
    with pytest.raises(InvalidConfig) as caught:
        parse_config(text, base_dir=tmp_path)
    problems = {str(p) for p in caught.value.problems}
    line = text.splitlines().index('  quantities = ["energy_import", "voltage_l4", "frequency", "power_total", '
                                   '"frequency"]') + 1
    unknown = next(p for p in caught.value.problems if "voltage_l4" in p.message)
    assert unknown.line == line
    assert unknown.path == "buses[0].meters[0].quantities"
    assert "profile 'eastron-sdm630' has no quantity 'voltage_l4'; it has: " in unknown.message
    assert ", ".join(sorted(SDM630.quantities)) in unknown.message
    assert any("frequency listed more than once" in p for p in problems)


def test_energy_import_is_always_polled_and_listing_it_is_optional(tmp_path: Path) -> None:
    cfg = parse_config(_config(tmp_path, 502, """
  [[buses.meters]]
  id = "a"
  unit_id = 1
  profile = "eastron-sdm630"
  quantities = ["frequency"]
"""), base_dir=tmp_path)
    assert cfg.buses[0].meters[0].quantities == ("energy_import", "frequency")


def test_mqtt_power_comes_from_tasmota_or_a_configured_path_and_never_costs_the_energy() -> None:
    tasmota = MqttMeterConfig(id="t", topic="tele/t/SENSOR", format="tasmota")
    parsed = parse_payload(tasmota, b'{"Time":"2024-05-01T12:00:00","ENERGY":{"Total":3.21,"Power":512}}',
                           max_bytes=4096)
    assert (parsed.wh, parsed.power_w) == (3210, 512.0)
    shelly = MqttMeterConfig(id="s", topic="s", value_path="e.total", power_path="e.p", unit="Wh")
    assert parse_payload(shelly, b'{"e":{"total":10,"p":"7.5"}}', max_bytes=4096).power_w == 7.5
    # No power, or junk where it should be: the energy still counts, power is just not shown.
    assert parse_payload(shelly, b'{"e":{"total":10}}', max_bytes=4096).power_w is None
    assert parse_payload(shelly, b'{"e":{"total":10,"p":[1]}}', max_bytes=4096).wh == 10
    plain = MqttMeterConfig(id="p", topic="p", value_path="e", unit="Wh")
    assert parse_payload(plain, b'{"e":5,"Power":3}', max_bytes=4096).power_w is None
