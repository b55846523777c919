"""The systemd watchdog is fed only while the writer and the buses make progress."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from gateway.acquisition.modbus import ModbusBus
from gateway.clock import SystemClock
from gateway.config import BusConfig, parse_config
from gateway.daemon import WATCHDOG_ALARM, Running, _watchdog_interval_s, run_daemon
from gateway.intervals import Reading
from gateway.liveness import Progress, first_wedge
from gateway.profiles import builtin_profile
from gateway.status import GatewayStatus
from tests.conftest import free_port

WATCHDOG_USEC = 200_000
"""systemd's timeout as the daemon reads it: a ping every 0.1 s."""
STALL_S = 0.5
"""The writer's limit in this test (the daemon's is minutes)."""


class NotifySocket:
    """A stand-in for systemd's notification socket: every datagram, with when it came."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[tuple[float, str]] = []

    async def collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self.sock, 4096)
            self.messages.append((time.monotonic(), data.decode()))

    def pings(self, since: float = 0.0, until: float = float("inf")) -> int:
        return sum(1 for t, m in self.messages if m == "WATCHDOG=1" and since <= t < until)

    async def wait_pings(self, n: int, since: float, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.pings(since) < n:
            assert time.monotonic() < deadline, f"fewer than {n} watchdog pings after {timeout} s"
            await asyncio.sleep(0.02)


def _events(logs: Sequence[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name]


async def test_a_wedged_writer_stops_the_watchdog_until_its_commit_returns(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    notify = NotifySocket(tmp_path / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_USEC))
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    cfg = parse_config(f"""
gateway_id = "gw-watchdog"
data_dir = "{tmp_path / 'data'}"
[time]
trust = "always"
[web]
enabled = false
[ledger]
commit_every_s = 1
[[buses]]
name = "unplugged"
host = "127.0.0.1"
port = {free_port()}
  [[buses.meters]]
  id = "m1"
  unit_id = 1
  profile = "eastron-sdm630"
""")
    stop = asyncio.Event()
    started: list[Running] = []
    release = asyncio.Event()
    collector = asyncio.create_task(notify.collect())
    with capture_logs() as logs:
        daemon = asyncio.create_task(run_daemon(cfg, SystemClock(), stop, on_started=started.append,
                                                final_sync_s=0))
        try:
            while not started:
                assert not daemon.done(), daemon
                await asyncio.sleep(0.02)
            running = started[0]
            running.writer.progress.limit_s = STALL_S
            real_commit = running.ledger.commit_readings

            async def wedged(readings: Sequence[Reading], *, now_ms: int) -> Any:
                await release.wait()  # a commit that does not return (a hung SD card, a deadlock)
                return await real_commit(readings, now_ms=now_ms)

            running.ledger.commit_readings = wedged  # type: ignore[method-assign]
            await notify.wait_pings(3, since=0.0)  # healthy: fed every 0.1 s

            await running.writer.submit(Reading("m1", int(time.time() * 1000), 1_000_000))
            # The writer commits about 1 s after the reading; the watchdog gives it STALL_S more.
            while running.writer.progress.stuck_s() <= STALL_S:
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.25)  # the watchdog's next look
            quiet_from = time.monotonic()
            await asyncio.sleep(1.0)
            assert notify.pings(since=quiet_from) == 0, "the watchdog was fed while the writer was wedged"
            assert WATCHDOG_ALARM in running.status.alarms
            assert "ledger-writer" in running.status.alarms[WATCHDOG_ALARM]

            release.set()  # the commit returns: progress again, feeding again
            resumed = time.monotonic()
            await notify.wait_pings(3, since=resumed)
            assert WATCHDOG_ALARM not in running.status.alarms
            assert running.status.readings_committed == 1
        finally:
            release.set()
            stop.set()
            await asyncio.wait_for(daemon, 10)
            collector.cancel()
            notify.sock.close()
    starved = _events(logs, "watchdog_starved")
    assert len(starved) == 1, "said once, not at every look"
    assert (starved[0]["worker"], starved[0]["log_level"]) == ("ledger-writer", "error")
    assert len(_events(logs, "watchdog_fed_again")) == 1
    assert "READY=1" in [m for _, m in notify.messages]


class _NeverAnswers:
    endpoint = "hanging"
    noise_bytes = 0

    async def transact(self, unit: int, function: int, start: int, count: int, *,
                       turnaround_s: float = 0.0) -> list[int]:
        await asyncio.Event().wait()  # a transaction whose timeout never fires
        raise AssertionError("unreachable")

    def close(self) -> None:
        pass


async def test_a_bus_stuck_in_one_transaction_is_a_wedge_but_an_idle_bus_is_not() -> None:
    clock = SystemClock()
    cfg = BusConfig.model_validate({"name": "line", "host": "127.0.0.1", "port": 502, "meters": [
        {"id": "m1", "unit_id": 1, "profile": "eastron-sdm630", "poll_s": 1}]})
    status = GatewayStatus("gw", "-", clock.now())

    async def submit(_: Reading) -> None:
        pass

    bus = ModbusBus(cfg, {"m1": builtin_profile("eastron-sdm630")}, clock, submit, status,
                    transport=_NeverAnswers(), use_lock=False)
    bus.progress.limit_s = 0.2
    idle = Progress("idle-bus", 0.2)  # a bus between polls has no step in progress
    task = asyncio.create_task(bus.run())
    try:
        deadline = time.monotonic() + 3
        while (wedge := first_wedge([idle, bus.progress])) is None:
            assert time.monotonic() < deadline, "the stuck transaction was never seen as a wedge"
            await asyncio.sleep(0.05)
        assert wedge.worker == "bus:line"
        assert wedge.stuck_s > 0.2
        assert "systemd restarts the daemon" in wedge.describe()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert bus.progress.stuck_s() == 0.0, "a cancelled step is over"


async def test_progress_counts_steps_and_the_longest_wedge_is_named() -> None:
    now = [100.0]
    fast, slow = Progress("fast", 5.0, now=lambda: now[0]), Progress("slow", 1.0, now=lambda: now[0])
    gate = asyncio.Event()
    tasks = [asyncio.create_task(p.step(gate.wait())) for p in (fast, slow)]
    await asyncio.sleep(0)
    assert first_wedge([fast, slow]) is None
    now[0] += 2.0
    wedge = first_wedge([fast, slow])
    assert wedge is not None
    assert (wedge.worker, wedge.stuck_s, wedge.limit_s) == ("slow", 2.0, 1.0)
    now[0] += 4.0  # both past their limits: the one stuck longest past its start is named
    assert first_wedge([fast, slow]) is not None
    gate.set()
    await asyncio.gather(*tasks)
    assert first_wedge([fast, slow]) is None
    assert (fast.steps, slow.steps) == (1, 1)


def test_the_watchdog_follows_sd_watchdog_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert _watchdog_interval_s() is None
    monkeypatch.setenv("WATCHDOG_USEC", "60000000")
    assert _watchdog_interval_s() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert _watchdog_interval_s() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # meant for another process
    assert _watchdog_interval_s() is None
