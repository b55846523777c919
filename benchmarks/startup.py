"""Start-up: import time and time to first poll of the daemon (RTU line, Modbus TCP meter), against a bare Python.

One command: ``.venv/bin/python benchmarks/startup.py``

Printed, each as the median of ``--runs`` and as a ratio to ``python -c pass`` measured in this run:

* **imports**: a process that imports what ``meter-gateway run`` imports for a 16-meter RTU line
  with the status page (``gateway.cli``, ``gateway.daemon``, the web server), start to exit; with
  the bytecode as ``scripts/install.sh`` leaves it, and with none (what every start costs where the
  service user may not write ``__pycache__`` under /opt and nothing precompiled it);
* **first poll**: the real daemon, spawn to the first request byte on the simulated RS-485 line, and
  spawn to its ``READY=1`` (sd_notify, once every task runs and the page listens), again with and without
  bytecode;
* **bus started**: spawn to the bus's ``bus_started`` log line (its time stamp), when it could poll;
  the first poll then waits for its slot on the ``poll_s`` grid (0 to 1 s here), which the
  first-poll figures include;
* **Modbus TCP**: the imports of a TCP line (the above plus pymodbus's client, which only a TCP bus
  loads), and the daemon with one simulated SDM630 behind a Modbus TCP server (pymodbus, in this
  process): spawn to the meter's first request and to ``READY=1``.

The daemon runs as installed on a box (``_as_installed.py`` hides distributions that only the
development venv has), on the line of ``_rtu_daemon.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # works without the editable install too

from benchmarks._as_installed import hidden_modules
from benchmarks._rtu_daemon import DAEMON_IMPORTS, HERE, METERS, free_port, running_daemon
from gateway.clock import SystemClock
from gateway.profiles import builtin_profile
from gateway.sim.load import LoadModel
from gateway.sim.modbus_sim import MeterSimulator, SimulatedMeter

READY_TIMEOUT_S = 60.0
"""Host seconds the daemon gets to poll and report READY=1; a loaded 2-core box needs a few."""
TCP_IMPORTS = DAEMON_IMPORTS + ", pymodbus.client, pymodbus.exceptions"
"""What a Modbus TCP bus adds: its transport imports pymodbus's client when it first connects."""
STOP_TIMEOUT_S = 10.0


def _no_bytecode_env(cache: Path) -> dict[str, str]:
    """Python finds no .pyc (an empty cache prefix) and writes none: it compiles every module at every start."""
    return {"PYTHONPYCACHEPREFIX": str(cache), "PYTHONDONTWRITEBYTECODE": "1"}


