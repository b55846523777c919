"""The real daemon, a process of its own, feeds a real notification socket only while its writer makes progress.

``meter-gateway run`` (see ``tests/watchdog_child.py``) reads a simulated Modbus TCP meter every
second, with ``NOTIFY_SOCKET`` set to a unix datagram socket this test reads and ``WATCHDOG_USEC``
as systemd sets it for ``WatchdogSec=``. Healthy, it sends ``WATCHDOG=1`` while its commits go on.
Then a commit blocks in the kernel (its thread opens a named pipe nobody writes to, like a
``write`` on a hung SD card): the pings must stop, and stay stopped while the bus goes on reading
the meter and the page goes on answering (a live event loop is not a working daemon), so systemd
would restart it. Once the commit returns, pings resume and the held readings are committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from gateway.clock import SystemClock
from gateway.profiles import builtin_profile
from gateway.sim.load import LoadModel
from gateway.sim.modbus_sim import MeterSimulator, SimulatedMeter
from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[1]
WATCHDOG_USEC = 400_000
"""As systemd would pass it: the daemon pings every 0.2 s."""
STALL_S = 1.0
"""The writer's limit in the child (the daemon's own is two minutes)."""
WAIT_S = 60.0
"""Bound on each wait (start-up, a state change) on a loaded 2-core box; none is a timed assertion."""
READS_WHILE_WEDGED = 4
"""Meter reads the bus must make while the writer is wedged: four seconds of polls, twenty pings' worth."""


@dataclass
class Notifications:
    """systemd's end of NOTIFY_SOCKET: every datagram, read without blocking whenever the test looks."""

    sock: socket.socket
    messages: list[str] = field(default_factory=list)

    def drain(self) -> None:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return

    def pings(self) -> int:
        self.drain()
        return sum(1 for m in self.messages if "WATCHDOG=1" in m.split("\n"))


@dataclass
class Child:
    process: asyncio.subprocess.Process
    http: httpx.AsyncClient
    log: Path

    async def api(self, path: str) -> Any:
        return (await self.http.get(path)).json()

    async def committed(self) -> int:
        text = (await self.http.get("/metrics")).text
        found = re.search(r"^gateway_readings_committed_total (\S+)$", text, re.MULTILINE)
        assert found, text
        return int(float(found.group(1)))

    async def reads_ok(self) -> int:
        """Polls of the meter that succeeded, as the daemon counts them."""
        return int((await self.api("/api/v1/meters/m1"))["reads_ok"])

    async def alarms(self) -> dict[str, str]:
        return dict((await self.api("/api/v1/sync"))["alarms"])

    async def until(self, what: str, check: Callable[[], Any]) -> None:
        deadline = time.monotonic() + WAIT_S
        while True:
            assert self.process.returncode is None, f"the daemon exited ({self.process.returncode}):\n" \
                                                    + self.log.read_text()
            with contextlib.suppress(httpx.HTTPError):
                result = check()
                if asyncio.iscoroutine(result):
                    result = await result
                if result:
                    return
            assert time.monotonic() < deadline, f"{what}: not within {WAIT_S:.0f} s"
            await asyncio.sleep(0.05)


def _release(fifo: Path) -> None:
    """Let a commit blocked on ``fifo`` go on (the name goes first, so no later commit blocks again)."""
    fd = None
    with contextlib.suppress(OSError):  # ENXIO: no commit waits on it; ENOENT: released already
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # succeeds only while a commit waits on it
    fifo.unlink(missing_ok=True)
    if fd is not None:
        os.close(fd)


