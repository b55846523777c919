"""Readings per second through reading -> interval -> credit -> durable commit, against raw SQLite.

One command: ``.venv/bin/python benchmarks/pipeline.py`` (``--help`` for options; about a minute)

Measured: the gateway's ingest path, ``Ledger.commit_readings``, fed with 200 meters polled every
60 s (each meter read 50 ms after the previous one, as a bus scheduler works through a line), in
batches of up to 1000 readings per commit, like ``ReadingWriter`` with ``max_batch=1000``. One call
runs the interval engine on every reading, signs (ed25519) and hash-chains a credit for every closed
15-minute interval, and commits readings, intervals, credits and engine state in one fsynced
transaction (WAL, ``synchronous=FULL``).

Baseline, measured in the same run: a plain ``sqlite3`` loop inserting the same readings, as the
same five columns, into a plain table with the same PRAGMAs (WAL, ``synchronous=FULL``) and the
same number of rows per fsynced commit. The ratio is pipeline rate / baseline rate; rounds
alternate baseline and pipeline (fresh files each time) and medians are reported, because machines
are noisy and absolute rates are not stable.

For context, the raw loop is also run against the ledger's own readings table (its DDL and
indexes read from a fresh ledger), which separates index maintenance from the rest. Also
printed: the CPU cost of the stages before the commit (the ledger's engine pass; credits signed
and rows built), timed separately by running the ledger's own stages on the same batches without
the write. The key is the gateway's own (``cloud_sync.keys.Keypair``, what the daemon signs with).
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # works without the editable install too

from benchmarks._common import GATEWAY_ID, median, polled_readings
from cloud_sync.credit import DOMAIN
from cloud_sync.ed25519 import ed25519_sign
from cloud_sync.keys import Keypair
from gateway.credits import Tip, credit_for_interval
from gateway.intervals import Interval, MeterState, Quality, Reading
from gateway.ledger.ingest import IngestBatch
from gateway.ledger.store import DB_FILE, Ledger, SeriesKey
from gateway.logs import configure as configure_logs

METERS = 200
POLL_S = 60
SPREAD_MS = 50
BATCH = 1000
"""ReadingWriter's default max_batch."""


def batches(readings: list[Reading], size: int) -> list[list[Reading]]:
    return [readings[i:i + size] for i in range(0, len(readings), size)]


PLAIN_TABLE = ["CREATE TABLE readings (meter TEXT NOT NULL, t_ms INTEGER NOT NULL, register_wh INTEGER NOT NULL, "
               "source TEXT NOT NULL, disposition TEXT NOT NULL)"]
PLAIN_COLUMNS = ["meter", "t_ms", "register_wh", "source", "disposition"]


