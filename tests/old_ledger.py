"""A demo data dir as an older gateway version left it: weeks of history, an older schema.

Built through today's ledger from the simulated meters' true registers (so the
credits conserve energy exactly), then rewritten as a file made by the
migrations up to an older version, without auto-vacuum (as older versions
created ledgers). Its size is what makes the upgrade, the VACUUM that switches
auto-vacuum on, and low-disk pruning take long enough to be killed in the
middle of.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sqlite3
import time
from pathlib import Path

from gateway import identity
from gateway.intervals import Reading
from gateway.ledger.connection import migrations
from gateway.ledger.store import DB_FILE, Ledger
from gateway.sim.demo import GATEWAY_ID, MQTT_METER, DemoState, models

DAY_S = 86_400
COMMIT_EVERY = 5_000
"""Readings per commit while building: a big batch, as a gateway catching up would write."""


async def _history(data: Path, epoch: float, days: float, step_s: int) -> int:
    ledger = await Ledger.open(data, gateway_id=GATEWAY_ID, keypair=identity.load_or_create(data))
    made = 0
    try:
        truth = models(epoch)
        t = epoch
        chunk: list[Reading] = []
        while t <= epoch + days * DAY_S:
            for meter, model in truth.items():
                chunk.append(Reading(meter, int(t * 1000), model.register_wh(t),
                                     "mqtt" if meter == MQTT_METER else "modbus"))
            if len(chunk) >= COMMIT_EVERY:
                made += (await ledger.commit_readings(chunk, now_ms=int(t * 1000))).credits_created
                chunk = []
            t += step_s
        if chunk:
            made += (await ledger.commit_readings(chunk, now_ms=int(t * 1000))).credits_created
    finally:
        await ledger.close()
    return made


def rewrite_at_version(path: Path, version: int) -> None:
    """Make ``path`` a ledger of schema ``version`` holding the same rows (columns that version has)."""
    rewritten = path.with_name(path.name + ".old-version")
    with contextlib.closing(sqlite3.connect(rewritten, isolation_level=None)) as db:
        db.execute("PRAGMA journal_mode=WAL")
        for number, sql in migrations():
            if number <= version:
                db.executescript(sql)
        db.execute(f"PRAGMA user_version={version}")
        db.execute("ATTACH ? AS current", (str(path),))
        db.execute("BEGIN")
        tables = [name for (name,) in db.execute("SELECT name FROM main.sqlite_master WHERE type='table'")]
        for name in tables:
            # table_xinfo: generated columns too (schema 7's credits.hash and credits.wire, rebuilt when read).
            have = {row[1] for row in db.execute(f'PRAGMA current.table_xinfo("{name}")')}
            cols = ", ".join(f'"{row[1]}"' for row in db.execute(f'PRAGMA main.table_info("{name}")')
                             if row[1] in have)
            db.execute(f'INSERT INTO main."{name}" ({cols}) SELECT {cols} FROM current."{name}"')
        db.execute("COMMIT")
        db.execute("DETACH current")
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    rewritten.rename(path)


def build(data: Path, *, days: float, step_s: int, version: int) -> dict[str, float]:
    """History of ``days`` ending about a day ago, at schema ``version``; returns what was built."""
    began = time.monotonic()
    epoch = math.floor(time.time() / 900) * 900 - math.ceil(days + 1) * DAY_S
    data.mkdir(parents=True, exist_ok=True)
    DemoState(epoch, epoch + days * DAY_S).save(data)
    credits = asyncio.run(_history(data, epoch, days, step_s))
    rewrite_at_version(data / DB_FILE, version)
    with contextlib.closing(sqlite3.connect(data / DB_FILE)) as db:
        (readings,) = db.execute("SELECT COUNT(*) FROM readings").fetchone()
    return {"credits": credits, "readings": readings, "mb": (data / DB_FILE).stat().st_size / 1e6,
            "seconds": time.monotonic() - began}
