"""Draining a credit backlog to the billing API, and the ledger's write volume per meter per day.

One command: ``.venv/bin/python benchmarks/drain.py`` (backlogs of 10k and 500k credits; ``--quick``
for 10k only, ``--sizes 10000,576000`` to choose; ``--help`` for options)

1. Drain rate and memory. For each backlog size a ledger is built (200 meters, readings on every
   15-minute boundary, so one signed credit per meter per interval; the build time is printed but is
   not the measurement). Then, each against a fresh reference receiver (``python -m
   cloud_sync.receiver``, a separate process on 127.0.0.1 that verifies every signature and chain
   link and stores each credit with ``synchronous=FULL``), a separate child process drains it:

   * gateway: opens the ledger and runs ``BillingApiUplink.run()`` (default config: batches of 500)
     until the backlog is 0 — batch bookkeeping in the ledger, idempotency keys, fsynced claims
     (each with the settle before it);
   * baseline: a raw batched POST loop — plain ``sqlite3`` reads of the same stored wire JSON, the
     same batch size, one ``httpx`` POST per batch, no ledger bookkeeping.

   Both children import the same modules, so their peak RSS (VmHWM; ``ru_maxrss`` would include
   the parent's peak, Linux carries it across exec) compares like with like. Backlogs up to
   100k are drained three times each way, alternating, from copies of the same ledger (median
   reported); larger ones once. Printed: credits/s both ways and their ratio, the gateway's
   absolute rate against issue 11's 10 000 credits/s, peak RSS of the gateway's drainer at each
   backlog size and the ratio largest/smallest (flat memory: about 1), and the drainer's RSS
   growth while draining, largest backlog less smallest, against the 5 MB limit. The absolute
   rate is bounded by the receiver (it verifies every signature, 65-85 µs of CPU each here, and
   fsyncs each batch) and by what else the machine runs: the raw loop's rate beside it says so,
   and so do the CPU seconds per credit printed for the receiver process and the sender child
   (with the load average: on 2 cores, 10 000 credits/s leaves 200 µs of CPU per credit in all).
   ``--drain-only`` skips part 2.

2. Write volume per meter per day. 20 meters polled every 60 s for a simulated day (after 7 days of
   history, ``--history-days``, the ledger closed and opened again so that the bulk-built history is
   checkpointed first, and an hour of warm-up) through the real ``ReadingWriter`` (the daemon's
   defaults) on a simulated clock,
   readings submitted as the clock reaches each poll: the writer decides when to commit (with the
   defaults, once per quarter-hour, when the boundary's readings come). Baseline, in the same run:
   a plain sqlite3 file that stores every reading durably as it comes (one fsynced commit per poll
   cycle, WAL, ``synchronous=FULL``, no index) and the same credits' wire text every 15 minutes.
   Every 15 minutes the uplink's ledger work for one
   delivered batch is done too, as ``BillingApiUplink`` does it: ``next_batch`` (one fsynced
   transaction: the claim, with the settle of the batch before) and ``settle_batch_later`` (in
   memory; on disk with the next claim). Printed per meter per day: bytes
   handed to ``write()`` (``wchar``), bytes sent to the block layer (``write_bytes``; file-system
   journal not included), and growth of ledger.db + WAL; the day starts from an empty WAL and ends with its last WAL
   generation copied back (so every page it wrote is counted once in the database file too).
   Then what made those bytes
   (``benchmarks/_walmap.py``): the WAL frames of each kind of transaction (ingest commit, the
   uplink's claim) by the table or index each page belongs to, with the block-layer bytes of each
   kind, and the distinct pages each checkpoint copied back into the database file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # works without the editable install too

import httpx
from stellar_sdk import Keypair

from benchmarks._common import (
    GATEWAY_ID,
    REPO,
    T0_S,
    child_env,
    ledger_bytes,
    median,
    peak_rss_kb,
    polled_readings,
    proc_io,
    rss_kb,
)
from benchmarks._walmap import WalTap
from cloud_sync.billing_api import NAME as UPLINK
from cloud_sync.billing_api import BillingApiUplink
from gateway.clock import SimulatedClock, SystemClock
from gateway.config import BillingApiConfig
from gateway.config.model import LedgerConfig
from gateway.ledger.store import DB_FILE, Ledger
from gateway.ledger.writer import ReadingWriter
from gateway.logs import configure as configure_logs
from gateway.status import GatewayStatus
from gateway.web.server import free_port

COMMIT_EVERY_S = LedgerConfig().commit_every_s
_CLK_TCK = os.sysconf("SC_CLK_TCK")

METERS = 200
INTERVAL_S = 900
BUILD_CHUNK = 20_000
"""Readings per commit while building a backlog (not measured; big batches build faster)."""
CHILD_TIMEOUT_S = 3600.0
SMALL_BACKLOG = 100_000
SMALL_REPEATS = 3
"""Backlogs up to SMALL_BACKLOG drain in seconds: repeat them and report medians."""
DRAIN_RATE_TARGET = 10_000
"""Issue 11: credits per second the gateway's drain reaches at a 500k backlog (absolute, this machine)."""
DRAIN_RATIO_TARGET = 0.9
"""Issue 11: the gateway's drain rate against the raw POST loop's, at a 500k backlog."""
RSS_GROWTH_TARGET_MB = 5.0
"""Issue 11: the drainer's RSS growth while draining, 500k backlog less 10k backlog (MB, 10^6 bytes)."""
DAY_METERS = 20
DAY_POLL_S = 60
SD_TARGET_MB = 0.3
"""Issue 11: at most this much written to the SD card per meter per day with 60-s polls."""
DAY_SPEED = 1000.0
"""Simulated seconds per host second in the write-volume day (the 5-s flush window takes 5 ms)."""


