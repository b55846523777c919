"""Power-cut safety of the Stellar uplink: the gateway SIGKILLed at random moments, 30 times.

The demo (simulated meters + the daemon with both uplinks on) runs against a reference receiver
and a local ledger that are their own processes and survive every kill. The ledger answers
faults all along (504 and connection resets *after* applying, 503, 429 with Retry-After); it is
itself SIGKILLed and restarted now and then; and someone else holding the gateway key spends the
gateway account's next sequence number now and then (``tx_bad_seq`` for whatever envelope was
stored). Afterwards every meter's on-chain balance must equal its credited energy × rate to the
stroop, each credit paid by exactly one payment, no batch twice, one account per meter.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import select
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from stellar_sdk import Account, Keypair, TransactionBuilder

from cloud_sync.stellar.amounts import rate_stroops, to_stroops
from gateway.sim.demo import GATEWAY_ID
from gateway.sim.utility import KEYS_FILE, RATE
from tests.conftest import free_port, wait_for_port

KILLS = 30
LEDGER_RESTART_EVERY = 10
INTERLOPER_EVERY = 4
EARLY_KILLS = 0.2
"""Share of kills during start-up (onboarding, provisioning); the others land while the uplinks run."""
PY = sys.executable
START_S = 30.0
FINAL_RUN_S = 120.0
"""Six seconds of demo, its start and the drains: far less than this even on a loaded box."""
FAULTS = [
    {"path": "/transactions", "method": "POST", "repeat": True, "retry_after_s": 1,
     "modes": ["ok", "504_after", "ok", "503", "reset_after", "ok", "429"]},
    {"path": "/accounts/*", "method": "GET", "repeat": True, "modes": ["ok", "ok", "ok", "503"]},
]


def _ledger(data: Path, port: int, faults: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([PY, "-m", "cloud_sync.horizon", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data),
                             "--close-interval", "1", "--faults", str(faults)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, START_S)
    return proc


def _demo(data: Path, url: str, token: Path, horizon: str, *extra: str) -> list[str]:
    return [PY, "-m", "gateway", "demo", "--speed", "900", "--web-port", "0", "--data-dir", str(data),
            "--receiver", url, "--receiver-token-file", str(token), "--horizon", horizon, *extra]


def _interloper(horizon: str, data: Path) -> None:
    """Someone else with the gateway's key uses its next sequence number (a second box, an operator)."""
    key = Keypair.from_secret((data / "gateway.key").read_text().strip())
    with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
        doc = httpx.get(f"{horizon}/accounts/{key.public_key}", timeout=5).json()
        passphrase = httpx.get(horizon, timeout=5).json()["network_passphrase"]
        seq = int(doc["sequence"])
        tx = (TransactionBuilder(Account(key.public_key, seq), passphrase, base_fee=100)
              .append_bump_sequence_op(seq + 1).set_timeout(60).build())
        tx.sign(key)
        httpx.post(f"{horizon}/transactions", data={"tx": tx.to_xdr()}, timeout=10)


