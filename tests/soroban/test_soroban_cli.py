"""``meter-gateway stellar soroban`` as installed: it starts, the SDK reaches it, the admin commands set up an
agreement through it, SIGTERM stops it cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from stellar_sdk import Keypair, SorobanServer

from gateway.cli import main

START_S = 20.0


def test_cli_serves_rpc_and_stops_on_sigterm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with subprocess.Popen([sys.executable, "-m", "gateway", "stellar", "soroban", "--listen", "127.0.0.1:0",
                           "--data-dir", str(tmp_path / "net")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as proc:
        _check(proc, tmp_path, capsys)


def _check(proc: subprocess.Popen[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
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
        _admin(lines, tmp_path, capsys)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(START_S) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _admin(lines: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys = {name: Keypair.random() for name in ("admin", "provider", "consumer")}
    files = {}
    for name, kp in keys.items():
        httpx.get(f"{lines['horizon']}/friendbot", params={"addr": kp.public_key}).raise_for_status()
        files[name] = tmp_path / f"{name}.key"
        files[name].write_text(kp.secret)
    base = ["stellar", "soroban-admin", "--rpc", lines["soroban rpc"], "--contract", lines["contract"],
            "--source-key", str(files["admin"])]
    assert main([*base, "initialize"]) == 0
    for who in ("provider", "consumer"):
        assert main([*base, "--signer-key", str(files[who]), "register", "--prosumer", keys[who].public_key]) == 0
    capsys.readouterr()
    assert main([*base, "--signer-key", str(files["provider"]), "agreement", "--provider", keys["provider"].public_key,
                 "--consumer", keys["consumer"].public_key, "--kwh", "10", "--price", "50",
                 "--deadline", "4102444800"]) == 0
    assert "agreement id: 1" in capsys.readouterr().out
    assert main([*base, "show", "--agreement", "1"]) == 0
    assert '"status": "Active"' in capsys.readouterr().out
    assert main([*base, "register", "--prosumer", Keypair.random().public_key]) == 1  # no key for its authorisation
    assert "needs" in capsys.readouterr().err