# ---- building a backlog ------------------------------------------------------------------


async def build_backlog(data_dir: Path, credits: int, keypair: Keypair) -> int:
    """A ledger with at least ``credits`` credits, none delivered; returns the exact count."""
    per_meter = math.ceil(credits / METERS)
    ledger = await Ledger.open(data_dir, gateway_id=GATEWAY_ID, keypair=keypair)
    try:
        chunk = []
        made = 0
        for reading in polled_readings(METERS, INTERVAL_S, per_meter + 1):
            chunk.append(reading)
            if len(chunk) == BUILD_CHUNK:
                made += (await ledger.commit_readings(chunk, now_ms=chunk[-1].t_ms)).credits_created
                chunk = []
        if chunk:
            made += (await ledger.commit_readings(chunk, now_ms=chunk[-1].t_ms)).credits_created
        return made
    finally:
        await ledger.close()


# ---- the reference receiver, as a separate process ----------------------------------------


class Receiver:
    """``python -m cloud_sync.receiver`` on a free loopback port, with a fresh database."""

    def __init__(self, folder: Path, public_key: str, token_file: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port("127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port}"
        self._token = token_file.read_text().strip()
        self._log_path = folder / "receiver.log"
        self._log: IO[bytes] = self._log_path.open("wb")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "cloud_sync.receiver", "--db", str(folder / "receiver.db"),
             "--listen", "127.0.0.1", "--port", str(self.port), "--enroll", f"{GATEWAY_ID}={public_key}",
             "--token-file", str(token_file)],
            cwd=REPO, env=child_env(), stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"receiver exited with {self._proc.returncode}: {self.log_tail()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"receiver did not answer within {timeout_s:.0f} s: {self.log_tail()}")

    def stored(self) -> int:
        """Credits the receiver has accepted (its summary over all meters)."""
        answer = httpx.get(f"{self.url}/v1/summary", headers={"Authorization": f"Bearer {self._token}"},
                           timeout=60.0)
        answer.raise_for_status()
        return sum(int(m["credits"]) for m in answer.json()["meters"])

    def cpu_s(self) -> float:
        """The receiver's CPU time so far (user + system, all its threads), from ``/proc``."""
        fields = Path(f"/proc/{self._proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK

    def log_tail(self) -> str:
        self._log.flush()
        return self._log_path.read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        self._log.close()


def run_child(mode: str, data_dir: Path, url: str, token_file: Path, key_file: Path, batch_size: int,
              result: Path) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--data-dir", str(data_dir),
           "--url", url, "--token-file", str(token_file), "--key-file", str(key_file),
           "--batch-size", str(batch_size), "--result", str(result)]
    done = subprocess.run(cmd, cwd=REPO, env=child_env(), capture_output=True, text=True,
                          timeout=CHILD_TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} drainer failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-4000:]}")
    outcome: dict[str, Any] = json.loads(result.read_text())
    return outcome


