"""A missing serial device and untrusted time: one log line when the state starts, one when it ends."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from gateway.acquisition import modbus
from gateway.acquisition.modbus import ModbusBus
from gateway.clock import ManualClock, SystemClock
from gateway.config import BusConfig
from gateway.intervals import Reading
from gateway.profiles import builtin_profile
from gateway.sim.load import LoadModel
from gateway.sim.modbus_sim import SimulatedMeter
from gateway.sim.rtu_line import RtuDevice, RtuLine, meter_registers
from gateway.status import GatewayStatus
from gateway.timetrust import TimeTrust

WAIT_S = 10.0
"""Bounds each wait for a log event; the retries below come every 20 ms."""


@pytest.fixture(autouse=True)
def every_level() -> Iterator[None]:
    """capture_logs swaps the processors only: a CLI test run before may have left a warning-level filter."""
    old: dict[str, Any] = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    yield
    structlog.configure(**old)


def events(logs: list[dict[str, object]], name: str) -> list[dict[str, object]]:
    return [e for e in logs if e["event"] == name and e["log_level"] in ("warning", "info")]


async def until(logs: list[dict[str, object]], name: str) -> None:
    async with asyncio.timeout(WAIT_S):
        while not events(logs, name):
            await asyncio.sleep(0.02)


async def test_a_missing_serial_device_is_logged_once_when_missing_and_once_when_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(modbus, "REOPEN_MIN_S", 0.02)  # retry fast: many retries, still one line
    monkeypatch.setattr(modbus, "REOPEN_MAX_S", 0.02)
    path = tmp_path / "ttyUSB0"
    clock = SystemClock()
    profile = builtin_profile("eastron-sdm630")
    cfg = BusConfig.model_validate({"name": "a", "kind": "rtu", "device": str(path), "timeout_s": 0.05,
                                    "meters": [{"id": "x", "unit_id": 1, "profile": profile.id, "poll_s": 1}]})

    async def submit(_: Reading) -> None:
        return None

    bus = ModbusBus(cfg, {"x": profile}, clock, submit, GatewayStatus("g", "k", 0), use_lock=False)
    meter = SimulatedMeter("x", 1, profile, LoadModel.for_meter("x", math.floor(clock.now())))
    line = RtuLine([RtuDevice(1, meter_registers(meter, clock))], path)
    with capture_logs() as logs:
        task = asyncio.create_task(bus.run())
        try:
            await until(logs, "line_unavailable")
            await asyncio.sleep(0.3)  # ~15 more failed opens
            line.start()
            await until(logs, "line_available")
            await asyncio.sleep(0.2)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            line.stop()
    down = events(logs, "line_unavailable")
    assert len(down) == 1, down
    assert "No such file" in str(down[0]["error"])
    assert len(events(logs, "line_available")) == 1


class SwitchableSync:
    def __init__(self) -> None:
        self.synced = False

    def synchronised(self) -> bool:
        return self.synced


def test_untrusted_time_is_logged_once_from_start_up_and_once_when_it_ends() -> None:
    sync = SwitchableSync()
    trust = TimeTrust(ManualClock(start=1_767_225_600.0), sync)
    with capture_logs() as logs:
        for _ in range(5):
            assert trust.check() is False
        sync.synced = True
        for _ in range(5):
            assert trust.check() is True
        sync.synced = False
        trust.check()
    changes = [(e["trusted"], e["log_level"]) for e in events(logs, "time_trust_changed")]
    assert changes == [(False, "warning"), (True, "info"), (False, "warning")]
