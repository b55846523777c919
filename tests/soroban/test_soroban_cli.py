"""``meter-gateway stellar soroban`` as installed: it starts, the SDK reaches it, SIGTERM stops it cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from stellar_sdk import SorobanServer

START_S = 20.0


def test_cli_serves_rpc_and_stops_on_sigterm(tmp_path: Path) -> None:
    with subprocess.Popen([sys.executable, "-m", "gateway", "stellar", "soroban", "--listen", "127.0.0.1:0",
                           "--data-dir", str(tmp_path / "net")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as proc:
        _check(proc)


def _check(proc: subprocess.Popen[str]) -> None:
    try:
        assert proc.stdout is not None
        lines = {}
        while len(lines) < 3:
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else "no output"
            key, _, value = line.strip().partition(": ")
            lines[key] = value
        with SorobanServer(lines["soroban rpc"]) as rpc:
            assert rpc.get_health().status == "healthy"
            assert rpc.get_network().passphrase
        assert lines["contract"].startswith("C")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(START_S) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