def measure_drain(folder: Path, mode: str, data_dir: Path, public_key: str, token_file: Path, key_file: Path,
                  batch_size: int, expected: int) -> dict[str, Any]:
    receiver = Receiver(folder / f"receiver-{mode}", public_key, token_file)
    try:
        receiver.wait_ready()
        cpu0 = receiver.cpu_s()
        outcome = run_child(mode, data_dir, receiver.url, token_file, key_file, batch_size,
                            folder / f"result-{mode}.json")
        outcome["receiver_cpu_s"] = receiver.cpu_s() - cpu0  # the whole drain (and the child's start, a few ms)
        outcome["receiver_stored"] = receiver.stored()
    finally:
        receiver.stop()
    if outcome["credits"] != expected or outcome["receiver_stored"] != expected:
        raise RuntimeError(f"{mode}: drained {outcome['credits']}, receiver holds {outcome['receiver_stored']}, "
                           f"expected {expected}")
    return outcome


# ---- the children ----------------------------------------------------------------------------


async def child_uplink(args: argparse.Namespace) -> dict[str, Any]:
    """The gateway's drainer: BillingApiUplink.run() until the backlog is 0."""
    keypair = Keypair.from_secret(args.key_file.read_text().strip())
    token = args.token_file.read_text().strip()
    start = time.perf_counter()
    ledger = await Ledger.open(args.data_dir, gateway_id=GATEWAY_ID, keypair=keypair)
    open_s = time.perf_counter() - start
    try:
        backlog, _ = await ledger.pending_count(UPLINK)
        cfg = BillingApiConfig(url=args.url, batch_size=args.batch_size)
        uplink = BillingApiUplink(cfg, ledger, SystemClock(), gateway_id=GATEWAY_ID, token=token,
                                  wakeup=asyncio.Event)
        rss_before = rss_kb()
        start, cpu0 = time.perf_counter(), time.process_time()
        task = asyncio.create_task(uplink.run())
        try:
            while uplink.progress.delivered < backlog:
                if task.done():
                    task.result()
                    raise RuntimeError("the uplink stopped before the backlog was drained")
                if time.perf_counter() - start > CHILD_TIMEOUT_S:
                    raise RuntimeError(f"backlog not drained in {CHILD_TIMEOUT_S:.0f} s")
                await asyncio.sleep(0.005)
            elapsed, cpu_s = time.perf_counter() - start, time.process_time() - cpu0
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        left, _ = await ledger.pending_count(UPLINK)
        summary = await ledger.uplink_summary(UPLINK)
        if left or summary.dead_credits:
            raise RuntimeError(f"{left} credits left, {summary.dead_credits} dead-lettered")
        return {"credits": uplink.progress.delivered, "elapsed_s": elapsed, "cpu_s": cpu_s, "open_s": open_s,
                "rss_before_kb": rss_before, "maxrss_kb": peak_rss_kb()}
    finally:
        await ledger.close()


def child_raw(args: argparse.Namespace) -> dict[str, Any]:
    """The baseline: stored wire JSON straight from SQLite into one POST per batch."""
    token = args.token_file.read_text().strip()
    db = sqlite3.connect(f"file:{args.data_dir / DB_FILE}?mode=ro", uri=True)
    gateway = json.dumps(GATEWAY_ID)
    sent = 0
    try:
        rss_before = rss_kb()
        start, cpu0 = time.perf_counter(), time.process_time()
        with httpx.Client(base_url=args.url, timeout=60.0, headers={"Authorization": f"Bearer {token}"}) as http:
            last = 0
            while rows := db.execute("SELECT id, wire FROM credits WHERE id > ? ORDER BY id LIMIT ?",
                                     (last, args.batch_size)).fetchall():
                first, last = rows[0][0], rows[-1][0]
                key = f"{GATEWAY_ID}:raw:{first}-{last}"
                body = f'{{"gateway":{gateway},"batch":{json.dumps(key)},"credits":[{",".join(w for _, w in rows)}]}}'
                answer = http.post("/v1/batches", content=body.encode(),
                                   headers={"Idempotency-Key": key, "Content-Type": "application/json"})
                if answer.status_code != 200 or answer.json().get("accepted") != len(rows):
                    raise RuntimeError(f"batch {key}: HTTP {answer.status_code} {answer.text[:300]}")
                sent += len(rows)
        elapsed, cpu_s = time.perf_counter() - start, time.process_time() - cpu0
    finally:
        db.close()
    return {"credits": sent, "elapsed_s": elapsed, "cpu_s": cpu_s, "open_s": 0.0, "rss_before_kb": rss_before,
            "maxrss_kb": peak_rss_kb()}