@contextlib.asynccontextmanager
async def _daemon(tmp_path: Path, fifo: Path, notify_path: Path, modbus: int) -> AsyncIterator[Child]:
    web = free_port()
    data = tmp_path / "data"
    config = tmp_path / "gateway.toml"
    config.write_text(f'gateway_id = "gw-watchdog"\ndata_dir = "{data}"\n[logging]\nformat = "json"\n'
                      f'[time]\ntrust = "always"\n[web]\nlisten = "127.0.0.1"\nport = {web}\n'
                      '[ledger]\ncommit_every_s = 1\n'
                      f'[[buses]]\nname = "line"\nhost = "127.0.0.1"\nport = {modbus}\ntimeout_s = 0.5\n'
                      '  [[buses.meters]]\n  id = "m1"\n  unit_id = 1\n  profile = "eastron-sdm630"\n  poll_s = 1\n')
    env = {k: v for k, v in os.environ.items() if k not in ("WATCHDOG_PID", "NOTIFY_SOCKET")}
    env.update(NOTIFY_SOCKET=str(notify_path), WATCHDOG_USEC=str(WATCHDOG_USEC))  # the lock dir: conftest's
    log = tmp_path / "daemon.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.watchdog_child", str(fifo), str(STALL_S), "--",
            "run", "--config", str(config), cwd=REPO, env=env, stdout=out, stderr=out)
    try:
        token_file = data / "web.token"
        deadline = time.monotonic() + WAIT_S
        while not token_file.exists():
            assert process.returncode is None, log.read_text()
            assert time.monotonic() < deadline, "no web token"
            await asyncio.sleep(0.05)
        headers = {"Authorization": f"Bearer {token_file.read_text().strip()}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{web}", headers=headers, timeout=5) as http:
            yield Child(process, http, log)
    finally:
        _release(fifo)
        if process.returncode is None:
            process.terminate()
            try:
                async with asyncio.timeout(15):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()


async def test_a_wedged_writer_starves_the_watchdog_while_the_rest_of_the_daemon_runs(tmp_path: Path) -> None:
    profile = builtin_profile("eastron-sdm630")
    meter = SimulatedMeter("m1", 1, profile, LoadModel.for_meter("m1", math.floor(time.time()) - 3600))
    modbus = free_port()
    sim = MeterSimulator([meter], SystemClock(), port=modbus)
    await sim.start()
    notify_path, fifo = tmp_path / "notify", tmp_path / "wedge"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify_path))
    sock.setblocking(False)
    notes = Notifications(sock)
    loop = asyncio.get_running_loop()
    loop.add_reader(sock, notes.drain)  # read as systemd does, all the time: a full queue would drop pings
    try:
        async with _daemon(tmp_path, fifo, notify_path, modbus) as child:
            # Healthy: readings committed, and the watchdog fed all along.
            await child.until("READY=1 and a first commit", lambda: _ready_and_committed(child, notes))
            fed_from = notes.pings()
            committed = await child.committed()
            await child.until("two more commits", lambda: _more(child.committed(), committed + 1))
            assert notes.pings() > fed_from, "not fed while the writer made progress"
            assert not await child.alarms()

            # Wedged: the next commit blocks in its thread; once past STALL_S the daemon says so...
            os.mkfifo(fifo)
            await child.until("the watchdog alarm", lambda: _has_watchdog_alarm(child))
            stuck_at = await child.committed()
            quiet_from = notes.pings()  # every ping sent before the alarm was raised is in the socket now
            reads, requests = await child.reads_ok(), meter.reads
            # ...and the bus goes on reading the meter, the page answering, but nothing feeds systemd.
            await child.until("the bus reading on", lambda: _more(child.reads_ok(), reads + READS_WHILE_WEDGED - 1))
            assert meter.reads > requests, "the meter itself was asked"
            assert "ledger-writer" in (await child.alarms())["watchdog"]
            assert notes.pings() == quiet_from, "the watchdog was fed while the writer was wedged"
            assert await child.committed() == stuck_at

            # The commit returns: progress again, pings again, and the readings held meanwhile are stored.
            _release(fifo)
            await child.until("the alarm cleared", lambda: _no_alarm(child))
            resumed = notes.pings()
            await child.until("pings again", lambda: notes.pings() >= resumed + 3)
            await child.until("the held readings committed", lambda: _more(child.committed(), stuck_at))
            child.process.terminate()
            assert await child.process.wait() == 0
        events = [json.loads(line) for line in child.log.read_text().splitlines() if line.startswith("{")]
        starved = [e for e in events if e.get("event") == "watchdog_starved"]
        assert [(e["worker"], e["level"]) for e in starved] == [("ledger-writer", "error")], "said once"
        assert sum(1 for e in events if e.get("event") == "watchdog_fed_again") == 1
        assert "Traceback" not in child.log.read_text()
    finally:
        loop.remove_reader(sock)
        sock.close()
        await sim.stop()


async def _ready_and_committed(child: Child, notes: Notifications) -> bool:
    notes.drain()
    return "READY=1" in notes.messages and await child.committed() > 0


async def _more(count: Any, than: int) -> bool:
    return bool(await count > than)


async def _has_watchdog_alarm(child: Child) -> bool:
    return "watchdog" in await child.alarms()


async def _no_alarm(child: Child) -> bool:
    return "watchdog" not in await child.alarms()
