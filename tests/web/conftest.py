"""A gateway's web server over real HTTP, with a real ledger, a running bus and a simulated meter behind it."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from stellar_sdk import Keypair

from gateway.acquisition.modbus import ModbusBus
from gateway.clock import ManualClock, SystemClock
from gateway.config import GatewayConfig, parse_config
from gateway.intervals import Reading
from gateway.ledger.store import Ledger
from gateway.profiles import builtin_profile
from gateway.sim.load import LoadModel
from gateway.sim.modbus_sim import MeterSimulator, SimulatedMeter
from gateway.status import GatewayStatus
from gateway.web.app import WebContext, create_app
from gateway.web.auth import load_or_create_token
from gateway.web.server import free_port, serving

SDM630 = builtin_profile("eastron-sdm630")


@dataclass
class Site:
    url: str
    token: str
    ctx: WebContext
    cfg: GatewayConfig
    bus: ModbusBus
    meter: SimulatedMeter
    data_dir: Path
    profiles_dir: Path
    session_clock: ManualClock


def site_config(tmp_path: Path, sim_port: int) -> GatewayConfig:
    return parse_config(f"""
gateway_id = "gw-web-test"
data_dir = "{tmp_path / 'data'}"
site_timezone = "Europe/Berlin"
[web]
profiles_dir = "{tmp_path / 'profiles'}"
[[buses]]
name = "line"
host = "127.0.0.1"
port = {sim_port}
timeout_s = 0.5
retries = 0
  [[buses.meters]]
  id = "m1"
  unit_id = 1
  profile = "eastron-sdm630"
  poll_s = 900
  nmi = "NMI0000001"
""", base_dir=tmp_path)


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    clock = SystemClock()
    meter = SimulatedMeter("m1", 1, SDM630, LoadModel.for_meter("m1", math.floor(clock.now())))
    sim = MeterSimulator([meter], clock, port=free_port())
    await sim.start()
    cfg = site_config(tmp_path, sim.port)
    (tmp_path / "profiles").mkdir()
    status = GatewayStatus(cfg.gateway_id, "G-TEST", clock.now())

    async def submit(_: Reading) -> None:
        return None

    bus = ModbusBus(cfg.buses[0], {"m1": SDM630}, clock, submit, status, use_lock=False)
    bus_task = asyncio.create_task(bus.run())
    ledger = await Ledger.open(cfg.data_dir, gateway_id=cfg.gateway_id, keypair=Keypair.random())
    token = load_or_create_token(cfg.data_dir)
    session_clock = ManualClock(clock.now())
    ctx = WebContext(status, ledger, clock, token, (), buses={"line": bus}, config=cfg,
                     profiles_dir=cfg.web.profiles_dir, session_clock=session_clock)
    try:
        async with serving(create_app(ctx)) as url:
            yield Site(url, token, ctx, cfg, bus, meter, cfg.data_dir, tmp_path / "profiles", session_clock)
    finally:
        bus_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await bus_task
        await ledger.close()
        await sim.stop()