def raw_sqlite(data_dir: Path, chunks: list[list[Reading]], schema: list[str], virtual_wh: bool) -> float:
    """The baseline: seconds to insert every reading with one fsynced commit per chunk.

    ``virtual_wh``: the table has the ledger's ``virtual_wh`` column too (filled like an accepted reading's).
    """
    columns = [*PLAIN_COLUMNS, "virtual_wh"] if virtual_wh else PLAIN_COLUMNS
    db = sqlite3.connect(data_dir / "raw.db", isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        for statement in schema:
            db.execute(statement)
        sql = f"INSERT INTO readings ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"
        start = time.perf_counter()
        for chunk in chunks:
            db.execute("BEGIN IMMEDIATE")
            if virtual_wh:
                db.executemany(sql, [(r.meter, r.t_ms, r.register_wh, r.source, "accepted", r.register_wh)
                                     for r in chunk])
            else:
                db.executemany(sql, [(r.meter, r.t_ms, r.register_wh, r.source, "accepted") for r in chunk])
            db.execute("COMMIT")
        return time.perf_counter() - start
    finally:
        db.close()


async def ledger_readings_schema(data_dir: Path, keypair: Keypair) -> tuple[list[str], bool]:
    """The ledger's own readings table and indexes (DDL), and whether it has a ``virtual_wh`` column."""
    ledger = await Ledger.open(data_dir, gateway_id=GATEWAY_ID, keypair=keypair)
    await ledger.close()
    db = sqlite3.connect(data_dir / DB_FILE)
    try:
        ddl = [str(sql) for (sql,) in db.execute(
            "SELECT sql FROM sqlite_master WHERE tbl_name='readings' AND sql IS NOT NULL ORDER BY type DESC")]
        names = [str(row[1]) for row in db.execute("PRAGMA table_info(readings)")]
    finally:
        db.close()
    return ddl, "virtual_wh" in names


async def pipeline(data_dir: Path, chunks: list[list[Reading]], keypair: Keypair) -> tuple[float, int]:
    """Seconds to commit every chunk through the ledger, and the credits created."""
    ledger = await Ledger.open(data_dir, gateway_id=GATEWAY_ID, keypair=keypair)
    try:
        credits = 0
        start = time.perf_counter()
        for chunk in chunks:
            now_ms = chunk[-1].t_ms + 1000
            credits += (await ledger.commit_readings(chunk, now_ms=now_ms)).credits_created
        return time.perf_counter() - start, credits
    finally:
        await ledger.close()


async def cpu_stages(data_dir: Path, chunks: list[list[Reading]], keypair: Keypair) -> dict[str, float]:
    """Seconds spent in the pure stages commit_readings runs before its one write to SQLite.

    The ledger's own code on the same batches (:meth:`IngestBatch.plan`: the interval engine with its
    fast path; :meth:`IngestBatch.prepare_one_step`: credits signed, rows built), without the write.
    Also ed25519 alone, on the canonical bytes of as many credits.
    """
    ledger = await Ledger.open(data_dir, gateway_id=GATEWAY_ID, keypair=keypair)
    try:
        states: dict[SeriesKey, MeterState] = {}
        tips: dict[SeriesKey, Tip] = {}
        engine_s = credit_s = 0.0
        credits = 0
        for chunk in chunks:
            batch = IngestBatch(ledger, states, tips, chunk[-1].t_ms + 1000)
            start = time.perf_counter()
            batch.plan(chunk)
            planned = time.perf_counter()
            await batch.prepare_one_step()
            engine_s += planned - start
            credit_s += time.perf_counter() - planned
            credits += batch.result.intervals_closed
            states, tips = batch.states, batch.tips
    finally:
        await ledger.close()

    interval = Interval("m0000", 0, 900, 10, Quality.ACTUAL, 1000, 1010)
    canonical = credit_for_interval(interval, Tip(), gateway_id=GATEWAY_ID, keypair=keypair,
                                    created_ms=1)[0].canonical
    secret = keypair.raw_secret_key() + keypair.raw_public_key()
    start = time.perf_counter()
    for _ in range(credits):
        ed25519_sign(secret, DOMAIN + canonical)  # what the ledger's signer calls
    ed25519_s = time.perf_counter() - start
    return {"engine_s": engine_s, "credit_s": credit_s, "ed25519_s": ed25519_s, "credits": credits}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=24.0, help="hours of meter time per round (default 24)")
    parser.add_argument("--rounds", type=int, default=3, help="baseline/pipeline pairs (default 3)")
    parser.add_argument("--batch", type=int, default=BATCH, help=f"readings per commit (default {BATCH})")
    args = parser.parse_args(argv)
    if args.hours <= 0 or args.rounds < 1 or args.batch < 1:
        parser.error("--hours, --rounds and --batch must be positive")

    configure_logs("warning")
    keypair = Keypair.random()
    readings = list(polled_readings(METERS, POLL_S, round(args.hours * 3600 / POLL_S), spread_ms=SPREAD_MS))
    chunks = batches(readings, args.batch)
    n = len(readings)
    print("pipeline: readings/s through Ledger.commit_readings (interval engine, ed25519-signed chained credits,")
    print("          one fsynced WAL transaction per batch) vs a raw sqlite3 insert loop, same PRAGMAs")
    print(f"workload: {METERS} meters x {POLL_S} s polls x {args.hours:g} h = {n} readings, "
          f"{len(chunks)} commits of <= {args.batch} readings; WAL, synchronous=FULL; {args.rounds} rounds")

    raw_rates: list[float] = []
    indexed_rates: list[float] = []
    pipe_rates: list[float] = []
    credits = 0
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        ledger_schema, ledger_virtual = asyncio.run(ledger_readings_schema(Path(tmp) / "schema", keypair))
        for r in range(args.rounds):
            raw_dir, indexed_dir, pipe_dir = Path(tmp) / f"raw{r}", Path(tmp) / f"indexed{r}", Path(tmp) / f"pipe{r}"
            raw_dir.mkdir()
            indexed_dir.mkdir()
            raw_s = raw_sqlite(raw_dir, chunks, PLAIN_TABLE, virtual_wh=False)
            if ledger_schema:
                try:
                    indexed_rates.append(n / raw_sqlite(indexed_dir, chunks, ledger_schema, virtual_wh=ledger_virtual))
                except sqlite3.Error as exc:  # a schema this loop cannot fill: skip the context line
                    print(f"  (raw loop into the ledger's readings table skipped: {exc})")
                    ledger_schema = []
            pipe_s, credits = asyncio.run(pipeline(pipe_dir, chunks, keypair))
            raw_rates.append(n / raw_s)
            pipe_rates.append(n / pipe_s)
            print(f"  round {r + 1}: raw {n / raw_s:>9,.0f} readings/s   pipeline {n / pipe_s:>9,.0f} readings/s"
                  f"   ratio {raw_s / pipe_s:.3f}")
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        cpu = asyncio.run(cpu_stages(Path(tmp), chunks, keypair))

    raw_rate, pipe_rate = median(raw_rates), median(pipe_rates)
    per_reading_us = 1e6 / pipe_rate
    engine_us = cpu["engine_s"] / n * 1e6
    credit_us = cpu["credit_s"] / n * 1e6
    rest_us = per_reading_us - engine_us - credit_us
    print(f"credits created per round: {credits} ({n / max(credits, 1):.1f} readings per credit)")
    print(f"raw sqlite3 insert loop  : {raw_rate:>9,.0f} readings/s  (median)")
    print(f"gateway pipeline         : {pipe_rate:>9,.0f} readings/s  (median)")
    print(f"ratio pipeline / raw     : {pipe_rate / raw_rate:.3f}  (median of per-round ratios "
          f"{median([p / r for p, r in zip(pipe_rates, raw_rates, strict=True)]):.3f})")
    print(f"where a reading's {per_reading_us:.1f} us go (pipeline median):")
    print(f"  interval engine (IngestBatch.plan)   {engine_us:6.2f} us  {engine_us / per_reading_us:6.1%}")
    print(f"  credits signed, rows built           {credit_us:6.2f} us  {credit_us / per_reading_us:6.1%}"
          f"   ({cpu['credit_s'] / max(cpu['credits'], 1) * 1e6:.1f} us per credit, of which ed25519 "
          f"{cpu['ed25519_s'] / max(cpu['credits'], 1) * 1e6:.1f} us)")
    print(f"  SQLite write (one call: rows, fsync) {rest_us:6.2f} us  {rest_us / per_reading_us:6.1%}"
          f"   (raw loop: {1e6 / raw_rate:.2f} us per reading)")
    if indexed_rates:
        indexed_rate = median(indexed_rates)
        print(f"context: the raw loop into the ledger's own readings table with its {len(ledger_schema) - 1} "
              f"index(es) runs at {indexed_rate:,.0f} readings/s ({1e6 / indexed_rate:.2f} us per reading)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