def child_main(args: argparse.Namespace) -> int:
    configure_logs("warning")
    outcome = asyncio.run(child_uplink(args)) if args.child == "uplink" else child_raw(args)
    args.result.write_text(json.dumps(outcome))
    return 0


# ---- write volume of a simulated day ---------------------------------------------------------


async def _history(ledger: Ledger, meters: int, days: float) -> int:
    """Days of delivered history before the measured day (not measured), so that every meter's rows
    sit in b-tree pages of their own, as on a box that has run for a while: a fresh ledger, where
    the meters still share pages, writes less per commit than any ledger in the field."""
    cycles = round(days * 86_400 / DAY_POLL_S)
    chunk: list[Any] = []
    for reading in polled_readings(meters, DAY_POLL_S, cycles, spread_ms=50):
        chunk.append(reading)
        if len(chunk) == BUILD_CHUNK:
            await ledger.commit_readings(chunk, now_ms=chunk[-1].t_ms)
            chunk = []
    if chunk:
        await ledger.commit_readings(chunk, now_ms=chunk[-1].t_ms)
    while batch := await ledger.next_batch(UPLINK, 500, now_ms=1):
        await ledger.settle_batch(batch, now_ms=1)
    return cycles


async def day_volume(data_dir: Path, keypair: Keypair, meters: int, hours: float,
                     history_days: float) -> dict[str, Any]:
    ledger = await Ledger.open(data_dir, gateway_id=GATEWAY_ID, keypair=keypair)
    await ledger.register_uplink(UPLINK)
    first = await _history(ledger, meters, history_days)
    # Closed (checkpointed) and opened again, as a box restarts: else the measured day's first checkpoint
    # would copy back the history's bulk commits (up to a whole WAL of them), which no day in the field writes.
    await ledger.close()
    ledger = await Ledger.open(data_dir, gateway_id=GATEWAY_ID, keypair=keypair)
    tap = WalTap(data_dir / DB_FILE)
    clock = SimulatedClock(start=float(T0_S + first * DAY_POLL_S), speed=DAY_SPEED)
    status = GatewayStatus(GATEWAY_ID, keypair.public_key, clock.now())
    writer = ReadingWriter(ledger, clock, status, flush_s=COMMIT_EVERY_S, max_batch=1000)
    warmup = 3600 // DAY_POLL_S
    cycles = round(hours * 3600 / DAY_POLL_S)
    task = asyncio.create_task(writer.run())
    io0: dict[str, int] = {}
    size0 = 0
    uplink_io = {"wchar": 0, "write_bytes": 0}
    commits = 0
    try:
        measuring = False
        commit_readings = ledger.commit_readings

        async def counted(readings: list[Any], *, now_ms: int) -> Any:
            nonlocal commits
            commits += measuring
            before = proc_io()["write_bytes"]
            result = await commit_readings(readings, now_ms=now_ms)
            tap.poll("ingest commit", proc_io()["write_bytes"] - before)
            return result

        ledger.commit_readings = counted  # type: ignore[method-assign]
        for cycle in range(first, first + warmup + cycles):
            # Paced by the simulated clock, as a bus scheduler polls: the writer decides when to commit.
            due_s = T0_S + cycle * DAY_POLL_S
            while clock.now() < due_s:
                if task.done():
                    task.result()
                    raise RuntimeError("the writer stopped")
                await asyncio.sleep(clock.host_seconds(due_s - clock.now()))
            if cycle == first + warmup:
                tap.poll("warm-up")
                await ledger.checkpoint()  # the measured day starts from an empty WAL ...
                tap.reset_counts()
                io0, size0 = proc_io(), ledger_bytes(data_dir)
                measuring = True
            for reading in polled_readings(meters, DAY_POLL_S, 1, spread_ms=50, first_cycle=cycle):
                await writer.submit(reading)
            if cycle % (INTERVAL_S // DAY_POLL_S) == 1:
                # What the billing uplink writes for one delivered batch of the credits just closed.
                before = proc_io()
                now_ms = int(clock.now() * 1000)
                batch = await ledger.next_batch(UPLINK, 500, now_ms=now_ms)
                tap.poll("uplink next_batch", proc_io()["write_bytes"] - before["write_bytes"])
                if batch:  # as BillingApiUplink does: on disk with the next claim
                    ledger.settle_batch_later(batch, now_ms=now_ms)
                if cycle >= first + warmup:
                    after = proc_io()
                    for k in uplink_io:
                        uplink_io[k] += after[k] - before[k]
        task.cancel()  # commits what is gathered and queued, then stops
        await asyncio.gather(task, return_exceptions=True)
        size1 = ledger_bytes(data_dir)
        tap.poll("ingest commit")
        # ... and ends with every page of it in the database file: its last WAL generation is
        # copied back as the next checkpoint would (else a larger WAL would look cheaper than it is).
        before = proc_io()["write_bytes"]
        await ledger.save_settles()
        await ledger.checkpoint()
        io1 = proc_io()
        tap.checkpointed("end of the day", io1["write_bytes"] - before)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await ledger.close()
    wal_lines = tap.breakdown()
    days = hours / 24
    per = meters * days
    return {
        "meters": meters, "hours": hours, "commits_per_day": commits / days,
        "readings_per_meter_day": cycles / days, "credits_per_meter_day": hours * 3600 / INTERVAL_S / days,
        "wchar": (io1["wchar"] - io0["wchar"]) / per,
        "write_bytes": (io1["write_bytes"] - io0["write_bytes"]) / per,
        "growth": (size1 - size0) / per,
        "uplink_wchar": uplink_io["wchar"] / per,
        "uplink_write_bytes": uplink_io["write_bytes"] / per,
        "wal_lines": wal_lines,
    }


def raw_day_volume(data_dir: Path, meters: int, hours: float, wire_bytes: int) -> dict[str, float]:
    """The baseline: a plain durable store of the same day, measured the same way.

    A plain ``sqlite3`` file (WAL, ``synchronous=FULL``, like the ledger) with a readings table
    (the same columns, no index) and an outbox of credits (each a text of ``wire_bytes``, the
    gateway's mean stored wire credit): one fsynced commit per poll cycle holding that cycle's readings, and every
    15 minutes one credit per meter. What storing every reading as it comes, durably, costs.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(data_dir / "raw.db", isolation_level=None)
    wire = "x" * wire_bytes
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE readings (meter TEXT NOT NULL, t_ms INTEGER NOT NULL, register_wh INTEGER NOT NULL, "
                   "source TEXT NOT NULL, disposition TEXT NOT NULL, virtual_wh INTEGER)")
        db.execute("CREATE TABLE credits (id INTEGER PRIMARY KEY, meter TEXT NOT NULL, wire TEXT NOT NULL)")
        warmup = 3600 // DAY_POLL_S
        cycles = round(hours * 3600 / DAY_POLL_S)
        io0: dict[str, int] = {}
        for cycle in range(warmup + cycles):
            if cycle == warmup:
                io0 = proc_io()
            db.execute("BEGIN IMMEDIATE")
            db.executemany("INSERT INTO readings VALUES (?,?,?,?,'accepted',?)",
                           [(r.meter, r.t_ms, r.register_wh, r.source, r.register_wh)
                            for r in polled_readings(meters, DAY_POLL_S, 1, spread_ms=50, first_cycle=cycle)])
            if cycle % (INTERVAL_S // DAY_POLL_S) == 0:
                db.executemany("INSERT INTO credits (meter, wire) VALUES (?, ?)",
                               [(f"m{i:04d}", wire) for i in range(meters)])
            db.execute("COMMIT")
        io1 = proc_io()
    finally:
        db.close()
    per = meters * hours / 24
    return {"wchar": (io1["wchar"] - io0["wchar"]) / per,
            "write_bytes": (io1["write_bytes"] - io0["write_bytes"]) / per}


# ---- the parent ---------------------------------------------------------------------------------


def _summary(outcomes: list[dict[str, Any]]) -> dict[str, Any]:
    """Median time, highest peak RSS of repeated drains."""
    return {"elapsed_s": median([o["elapsed_s"] for o in outcomes]),
            "cpu_s": median([o["cpu_s"] for o in outcomes]),
            "receiver_cpu_s": median([o["receiver_cpu_s"] for o in outcomes]),
            "open_s": median([o["open_s"] for o in outcomes]),
            "rss_before_kb": median([o["rss_before_kb"] for o in outcomes]),
            "maxrss_kb": max(o["maxrss_kb"] for o in outcomes)}


def _mib(kib: float) -> str:
    return f"{kib / 1024:7.1f} MiB"


def parent_main(args: argparse.Namespace) -> int:
    configure_logs("warning")
    sizes = [] if args.volume_only else [10_000] if args.quick else sorted({int(s) for s in args.sizes.split(",")})
    if any(s < 1 for s in sizes):
        raise SystemExit("--sizes must be positive integers")
    keypair = Keypair.random()
    print("drain: credits/s from a ledger backlog to the reference receiver (separate process, 127.0.0.1,")
    print("       verifies every credit) by BillingApiUplink.run() vs a raw batched POST loop of the stored")
    print(f"       wire JSON; same batch size ({args.batch_size}), each in its own child process, fresh receiver each")
    rows: list[tuple[int, dict[str, Any], dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="bench-drain-") as tmp:
        folder = Path(tmp)
        token_file, key_file = folder / "token", folder / "gateway.key"
        token_file.write_text("bench-token\n")
        key_file.write_text(keypair.secret + "\n")
        key_file.chmod(0o600)
        for size in sizes:
            here = folder / f"backlog-{size}"
            data_dir = here / "ledger"
            start = time.perf_counter()
            made = asyncio.run(build_backlog(data_dir, size, keypair))
            build_s = time.perf_counter() - start
            db_mb = ledger_bytes(data_dir) / 1e6
            print(f"backlog {made:>9,} credits: built in {build_s:6.1f} s (not measured), ledger {db_mb:,.0f} MB")
            repeats = SMALL_REPEATS if made <= SMALL_BACKLOG else 1
            raws: list[dict[str, Any]] = []
            gws: list[dict[str, Any]] = []
            for r in range(repeats):
                run = here / f"run{r}"
                raws.append(measure_drain(run, "raw", data_dir, keypair.public_key, token_file, key_file,
                                          args.batch_size, made))
                # The gateway's drain moves the ledger's cursor: drain a copy unless this is the last run.
                drained = data_dir if r == repeats - 1 else Path(shutil.copytree(data_dir, run / "ledger"))
                gws.append(measure_drain(run, "uplink", drained, keypair.public_key, token_file, key_file,
                                         args.batch_size, made))
            raw, gw = _summary(raws), _summary(gws)
            raw_rate, gw_rate = made / raw["elapsed_s"], made / gw["elapsed_s"]
            runs = f"median of {repeats} runs" if repeats > 1 else "1 run"
            print(f"  raw POST loop   {raw_rate:>8,.0f} credits/s  peak RSS {_mib(raw['maxrss_kb'])}  ({runs})")
            print(f"  gateway uplink  {gw_rate:>8,.0f} credits/s  peak RSS {_mib(gw['maxrss_kb'])}  ({runs}; RSS "
                  f"before draining {_mib(gw['rss_before_kb']).strip()}, ledger open {gw['open_s']:.2f} s)")
            for name, o in (("raw POST loop", raw), ("gateway uplink", gw)):
                print(f"  CPU per credit, {name:14s}: receiver {1e6 * o['receiver_cpu_s'] / made:5.1f} µs, "
                      f"sender {1e6 * o['cpu_s'] / made:5.1f} µs  (2 cores: {2e6 / made * o['elapsed_s']:.0f} µs "
                      "of CPU time per credit elapsed)")
            with contextlib.suppress(OSError):
                print(f"  load average now (1, 5, 15 min): {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
            print(f"  ratio gateway / raw: {gw_rate / raw_rate:.3f}  (target >= {DRAIN_RATIO_TARGET} at 500k)")
            print(f"  absolute: gateway {gw_rate:,.0f} credits/s, target {DRAIN_RATE_TARGET:,}/s: "
                  f"{'met' if gw_rate >= DRAIN_RATE_TARGET else 'NOT met'} ({gw_rate / DRAIN_RATE_TARGET:.2f} of it; "
                  f"the raw loop reaches {raw_rate / DRAIN_RATE_TARGET:.2f} of it on this machine now)")
            rows.append((made, raw, gw))
        if len(rows) > 1:
            (small, _, gw_small), (large, _, gw_large) = rows[0], rows[-1]
            growth_small = gw_small["maxrss_kb"] - gw_small["rss_before_kb"]
            growth_large = gw_large["maxrss_kb"] - gw_large["rss_before_kb"]
            print(f"peak RSS of the gateway drainer, {large:,} vs {small:,} credits: "
                  f"{gw_large['maxrss_kb'] / gw_small['maxrss_kb']:.3f}  "
                  f"(growth while draining: {growth_large / 1024:.1f} vs {growth_small / 1024:.1f} MiB)")
            extra_mb = (growth_large - growth_small) * 1024 / 1e6
            print(f"  drainer RSS growth {small:,} -> {large:,} credits: {extra_mb:.1f} MB (target <= "
                  f"{RSS_GROWTH_TARGET_MB:g} MB: {'met' if extra_mb <= RSS_GROWTH_TARGET_MB else 'NOT met'})")

        if args.drain_only:
            return 0
        print()
        print(f"write volume: {DAY_METERS} meters polled every {DAY_POLL_S} s for {args.day_hours:g} h of simulated "
              f"time through ReadingWriter ([ledger] defaults: commit_every_s = {COMMIT_EVERY_S:g}), after "
              f"{args.history_days:g} days of history,")
        print("              plus the uplink's ledger work for each 15-minute batch of credits "
              "(next_batch, with the last batch's settle)")
        day = asyncio.run(day_volume(folder / "day", keypair, DAY_METERS, args.day_hours, args.history_days))
        print(f"  per meter per day: {day['readings_per_meter_day']:.0f} readings, "
              f"{day['credits_per_meter_day']:.0f} credits; {day['commits_per_day']:.0f} ingest commits per day")
        print(f"  bytes passed to write()       {day['wchar'] / 1e6:8.2f} MB per meter per day "
              f"({day['wchar'] / day['readings_per_meter_day'] / 1024:.1f} KiB per reading; "
              f"uplink share {day['uplink_wchar'] / max(day['wchar'], 1):.1%})")
        print(f"  bytes sent to the block layer {day['write_bytes'] / 1e6:8.2f} MB per meter per day "
              f"(uplink share {day['uplink_write_bytes'] / max(day['write_bytes'], 1):.1%})")
        print(f"  ledger.db + WAL growth        {day['growth'] / 1e6:8.2f} MB per meter per day")
        print("  WAL frames per transaction by table/index (pages named by their owner at the end of the day):")
        for line in day["wal_lines"]:
            print("    " + line)
        with contextlib.closing(sqlite3.connect(folder / "day" / DB_FILE)) as db:
            (wire_bytes,) = db.execute("SELECT CAST(AVG(LENGTH(wire)) AS INTEGER) FROM credits").fetchone()
        raw = raw_day_volume(folder / "raw-day", DAY_METERS, args.day_hours, int(wire_bytes))
        print(f"  baseline, a plain durable store of every reading (one fsynced commit per poll cycle, "
              f"no index): {raw['write_bytes'] / 1e6:.2f} MB per meter per day to the block layer")
        print(f"  ratio gateway / baseline at the block layer: {day['write_bytes'] / max(raw['write_bytes'], 1):.3f}"
              f";  gateway / target ({SD_TARGET_MB} MB): {day['write_bytes'] / 1e6 / SD_TARGET_MB:.3f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10k credits only")
    parser.add_argument("--volume-only", action="store_true", help="only the write volume per meter per day")
    parser.add_argument("--drain-only", action="store_true", help="only the drain rate and memory")
    parser.add_argument("--sizes", default="10000,500000", help="comma-separated backlog sizes (default 10000,500000)")
    parser.add_argument("--batch-size", type=int, default=BillingApiConfig.model_fields["batch_size"].default,
                        help="credits per POST (default: the uplink's default)")
    parser.add_argument("--day-hours", type=float, default=24.0, help="simulated hours for the write volume")
    parser.add_argument("--history-days", type=float, default=7.0,
                        help="days of history in the ledger before the measured day (default 7)")
    # Internal: the drainers run as children so that their peak RSS is theirs alone.
    parser.add_argument("--child", choices=("uplink", "raw"), help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--token-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--key-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.day_hours <= 0:
        parser.error("--batch-size and --day-hours must be positive")
    return child_main(args) if args.child else parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