def _final_run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    """The last, undisturbed run; if it ever hangs, its threads' stacks are in the failure (SIGABRT)."""
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env={**os.environ, "PYTHONFAULTHANDLER": "1"}) as proc:
        try:
            out, err = proc.communicate(timeout=FINAL_RUN_S)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            out, err = proc.communicate(timeout=30)
            raise AssertionError(f"the final run hung:\n{out[-2000:]}\n{err[-6000:]}") from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _wait_for_banner(proc: subprocess.Popen[bytes]) -> None:
    """Until the demo says it runs (the daemon and its uplinks are up), or START_S."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    seen = b""
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline and b"Demo running" not in seen:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            chunk = os.read(fd, 65536)  # unbuffered: a buffered readline would hide lines from select
            if not chunk:
                return
            seen += chunk


def _pending(data: Path) -> bool:
    with contextlib.suppress(sqlite3.Error), contextlib.closing(
            sqlite3.connect(f"file:{data / 'ledger.db'}?mode=ro", uri=True, timeout=5)) as db:
        return bool(db.execute("SELECT COUNT(*) FROM stellar_txs WHERE state='pending'").fetchone()[0])
    return False


def _delivered(horizon: str) -> Counter[str]:
    """The faults the ledger process delivered on submissions since it started."""
    doc = httpx.get(f"{horizon}/_ledger/faults", timeout=10).json()
    return Counter(doc["delivered"].get("/transactions", {}))


def _all(horizon: str, path: str, **params: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor = ""
    while True:
        query = {"limit": "200", **params, **({"cursor": cursor} if cursor else {})}
        page = httpx.get(f"{horizon}{path}", params=query, timeout=30).json()["_embedded"]["records"]
        out.extend(page)
        if len(page) < 200:
            return out
        cursor = page[-1]["paging_token"]


def test_thirty_sigkills_pay_every_credit_exactly_once(tmp_path: Path) -> None:
    data = tmp_path / "gateway"
    key = subprocess.run([PY, "-m", "gateway", "identity", "--data-dir", str(data)], capture_output=True,
                         text=True, check=True).stdout.strip()
    token = tmp_path / "api.token"
    token.write_text("crash-test-token\n")
    token.chmod(0o600)
    faults = tmp_path / "faults.json"
    faults.write_text(json.dumps(FAULTS))
    receiver_port, ledger_port = free_port(), free_port()
    url, horizon = f"http://127.0.0.1:{receiver_port}", f"http://127.0.0.1:{ledger_port}"
    log = (tmp_path / "gateway.log").open("w")
    rng = random.Random(20261202)
    ledger = _ledger(tmp_path / "horizon", ledger_port, faults)
    events: Counter[str] = Counter()
    delivered: Counter[str] = Counter()
    with subprocess.Popen([PY, "-m", "cloud_sync.receiver", "--db", str(tmp_path / "receiver.db"), "--port",
                           str(receiver_port), "--enroll", f"{GATEWAY_ID}={key}", "--token-file", str(token)],
                          stdout=subprocess.DEVNULL, stderr=log) as receiver:
        try:
            wait_for_port(receiver_port)
            for i in range(1, KILLS + 1):
                # A new session, so the kill takes the demo's mosquitto child with it.
                proc = subprocess.Popen(_demo(data, url, token, horizon), stdout=subprocess.PIPE, stderr=log,
                                        start_new_session=True)
                if rng.random() < EARLY_KILLS:
                    time.sleep(rng.uniform(0.3, 3.0))  # during start-up: onboarding, provisioning
                else:
                    _wait_for_banner(proc)
                    time.sleep(rng.uniform(0.05, 1.2))  # while the uplinks run
                if i % INTERLOPER_EVERY == 0:
                    _interloper(horizon, data)
                    events["interloper"] += 1
                    time.sleep(rng.uniform(0.0, 0.3))
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                assert proc.stdout is not None
                proc.stdout.close()
                if _pending(data):
                    # The kill left an envelope stored but unsettled: now make its sequence number stale too.
                    events["killed_with_an_envelope_pending"] += 1
                    if rng.random() < 0.5:
                        _interloper(horizon, data)
                        events["interloper_on_pending"] += 1
                if i % LEDGER_RESTART_EVERY == 0:
                    delivered.update(_delivered(horizon))
                    ledger.send_signal(signal.SIGKILL)
                    ledger.wait()
                    ledger = _ledger(tmp_path / "horizon", ledger_port, faults)
                    events["ledger_restart"] += 1
            delivered.update(_delivered(horizon))
            httpx.delete(f"{horizon}/_ledger/faults", timeout=10)  # healthy again: everything must converge
            final = _final_run(_demo(data, url, token, horizon, "--duration", "6"))
            log.write(final.stderr)
            assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-3000:]
            assert "-> exact" in final.stdout, final.stdout
            assert "MISMATCH" not in final.stdout, final.stdout

            with contextlib.closing(sqlite3.connect(data / "ledger.db")) as db:
                credits = db.execute("SELECT meter, SUM(wh), SUM(wh > 0), SUM(wh < 0), COUNT(*) FROM credits "
                                     "WHERE channel = 'import' GROUP BY meter").fetchall()  # export is never paid
                accounts = dict(db.execute("SELECT meter, account_id FROM stellar_accounts WHERE state='active'"))
                serials = dict(db.execute("SELECT meter, serial FROM stellar_accounts"))
                voids = Counter(json.loads(r)["transaction"] for (r,) in db.execute(
                    "SELECT result FROM stellar_txs WHERE state='void'"))
            utility = json.loads((data / KEYS_FILE).read_text())
            issuer = Keypair.from_secret(utility["issuer"]).public_key
            platform = Keypair.from_secret(utility["platform"]).public_key
            per_wh = rate_stroops(RATE)
            assert len(credits) == 5
            for meter, wh, positive, negative, n in credits:
                assert n >= 10, f"{meter}: the kills left time to make progress"
                doc = httpx.get(f"{horizon}/accounts/{accounts[meter]}", timeout=10).json()
                balance = next(to_stroops(b["balance"]) for b in doc["balances"] if b.get("asset_issuer") == issuer)
                assert balance == wh * per_wh, f"{meter}: {balance} stroops on chain for {wh} Wh credited"
                pays = [p for p in _all(horizon, f"/accounts/{accounts[meter]}/payments") if p["type"] == "payment"]
                assert sum(1 for p in pays if p["from"] == key) == positive, f"{meter}: one payment per credit"
                assert sum(1 for p in pays if p["to"] == key) == negative, f"{meter}: one refund per correction"
            memos = [tx["memo"] for tx in _all(horizon, f"/accounts/{key}/transactions")
                     if tx.get("memo_type") == "hash" and tx["successful"]]
            assert len(memos) == len(set(memos)), "no batch paid twice"
            made = Counter(base64.b64decode(a["data"]["serial"]).decode()
                           for a in _all(horizon, "/accounts", signer=platform) if "serial" in a.get("data", {}))
            assert made == Counter(serials.values()), "exactly one account per meter serial"
        finally:
            receiver.send_signal(signal.SIGTERM)
            receiver.wait(timeout=10)
            ledger.send_signal(signal.SIGTERM)
            ledger.wait(timeout=10)
            log.close()
    print(f"faults met: {delivered}; events: {dict(events)}; void envelopes rebuilt: {dict(voids)}")
    assert delivered["504_after"] + delivered["reset_after"] >= 3, "answers lost after applying"
    assert events["ledger_restart"] == KILLS // LEDGER_RESTART_EVERY
