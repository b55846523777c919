"""The ledger as its own process: started from the CLI, SIGKILLed, restarted — nothing answered is lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from stellar_sdk import Asset, Keypair, Server, TransactionBuilder

from tests.stellar.conftest import PASSPHRASE

START_S = 20.0
"""A cold start imports stellar-sdk, starlette and uvicorn: seconds on a loaded CI box."""
STOP_S = 10.0
TIMEOUT_S = 120


@dataclass
class LedgerProcess:
    proc: subprocess.Popen[str]
    url: str
    banner: list[str]


def start(data_dir: Path, *extra: str, module: bool = True) -> LedgerProcess:
    cmd = ([sys.executable, "-m", "cloud_sync.horizon"] if module
           else [sys.executable, "-m", "gateway", "stellar", "ledger"])
    proc = subprocess.Popen([*cmd, "--listen", "127.0.0.1:0", "--data-dir", str(data_dir), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    banner: list[str] = []
    deadline = time.monotonic() + START_S
    assert proc.stdout is not None
    try:
        while time.monotonic() < deadline and len(banner) < 4:
            line = proc.stdout.readline()
            if not line:
                break
            banner.append(line.rstrip("\n"))
        assert len(banner) == 4, f"the ledger did not start: {banner}"
        assert banner[0].startswith("local ledger: "), banner
        url = banner[0].split(": ", 1)[1]
    except BaseException:
        proc.kill()  # never leave a ledger behind when the banner is not what we expect
        _, err = proc.communicate(timeout=STOP_S)
        print(err, file=sys.stderr)
        raise
    return LedgerProcess(proc, url, banner)


@pytest.fixture
def processes() -> Iterator[list[LedgerProcess]]:
    started: list[LedgerProcess] = []
    yield started
    for p in started:
        if p.proc.poll() is None:
            p.proc.kill()
        p.proc.communicate(timeout=STOP_S)


def test_cli_prints_url_and_passphrase_and_stops_on_sigterm(tmp_path: Path, processes: list[LedgerProcess]) -> None:
    p = start(tmp_path / "ledger", module=False)
    processes.append(p)
    assert p.banner[0].startswith("local ledger: http://127.0.0.1:")
    assert p.banner[1] == f"network passphrase: {PASSPHRASE}"
    assert requests.get(p.url, timeout=10).json()["network_passphrase"] == PASSPHRASE
    p.proc.send_signal(signal.SIGTERM)
    assert p.proc.wait(timeout=STOP_S) == 0


def test_an_applied_transaction_survives_sigkill(tmp_path: Path, processes: list[LedgerProcess]) -> None:
    p = start(tmp_path / "ledger")
    processes.append(p)
    a, b = Keypair.random(), Keypair.random()
    for kp in (a, b):
        assert requests.get(f"{p.url}/friendbot", params={"addr": kp.public_key}, timeout=10).ok
    server = Server(p.url)
    tx = TransactionBuilder(server.load_account(a.public_key), PASSPHRASE, base_fee=100).append_payment_op(
        b.public_key, Asset.native(), "42").set_timeout(TIMEOUT_S).build()
    tx.sign(a)
    applied = server.submit_transaction(tx)
    p.proc.send_signal(signal.SIGKILL)  # the instant after the answer: no shutdown, no flush
    p.proc.wait(timeout=STOP_S)

    again = start(tmp_path / "ledger")
    processes.append(again)
    server = Server(again.url)
    assert server.accounts().account_id(b.public_key).call()["balances"][-1]["balance"] == "10042.0000000"
    assert server.transactions().transaction(tx.hash_hex()).call()["ledger"] == applied["ledger"]
    replay = server.submit_transaction(tx)
    assert replay["ledger"] == applied["ledger"]
    assert server.accounts().account_id(b.public_key).call()["balances"][-1]["balance"] == "10042.0000000"


def test_faults_file_and_bad_options(tmp_path: Path, processes: list[LedgerProcess]) -> None:
    faults = tmp_path / "faults.json"
    faults.write_text(json.dumps([{"path": "/fee_stats", "modes": ["503"]}]))
    p = start(tmp_path / "ledger", "--faults", str(faults))
    processes.append(p)
    assert requests.get(f"{p.url}/fee_stats", timeout=10).status_code == 503
    assert requests.get(f"{p.url}/fee_stats", timeout=10).status_code == 200
    bad = subprocess.run([sys.executable, "-m", "cloud_sync.horizon", "--listen", "nowhere", "--data-dir",
                          str(tmp_path / "x")], capture_output=True, text=True, timeout=START_S)
    assert bad.returncode == 2
    assert "HOST:PORT" in bad.stderr
    faults.write_text("{not json")
    bad = subprocess.run([sys.executable, "-m", "cloud_sync.horizon", "--listen", "127.0.0.1:0", "--data-dir",
                          str(tmp_path / "y"), "--faults", str(faults)], capture_output=True, text=True,
                         timeout=START_S)
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: --faults")
    assert "Traceback" not in bad.stderr
