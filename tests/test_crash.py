"""Power-cut safety: the gateway is SIGKILLed at random moments, 50 times.

A real gateway process (the demo: simulated meters + the daemon) ingests and
syncs to a reference receiver running as its own process, which survives
every kill. Kills land anywhere: mid-poll, mid-commit, mid-batch, between the
receiver committing a batch and the gateway recording the ack. At the end the
receiver must hold every credit exactly once, in unbroken verified chains,
adding up to each simulated meter's register delta to the Wh.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from cloud_sync.credit import ChainTip, verify
from gateway.sim.demo import GATEWAY_ID, DemoState, check_conservation
from tests.conftest import free_port, wait_for_port

KILLS = 50
PY = sys.executable


def _demo(data: Path, url: str, token: Path, *extra: str) -> list[str]:
    return [PY, "-m", "gateway", "demo", "--speed", "900", "--web-port", "0", "--data-dir", str(data),
            "--receiver", url, "--receiver-token-file", str(token), "--no-stellar", *extra]  # see test_stellar_crash


def test_fifty_sigkills_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    data = tmp_path / "gateway"
    key = subprocess.run([PY, "-m", "gateway", "identity", "--data-dir", str(data)], capture_output=True,
                         text=True, check=True).stdout.strip()
    token = tmp_path / "api.token"
    token.write_text("crash-test-token\n")
    token.chmod(0o600)
    receiver_db = tmp_path / "receiver.db"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "gateway.log").open("w")
    rng = random.Random(20261123)
    with subprocess.Popen([PY, "-m", "cloud_sync.receiver", "--db", str(receiver_db), "--port", str(port),
                           "--enroll", f"{GATEWAY_ID}={key}", "--token-file", str(token)],
                          stdout=subprocess.DEVNULL, stderr=log) as receiver:
        try:
            wait_for_port(port)
            for _ in range(KILLS):
                # A new session, so the kill takes the demo's mosquitto child with it.
                proc = subprocess.Popen(_demo(data, url, token), stdout=subprocess.DEVNULL, stderr=log,
                                        start_new_session=True)
                time.sleep(rng.uniform(0.7, 3.0))
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            final = subprocess.run(_demo(data, url, token, "--duration", "6"), stdout=subprocess.DEVNULL,
                                   stderr=log, timeout=120, check=False)
            assert final.returncode == 0, (tmp_path / "gateway.log").read_text()[-3000:]
        finally:
            receiver.send_signal(signal.SIGTERM)
            receiver.wait(timeout=10)
            log.close()

    with contextlib.closing(sqlite3.connect(data / "ledger.db")) as db:
        outbox = {(m, s): h for m, s, h in db.execute("SELECT meter, seq, hash FROM credits")}
    with contextlib.closing(sqlite3.connect(receiver_db)) as db:
        rows = db.execute("SELECT meter, seq, hash, wire FROM credits ORDER BY meter, seq").fetchall()
    held = {(m, s): h for m, s, h, _ in rows}
    assert held == outbox, "the receiver holds exactly the outbox: nothing lost, nothing extra"
    assert len(rows) == len({(m, s) for m, s, _, _ in rows}), "each (meter, seq) once"

    tips: dict[str, ChainTip] = {}
    for meter, _seq, _, wire in rows:
        body, digest = verify(json.loads(wire), expected_key=key, tip=tips.get(meter))
        tips[meter] = ChainTip(body["seq"], digest)
    assert len(tips) == 5
    assert all(tip.seq >= 20 for tip in tips.values()), f"the kills left time to make progress: {tips}"

    report = check_conservation(receiver_db, DemoState.load_or_create(data, 0).epoch)
    for meter, r in report.items():
        assert r["contiguous"], meter
        assert r["exact"], f"{meter}: {r['credited_wh']} Wh credited, register moved {r['register_delta_wh']} Wh"
