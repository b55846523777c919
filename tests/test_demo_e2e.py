"""Acceptance of the foundation: the demo as a user runs it, as real subprocesses.

The demo runs simulated meters, the gateway and the reference receiver on
loopback at 900 meter seconds per wall second. The receiver's credits are
checked against the simulated meters' true registers, to the Wh.
"""

from __future__ import annotations

import contextlib
import json
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

from gateway.channels import Channel
from gateway.sim import children
from gateway.sim.demo import DemoState, models
from gateway.sim.demo_check import check_series, receiver_series
from tests.stellar.demo_checks import assert_stellar_report, check_status_api

DEMO = [sys.executable, "-m", "gateway", "demo", "--speed", "900", "--web-port", "0"]


HANG_S = 60.0
"""Beyond its run, what the demo may take to start and to stop (final sync, reports) before it counts as hung."""
STACKS_S = 10.0
"""How long a hung demo gets to print its tasks' (SIGUSR1) and threads' (SIGABRT) stacks before it is killed."""


def _run(data_dir: Path, duration: float) -> subprocess.CompletedProcess[str]:
    """The demo for ``duration`` s; one that does not end within ``HANG_S`` more fails the test with every
    task's and thread's stack (a hang seen once in CI left nothing to go on)."""
    argv = [*DEMO, "--duration", str(duration), "--data-dir", str(data_dir)]
    try:
        return children.run(argv, capture_output=True, text=True, timeout=duration + HANG_S, check=False,
                            stacks_s=STACKS_S, env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    except subprocess.TimeoutExpired as exc:
        out, err = exc.stdout or "", exc.stderr or ""
        raise AssertionError(f"the demo did not end {HANG_S:g} s after a {duration:g}-s run; "
                             f"its output:\n{out[-2000:]}\nits tasks and threads:\n{err[-12000:]}") from None


Series = tuple[str, Channel]
METERS = {"flat-1", "flat-2", "shop", "heat-pump", "pv-house"}


def _ledger(data_dir: Path) -> dict[Series, tuple[int, int, list[int]]]:
    """Per (meter, channel): first and last accepted reading time (ms) and the credit seqs in the outbox."""
    out = {}
    with contextlib.closing(sqlite3.connect(data_dir / "ledger.db")) as db:
        for meter, channel, first, last in db.execute(
                "SELECT meter, channel, MIN(t_ms), MAX(t_ms) FROM readings WHERE disposition='accepted' "
                "GROUP BY meter, channel"):
            seqs = [s for (s,) in db.execute("SELECT seq FROM credits WHERE meter=? AND channel=? ORDER BY seq",
                                             (meter, channel))]
            out[(meter, Channel(channel))] = (first, last, seqs)
    return out


def _assert_complete_and_exact(data_dir: Path) -> dict[Series, list[int]]:
    """Every meter's import and export, each its own series: complete, exactly once, equal to its register."""
    epoch = DemoState.load_or_create(data_dir, 0).epoch
    report = check_series(data_dir / "receiver.db", models(epoch))
    ledger = _ledger(data_dir)
    held = receiver_series(data_dir / "receiver.db")
    assert set(report) == set(ledger) == {(m, c) for m in METERS for c in Channel}
    seqs = {}
    for series, (first_ms, last_ms, outbox) in ledger.items():
        closed = math.floor(last_ms / 900_000) - math.ceil(first_ms / 900_000)
        received = [c["seq"] for c in held[series]]
        assert received == list(range(1, closed + 1)), f"{series}: one credit per closed interval, no gap"
        assert outbox == received, f"{series}: everything in the outbox reached the receiver exactly once"
        r = report[series]
        assert r["exact"], f"{series}: credited {r['credited_wh']} Wh != register delta {r['register_delta_wh']} Wh"
        seqs[series] = received
    pv_export = report[("pv-house", Channel.EXPORT)]["credited_wh"]
    assert pv_export > 2000, f"the solar house fed in by day: {pv_export} Wh"
    assert all(report[(m, Channel.EXPORT)]["credited_wh"] == 0 for m in METERS - {"pv-house"})
    return seqs


def _assert_shared_once(out: str, data_dir: Path) -> None:
    """The agreement with the neighbour: one delivery record, sent, and the contract says Delivered."""
    assert "on the contract: status Delivered, delivered 2 of 2 kWh" in out, out[-2000:]
    with contextlib.closing(sqlite3.connect(data_dir / "ledger.db")) as db:
        records = db.execute("SELECT agreement_id, kwh, state FROM p2p_deliveries").fetchall()
    assert records == [(1, 2, "delivered")], records
    with contextlib.closing(sqlite3.connect(data_dir / "horizon" / "soroban.sqlite3")) as db:
        (state,) = db.execute("SELECT value FROM meta WHERE key='contract'").fetchone()
    deliveries = [t for t in json.loads(state)["transactions"] if t["agreement_id"] == 1]
    assert len(deliveries) == 1, deliveries
    assert deliveries[0]["energy_delivered_kwh"] == 2, deliveries


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
    _assert_shared_once(first.stdout, data)

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
    _assert_shared_once(third.stdout, data)  # restarts never deliver twice