def _bus_started_s(log: Path, spawned_wall: float) -> float:
    """Spawn to the daemon's first ``bus_started`` line (wall time stamps of the same host)."""
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{") and (event := json.loads(line)).get("event") == "bus_started":
            return datetime.datetime.fromisoformat(event["timestamp"]).timestamp() - spawned_wall
    raise RuntimeError(f"no bus_started in {log}")


def _wall(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def _imports(runs: int, extra_env: dict[str, str], imports: str = DAEMON_IMPORTS) -> float:
    env = dict(os.environ, BENCH_HIDDEN=",".join(sorted(hidden_modules())), **extra_env)
    argv = [sys.executable, str(HERE / "_as_installed.py"), "-c", imports]
    return statistics.median(_wall(argv, env) for _ in range(runs))


async def _first_poll(extra_env: dict[str, str]) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory(prefix="mg-startup-") as tmp:
        async with running_daemon(Path(tmp), notify=True, env=extra_env) as daemon:
            spawned_wall = time.time() - (time.monotonic() - daemon.started)
            deadline = time.monotonic() + READY_TIMEOUT_S
            while (daemon.ready is None or daemon.first_request is None) and time.monotonic() < deadline:
                if daemon.process.returncode is not None:
                    raise RuntimeError(f"the daemon exited with {daemon.process.returncode}; see its log")
                await asyncio.sleep(0.01)
            if daemon.ready is None or daemon.first_request is None:
                raise RuntimeError(f"no first poll and READY=1 within {READY_TIMEOUT_S:.0f} s")
            return (daemon.first_request - daemon.started, daemon.ready - daemon.started,
                    _bus_started_s(Path(tmp) / "daemon.log", spawned_wall))


class _NotedMeter(SimulatedMeter):
    """A simulated meter that notes when it is first asked (its values are computed per request)."""

    first_request: float | None = None

    def values(self, t: float) -> dict[str, float]:
        if self.first_request is None:
            self.first_request = time.monotonic()
        return super().values(t)


async def _first_poll_tcp(extra_env: dict[str, str]) -> tuple[float, float, float]:
    """Spawn to the first request of a Modbus TCP meter, and to READY=1."""
    meter = _NotedMeter("tcp-1", 1, builtin_profile("eastron-sdm630"),
                        LoadModel.for_meter("tcp-1", math.floor(time.time()) - 3600))
    sim = MeterSimulator([meter], SystemClock(), port=free_port())
    await sim.start()
    with tempfile.TemporaryDirectory(prefix="mg-startup-tcp-") as tmp:
        work = Path(tmp)
        config = work / "gateway.toml"
        config.write_text(
            f'gateway_id = "gw-bench"\nsite_timezone = "UTC"\ndata_dir = "{work / "data"}"\n'
            '[logging]\nlevel = "info"\nformat = "json"\n'
            f'[web]\nlisten = "127.0.0.1"\nport = {free_port()}\n[time]\ntrust = "always"\n'
            f'[[buses]]\nname = "tcp-1"\nhost = "127.0.0.1"\nport = {sim.port}\ntimeout_s = 1.0\n'
            '  [[buses.meters]]\n  id = "tcp-1"\n  unit_id = 1\n  profile = "eastron-sdm630"\n  poll_s = 1\n')
        (work / "locks").mkdir()
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(work / "notify.sock"))
        notify.setblocking(False)
        env = {k: v for k, v in os.environ.items() if k not in ("WATCHDOG_USEC", "WATCHDOG_PID")}
        env.update(extra_env, METER_GATEWAY_LOCK_DIR=str(work / "locks"), NOTIFY_SOCKET=str(work / "notify.sock"),
                   BENCH_HIDDEN=",".join(sorted(hidden_modules())))
        ready: float | None = None
        with open(work / "daemon.log", "wb") as log:  # noqa: ASYNC230 - before the child starts
            started, spawned_wall = time.monotonic(), time.time()
            process = await asyncio.create_subprocess_exec(
                sys.executable, str(HERE / "_as_installed.py"), "-m", "gateway", "run", "--config", str(config),
                env=env, stdout=asyncio.subprocess.DEVNULL, stderr=log)
        try:
            deadline = started + READY_TIMEOUT_S
            while ready is None or meter.first_request is None:
                if process.returncode is not None:
                    raise RuntimeError(f"the daemon exited with {process.returncode}; see its log")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no first poll and READY=1 within {READY_TIMEOUT_S:.0f} s")
                try:
                    if ready is None and b"READY=1" in notify.recv(4096).split(b"\n"):
                        ready = time.monotonic()
                except BlockingIOError:
                    pass
                await asyncio.sleep(0.002)
            return meter.first_request - started, ready - started, _bus_started_s(work / "daemon.log", spawned_wall)
        finally:
            if process.returncode is None:
                process.terminate()
                try:
                    async with asyncio.timeout(STOP_TIMEOUT_S):
                        await process.wait()
                except TimeoutError:
                    process.kill()
                    await process.wait()
            notify.close()
            await sim.stop()


def _daemon_figures(prefix: str, runs: list[tuple[float, float, float]], state: str, bare: float) -> None:
    for i, what in ((2, "spawn to bus started"), (0, "spawn to first poll"), (1, "spawn to READY=1")):
        seconds = statistics.median(r[i] for r in runs)
        print(f"{prefix + what + ', ' + state:<50} {seconds:>8.3f} {seconds / bare:>9.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per import figure (median; 5)")
    parser.add_argument("--daemon-runs", type=int, default=2, help="daemon starts per bytecode state (median; 2)")
    args = parser.parse_args(argv)
    bare = statistics.median(_wall([sys.executable, "-c", "pass"], dict(os.environ)) for _ in range(args.runs))
    with tempfile.TemporaryDirectory(prefix="mg-nopyc-") as empty:
        states = {"bytecode as installed": {}, "no bytecode": _no_bytecode_env(Path(empty))}
        print(f"{METERS} SDM630s on a 9600-baud RTU line, web on; medians of {args.runs} (imports) and "
              f"{args.daemon_runs} (daemon) runs")
        print(f"baseline  python -c pass: {bare * 1000:.0f} ms")
        print(f"{'figure':<50} {'seconds':>8} {'x python':>9}")
        for state, env in states.items():
            imports = _imports(args.runs, env)
            print(f"{'imports, ' + state:<50} {imports:>8.3f} {imports / bare:>9.1f}")
        for state, env in states.items():
            _daemon_figures("", [asyncio.run(_first_poll(env)) for _ in range(args.daemon_runs)], state, bare)
        print("one SDM630 behind a Modbus TCP server")
        for state, env in states.items():
            imports = _imports(args.runs, env, TCP_IMPORTS)
            print(f"{'TCP imports, ' + state:<50} {imports:>8.3f} {imports / bare:>9.1f}")
        for state, env in states.items():
            _daemon_figures("TCP ", [asyncio.run(_first_poll_tcp(env)) for _ in range(args.daemon_runs)], state, bare)
    return 0


if __name__ == "__main__":
    sys.exit(main())
