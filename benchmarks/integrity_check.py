"""What the ledger's integrity check at start costs on a big ledger, against reading the file.

One command: ``.venv/bin/python benchmarks/integrity_check.py`` (``--help`` for options). The first
run builds a ledger of 200 meters x 35 days of 60-s polls (10 million raw readings, 672 000
intervals and credits; 1.2 GB, about two minutes) in ``--dir`` and keeps it there for the next
runs; it is never committed (delete it with ``rm -r DIR``).

The file is built by the real schema (``Ledger.open`` creates it and runs the migrations) and
filled with plain SQL in the order the daemon writes (time-major, a transaction per hour), so its
b-trees are shaped like a real one's. Credits carry realistic wire JSON (the size of a signed
credit; the signature bytes are one real signature reused, never verified here).

Measured, each warm (file in the page cache) and cold (this file's pages dropped from the cache
with ``posix_fadvise(DONTNEED)``, so a run costs what a first read after boot costs):

* baseline: reading the whole file sequentially (1 MiB blocks), in the same run;
* ``PRAGMA quick_check`` over the whole file: what the check at every start would cost if it
  read everything;
* ``Ledger.open``: what the gateway really does at start (the bounded check, see
  :mod:`gateway.ledger.integrity`), and the full check it runs in the background afterwards.

Figures are printed as seconds and as ratios against the baseline; an SD card reads at about
20-90 MB/s, so the seconds for a Raspberry Pi are about the file size divided by that.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sqlite3
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # works without the editable install too

from stellar_sdk import Keypair

from benchmarks._common import GATEWAY_ID, T0_S, meter_id, register_wh
from cloud_sync.credit import CreditBody, canonical_bytes, sign
from gateway.ledger.credit_rows import CREDIT_COLUMNS, credit_columns
from gateway.ledger.integrity import full_check
from gateway.ledger.store import DB_FILE, Ledger
from gateway.logs import configure as configure_logs

SPREAD_MS = 50
"""Meter i is read i x 50 ms after its poll slot, as a bus works through its line."""
KEY_FILE = "bench.key"


def _credit_rows(template: dict[str, object], signature: str, meter: str, seq: int, start: int, wh: int,
                 reg_start: int, prev: str, created_ms: int) -> tuple[str, str]:
    body = dict(template, meter=meter, seq=seq, start=start, end=start + 900, wh=wh, register_start_wh=reg_start,
                register_end_wh=reg_start + wh, prev_hash=prev, created_ms=created_ms)
    digest = hashlib.sha256(canonical_bytes(body)).hexdigest()
    wire = json.dumps({"credit": body, "hash": digest, "signature": signature}, separators=(",", ":"))
    return digest, wire


def build(data_dir: Path, meters: int, days: int, poll_s: int) -> None:
    """Fill a fresh ledger in ``data_dir`` the way the daemon would have over ``days``."""
    keypair = Keypair.random()
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / KEY_FILE).write_text(keypair.secret + "\n")

    async def create() -> None:
        await (await Ledger.open(data_dir, gateway_id=GATEWAY_ID, keypair=keypair)).close()

    asyncio.run(create())
    template = sign(CreditBody(GATEWAY_ID, keypair.public_key, meter_id(0), 1, T0_S, T0_S + 900, 0, "A", 0, 0,
                               "0" * 64, T0_S * 1000), keypair)
    fields = dict(template.fields)
    db = sqlite3.connect(data_dir / DB_FILE, isolation_level=None)
    db.execute("PRAGMA synchronous=OFF")  # building only; the daemon writes with synchronous=FULL
    tips = {meter_id(i): (0, "0" * 64) for i in range(meters)}
    cycles_per_hour = 3600 // poll_s
    started = time.monotonic()
    credit_id = 0
    for hour in range(days * 24):
        readings = []
        for c in range(cycles_per_hour):
            base = (T0_S + hour * 3600 + c * poll_s) * 1000
            for i in range(meters):
                t_ms = base + i * SPREAD_MS
                wh = register_wh(i, t_ms)
                readings.append((meter_id(i), t_ms, wh, "modbus", "accepted", wh))
        intervals, credits = [], []
        for q in range(4):
            start = T0_S + hour * 3600 + q * 900
            for i in range(meters):
                meter = meter_id(i)
                a, b = register_wh(i, start * 1000), register_wh(i, (start + 900) * 1000)
                seq, prev = tips[meter]
                digest, wire = _credit_rows(fields, template.signature, meter, seq + 1, start, b - a, a, prev,
                                            (start + 930) * 1000)
                tips[meter] = (seq + 1, digest)
                credit_id += 1
                intervals.append((meter, start, start + 900, b - a, "A", a, b, seq + 1, None, None, "A", "A",
                                  credit_id))
                credits.append((credit_id, *credit_columns(meter, "import", seq + 1, start, b - a, digest,
                                                           (start + 930) * 1000, wire)))
        db.execute("BEGIN")
        db.executemany("INSERT INTO readings (meter, t_ms, register_wh, source, disposition, virtual_wh) "
                       "VALUES (?,?,?,?,?,?)", readings)
        db.executemany(f"INSERT INTO credits (id, {', '.join(CREDIT_COLUMNS)}) "  # schema 7: compact rows
                       f"VALUES (?{',?' * len(CREDIT_COLUMNS)})", credits)
        db.executemany('INSERT INTO intervals (meter, start, "end", wh, quality, register_start_wh, '
                       "register_end_wh, credit_seq, method, reason, start_grade, end_grade, credit_id) "
                       "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", intervals)
        db.execute("COMMIT")
        if hour % 24 == 23:
            print(f"  built day {hour // 24 + 1}/{days} ({time.monotonic() - started:.0f} s)", flush=True)
    end_ms = (T0_S + days * 86_400) * 1000
    db.execute("BEGIN")
    for i in range(meters):
        meter = meter_id(i)
        last_t = end_ms - poll_s * 1000 + i * SPREAD_MS
        seq, digest = tips[meter]
        wh = register_wh(i, last_t)
        db.execute("INSERT INTO meters (meter, last_t_ms, last_wh, anchor_s, anchor_wh, anchor_quality, last_seq, "
                   "last_hash, last_raw_wh) VALUES (?,?,?,?,?,'A',?,?,?)",
                   (meter, last_t, wh, end_ms // 1000 - 900, register_wh(i, end_ms - 900_000), seq, digest, wh))
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def drop_cache(path: Path) -> None:
    """Evict this one file's pages from the page cache (nothing else on the machine is touched)."""
    for file in (path, path.with_name(path.name + "-wal")):
        if file.exists():
            fd = os.open(file, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def sequential_read(path: Path) -> float:
    started = time.perf_counter()
    with open(path, "rb", buffering=0) as fh:
        while fh.read(1 << 20):
            pass
    return time.perf_counter() - started


def timed_full_check(path: Path) -> tuple[float, list[str]]:
    started = time.perf_counter()
    verdict = asyncio.run(full_check(path))
    return time.perf_counter() - started, verdict


def timed_open(data_dir: Path) -> float:
    keypair = Keypair.from_secret((data_dir / KEY_FILE).read_text().strip())

    async def run() -> float:
        started = time.perf_counter()
        ledger = await Ledger.open(data_dir, gateway_id=GATEWAY_ID, keypair=keypair)
        took = time.perf_counter() - started
        await ledger.close()
        return took

    return asyncio.run(run())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp/meter-gateway-integrity-bench"),
                        help="where the ledger is built and kept between runs")
    parser.add_argument("--meters", type=int, default=200)
    parser.add_argument("--days", type=int, default=35)
    parser.add_argument("--poll-s", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3, help="repetitions per figure (medians are printed)")
    args = parser.parse_args()
    configure_logs("warning", "console")
    path = args.dir / DB_FILE
    if not path.exists():
        print(f"building {args.meters} meters x {args.days} days of {args.poll_s}-s polls in {args.dir} ...")
        build(args.dir, args.meters, args.days, args.poll_s)
    size_mb = path.stat().st_size / 1e6
    print(f"ledger: {path} {size_mb:.0f} MB")

    def median_of(run: object, cold: bool) -> float:
        values = []
        for _ in range(args.rounds):
            if cold:
                drop_cache(path)
            else:
                sequential_read(path)  # warm it
            values.append(run())  # type: ignore[operator]
        return sorted(values)[len(values) // 2]

    for cold in (False, True):
        label = "cold" if cold else "warm"
        base = median_of(lambda: sequential_read(path), cold)
        check = median_of(lambda: timed_full_check(path)[0], cold)
        start = median_of(lambda: timed_open(args.dir), cold)
        print(f"{label}: sequential read {base:.2f} s ({size_mb / base:.0f} MB/s) | full quick_check "
              f"{check:.2f} s = {check / base:.2f} x read | check at start (Ledger.open) {start * 1000:.0f} ms "
              f"= {start / base:.3f} x read")
    verdict = timed_full_check(path)[1]
    print(f"full check verdict: {verdict[:3]}")
    for mb_s in (20, 90):
        print(f"SD card at {mb_s} MB/s: reading the whole file takes about {size_mb / mb_s:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
