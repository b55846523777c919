"""Start-up: import time and time to first poll of the RTU daemon, against a bare Python.

One command: ``.venv/bin/python benchmarks/startup.py``

Printed, each as the median of ``--runs`` and as a ratio to ``python -c pass`` measured in this run:

* **imports**: a process that imports what ``meter-gateway run`` imports for a 16-meter RTU line
  with the status page (``gateway.cli``, ``gateway.daemon``, the web server), start to exit; with
  the bytecode as ``scripts/install.sh`` leaves it, and with none (what every start costs where the
  service user may not write ``__pycache__`` under /opt and nothing precompiled it);
* **first poll**: the real daemon, spawn to the first request byte on the simulated RS-485 line, and
  spawn to its ``READY=1`` (sd_notify, once every task runs and the page listens), again with and without
  bytecode.

The daemon runs as installed on a box (``_as_installed.py`` hides distributions that only the
development venv has), on the line of ``_rtu_daemon.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # works without the editable install too

from benchmarks._as_installed import hidden_modules
from benchmarks._rtu_daemon import DAEMON_IMPORTS, HERE, METERS, running_daemon

READY_TIMEOUT_S = 60.0
"""Host seconds the daemon gets to poll and report READY=1; a loaded 2-core box needs a few."""


def _no_bytecode_env(cache: Path) -> dict[str, str]:
    """Python finds no .pyc (an empty cache prefix) and writes none: it compiles every module at every start."""
    return {"PYTHONPYCACHEPREFIX": str(cache), "PYTHONDONTWRITEBYTECODE": "1"}


def _wall(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def _imports(runs: int, extra_env: dict[str, str]) -> float:
    env = dict(os.environ, BENCH_HIDDEN=",".join(sorted(hidden_modules())), **extra_env)
    argv = [sys.executable, str(HERE / "_as_installed.py"), "-c", DAEMON_IMPORTS]
    return statistics.median(_wall(argv, env) for _ in range(runs))


async def _first_poll(extra_env: dict[str, str]) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(prefix="mg-startup-") as tmp:
        async with running_daemon(Path(tmp), notify=True, env=extra_env) as daemon:
            deadline = time.monotonic() + READY_TIMEOUT_S
            while (daemon.ready is None or daemon.first_request is None) and time.monotonic() < deadline:
                if daemon.process.returncode is not None:
                    raise RuntimeError(f"the daemon exited with {daemon.process.returncode}; see its log")
                await asyncio.sleep(0.01)
            if daemon.ready is None or daemon.first_request is None:
                raise RuntimeError(f"no first poll and READY=1 within {READY_TIMEOUT_S:.0f} s")
            return daemon.first_request - daemon.started, daemon.ready - daemon.started


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
        print(f"{'figure':<46} {'seconds':>8} {'x python':>9}")
        for state, env in states.items():
            imports = _imports(args.runs, env)
            print(f"{'imports, ' + state:<46} {imports:>8.3f} {imports / bare:>9.1f}")
        for state, env in states.items():
            runs = [asyncio.run(_first_poll(env)) for _ in range(args.daemon_runs)]
            first = statistics.median(r[0] for r in runs)
            ready = statistics.median(r[1] for r in runs)
            print(f"{'spawn to first poll, ' + state:<46} {first:>8.3f} {first / bare:>9.1f}")
            print(f"{'spawn to READY=1, ' + state:<46} {ready:>8.3f} {ready / bare:>9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
