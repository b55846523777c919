"""Acceptance of the foundation: the demo as a user runs it, as real subprocesses.

The demo runs simulated meters, the gateway and the reference receiver on
loopback at 900 meter seconds per wall second. The receiver's credits are
checked against the simulated meters' true registers, to the Wh.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx

from gateway.sim import children
from gateway.sim.demo import DemoState, check_conservation, receiver_summary
from tests.stellar.demo_checks import assert_stellar_report, check_status_api

DEMO = [sys.executable, "-m", "gateway", "demo", "--speed", "900", "--web-port", "0"]


def _run(data_dir: Path, duration: float) -> subprocess.CompletedProcess[str]:
    return children.run([*DEMO, "--duration", str(duration), "--data-dir", str(data_dir)],
                        capture_output=True, text=True, timeout=duration + 60, check=False)


def _ledger(data_dir: Path) -> dict[str, tuple[int, int, list[int]]]:
    """Per meter: first and last accepted reading time (ms) and the credit seqs in the outbox."""
    out = {}
    with contextlib.closing(sqlite3.connect(data_dir / "ledger.db")) as db:
        for meter, first, last in db.execute(
                "SELECT meter, MIN(t_ms), MAX(t_ms) FROM readings WHERE disposition='accepted' GROUP BY meter"):
            seqs = [s for (s,) in db.execute("SELECT seq FROM credits WHERE meter=? ORDER BY seq", (meter,))]
            out[meter] = (first, last, seqs)
    return out


def _assert_complete_and_exact(data_dir: Path) -> dict[str, list[int]]:
    epoch = DemoState.load_or_create(data_dir, 0).epoch
    report = check_conservation(data_dir / "receiver.db", epoch)
    ledger = _ledger(data_dir)
    held = receiver_summary(data_dir / "receiver.db")
    assert set(report) == set(ledger) == {"flat-1", "flat-2", "shop", "heat-pump", "pv-house"}
    seqs = {}
    for meter, (first_ms, last_ms, outbox) in ledger.items():
        closed = math.floor(last_ms / 900_000) - math.ceil(first_ms / 900_000)
        received = [c["seq"] for c in held[meter]]
        assert received == list(range(1, closed + 1)), f"{meter}: one credit per closed interval, no gap"
        assert outbox == received, f"{meter}: everything in the outbox reached the receiver exactly once"
        r = report[meter]
        assert r["exact"], f"{meter}: credited {r['credited_wh']} Wh != register delta {r['register_delta_wh']} Wh"
        seqs[meter] = received
    return seqs


def _sign_in_as_printed(log: Path) -> None:
    """The demo prints the page's address and a technician's password: they get a person in."""
    deadline = time.monotonic() + 30
    while not (found := re.search(r"status page : (http://\S+)/ +sign in as (\S+), password (\S+)", log.read_text())):
        assert time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.1)
    url, user, password = found.groups()
    with httpx.Client(base_url=url) as http:
        assert http.get("/").status_code == 303, "the page asks to sign in"
        signed = http.post("/login", data={"username": user, "password": password})
        assert signed.status_code == 303
        assert "flat-1" in http.get("/").text


def test_demo_run_restart_and_sigterm(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    first = _run(data, 40)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "status page : http://127.0.0.1:" in first.stdout
    seqs_1 = _assert_complete_and_exact(data)
    assert all(len(s) >= 30 for s in seqs_1.values()), "40 s at 900x is about 40 quarter-hours"
    assert_stellar_report(first.stdout, data)  # every meter's on-chain balance = credited Wh x rate, exact

    # Restart on the same data dir: every sequence continues, no gap, no duplicate.
    second = _run(data, 8)
    assert second.returncode == 0, second.stderr[-3000:]
    seqs_2 = _assert_complete_and_exact(data)
    for meter, seqs in seqs_2.items():
        assert len(seqs) > len(seqs_1[meter])

    # SIGTERM in the middle: exit 0 within 5 s; the next start syncs anything pending.
    log = tmp_path / "sigterm-run.log"
    with log.open("w") as out, children.spawn([*DEMO, "--data-dir", str(data)], stdout=out,
                                               stderr=subprocess.STDOUT) as proc:
        try:
            started = time.monotonic()
            _sign_in_as_printed(log)
            check_status_api(log, data)
            time.sleep(max(0.0, 9 - (time.monotonic() - started)))
            sent = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=15)
            took = time.monotonic() - sent
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
    assert code == 0, log.read_text()[-3000:]
    assert took < 5.0, f"SIGTERM to exit took {took:.1f} s"
    third = _run(data, 5)
    assert third.returncode == 0, third.stderr[-3000:]
    seqs_3 = _assert_complete_and_exact(data)
    assert all(len(seqs_3[m]) > len(seqs_2[m]) for m in seqs_3)
    assert_stellar_report(third.stdout, data)
