"""The real daemon (``python -m gateway run``) on a simulated RS-485 line, for the memory and start-up
benchmarks (not a benchmark itself).

The line lives in this process: 16 SDM630-like meters behind a pseudo-terminal on a paced
9600-baud 8N1 half-duplex wire (each frame takes its bytes' wire time, t3.5 enforced), as the
shared harness's ``wire_bridge.py`` and ``sim_meters.py`` give it. The daemon is a child process
measured from outside (``/proc/<pid>/status``), so nothing of the simulator counts against it.

``as_installed`` runs the daemon with every distribution that is not a runtime dependency of
meter-gateway hidden (see ``_as_installed.py``): what a box has after ``scripts/install.sh``,
not what a developer's venv holds besides (rich, pulled in by schemathesis, would otherwise be
imported by structlog and cost the daemon megabytes that no box pays).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from benchmarks._as_installed import hidden_modules
from gateway.acquisition.read_plan import WireCost
from gateway.clock import SystemClock
from gateway.profiles import builtin_profile
from gateway.sim.load import LoadModel
from gateway.sim.modbus_sim import SimulatedMeter
from gateway.sim.rtu_line import LineOfMeters, RtuLine
from gateway.sim.wire import Wire

HERE = Path(__file__).resolve().parent
METERS = 16
START_TIMEOUT_S = 60.0
"""Host seconds the daemon gets to read every meter once; a loaded 2-core box needs a few."""
STOP_TIMEOUT_S = 10.0
DAEMON_IMPORTS = "import gateway.cli, gateway.daemon, gateway.web.server"
"""What ``meter-gateway run`` imports for an RTU line with the page on (nothing of MQTT, the uplinks, pymodbus)."""


def status_kib(pid: int, key: str) -> int:
    """A ``/proc/<pid>/status`` field in KiB (VmHWM = peak resident set, VmRSS = now)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def bare_python_peak_kib(python: str = sys.executable) -> int:
    """Peak RSS of ``python -c pass`` (it reads its own VmHWM as its last act)."""
    import subprocess

    out = subprocess.run(
        [python, "-c", "import sys; sys.stdout.write(open('/proc/self/status').read())"],
        check=True, capture_output=True, text=True).stdout
    return next(int(line.split()[1]) for line in out.splitlines() if line.startswith("VmHWM:"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Daemon:
    """A running daemon child and what was seen of it."""

    process: asyncio.subprocess.Process
    port: int
    token_file: Path
    line: RtuLine
    started: float
    """time.monotonic() just before the child was spawned."""
    first_request: float | None = None
    ready: float | None = None
    """time.monotonic() of its READY=1 (sd_notify), when ``notify`` was asked for."""
    notes: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid

    async def get(self, path: str) -> httpx.Response:
        token = self.token_file.read_text().strip()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", timeout=5) as http:
            return await http.get(path, headers={"Authorization": f"Bearer {token}"})

    async def wait_all_read(self, meters: int = METERS) -> None:
        """Until every meter has been read at least once (through the daemon's own API)."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.returncode is not None:
                raise RuntimeError(f"the daemon exited with {self.process.returncode}")
            with contextlib.suppress(httpx.HTTPError, OSError, ValueError):
                body = (await self.get("/api/v1/meters")).json()
                if sum(1 for m in body["meters"] if m["reads_ok"] > 0) >= meters:
                    return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"not every meter was read within {START_TIMEOUT_S:.0f} s")


def config_text(tty: Path, data_dir: Path, port: int, *, meters: int, extra: str = "", serials: bool = False) -> str:
    lines = [f'gateway_id = "gw-bench"\nsite_timezone = "UTC"\ndata_dir = "{data_dir}"\n',
             '[logging]\nlevel = "info"\nformat = "json"\n',
             f'[web]\nlisten = "127.0.0.1"\nport = {port}\n',
             '[time]\ntrust = "always"\n', extra,
             f'[[buses]]\nname = "rs485-1"\nkind = "rtu"\ndevice = "{tty}"\nbaud = 9600\nframing = "8N1"\n'
             'timeout_s = 1.0\nretries = 1\n']
    lines += [f'  [[buses.meters]]\n  id = "sdm630-{u}"\n  unit_id = {u}\n  profile = "eastron-sdm630"\n'
              '  poll_s = 1\n' + (f'  serial = "BENCH{u:04d}"\n' if serials else '') for u in range(1, meters + 1)]
    return "\n".join(lines)


class _FirstRequest:
    """Wraps the line's responder to note when the first byte of a request arrives."""

    def __init__(self, line: RtuLine, daemon_box: list[Daemon]) -> None:
        self._feed = line.responder.feed
        self._box = daemon_box
        line.responder.feed = self  # type: ignore[method-assign]

    def __call__(self, data: bytes, send: object) -> None:
        if self._box and self._box[0].first_request is None:
            self._box[0].first_request = time.monotonic()
        self._feed(data, send)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def running_daemon(work: Path, *, meters: int = METERS, as_installed: bool = True, extra_config: str = "",
                         serials: bool = False, notify: bool = False, python: str = sys.executable,
                         env: dict[str, str] | None = None) -> AsyncIterator[Daemon]:
    """The daemon polling ``meters`` simulated SDM630s every second; stopped with SIGTERM at the end."""
    clock = SystemClock()
    profile = builtin_profile("eastron-sdm630")
    epoch = math.floor(clock.now())
    sim = LineOfMeters([SimulatedMeter(f"sdm630-{u}", u, profile, LoadModel.for_meter(f"sdm630-{u}", epoch))
                        for u in range(1, meters + 1)], clock)
    line = RtuLine(sim.devices, work / "ttyBENCH", wire=Wire(WireCost(bits_per_char=10, baud=9600)))
    box: list[Daemon] = []
    _FirstRequest(line, box)
    line.start()
    port = free_port()
    data_dir = work / "data"
    config = work / "gateway.toml"
    config.write_text(config_text(line.path, data_dir, port, meters=meters, extra=extra_config, serials=serials))
    (work / "locks").mkdir(exist_ok=True)
    child_env = dict(os.environ, METER_GATEWAY_LOCK_DIR=str(work / "locks"), **(env or {}))
    if as_installed:
        child_env["BENCH_HIDDEN"] = ",".join(sorted(hidden_modules()))
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        child_env.pop(name, None)
    notify_sock: socket.socket | None = None
    if notify:
        notify_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify_sock.bind(str(work / "notify.sock"))
        notify_sock.setblocking(False)
        child_env["NOTIFY_SOCKET"] = str(work / "notify.sock")
    argv: Sequence[str] = ([python, str(HERE / "_as_installed.py")] if as_installed else [python]) + [
        "-m", "gateway", "run", "--config", str(config)]
    log = open(work / "daemon.log", "wb")  # noqa: ASYNC230, SIM115 - before the child starts; closed below
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(*argv, env=child_env, stdout=asyncio.subprocess.DEVNULL,
                                                   stderr=log)
    daemon = Daemon(process, port, data_dir / "web.token", line, started)
    box.append(daemon)
    watcher = asyncio.create_task(_watch_notify(notify_sock, daemon)) if notify_sock else None
    try:
        yield daemon
    finally:
        if watcher:
            watcher.cancel()
        if process.returncode is None:
            process.terminate()
            try:
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        line.stop()
        log.close()
        if notify_sock:
            notify_sock.close()


async def _watch_notify(sock: socket.socket, daemon: Daemon) -> None:
    loop = asyncio.get_running_loop()
    while True:
        message = await loop.sock_recv(sock, 4096)
        if b"READY=1" in message.split(b"\n") and daemon.ready is None:
            daemon.ready = time.monotonic()
