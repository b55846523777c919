"""The write connection across cancellation and close: no orphaned transaction, no failure at shutdown.

At shutdown the daemon cancels its tasks; one that was just starting a write (an uplink settling a
batch, the page pulling credits) used to leave BEGIN queued on the connection's thread after its
ROLLBACK had been skipped: the connection stayed inside a transaction nobody owned, every later
BEGIN failed, and the checkpoint at close failed with "database table is locked" (the demo's
SIGTERM run exited 1 with that, once in a full run).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import pytest
from stellar_sdk import Keypair

from gateway.intervals import Reading
from gateway.ledger.store import DB_FILE, Ledger

T0 = 1_767_225_600_000
KEY = Keypair.random()


async def _ledger(path: Path) -> Ledger:
    return await Ledger.open(path, gateway_id="gw", keypair=KEY)


@pytest.mark.parametrize("steps", range(8))
async def test_a_write_cancelled_at_any_point_leaves_no_transaction_behind(tmp_path: Path, steps: int) -> None:
    ledger = await _ledger(tmp_path)
    task = asyncio.create_task(ledger.record_event("probe", t_ms=1, detail="cancelled"))
    for _ in range(steps):  # every point of the write: before BEGIN ran, in it, at COMMIT, after
        await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    # The next writer must find a connection outside any transaction...
    await ledger.record_event("after", t_ms=2)
    await ledger.commit_readings([Reading("m", T0, 1000), Reading("m", T0 + 900_000, 1100)], now_ms=3)
    # ... and the checkpoint at close must run (it used to raise "database table is locked").
    await ledger.close()
    wal = tmp_path / (DB_FILE + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0, "the close checkpointed the WAL"
    with contextlib.closing(sqlite3.connect(tmp_path / DB_FILE)) as db:
        kinds = [k for (k,) in db.execute("SELECT kind FROM events ORDER BY id")]
        (credits,) = db.execute("SELECT COUNT(*) FROM credits").fetchone()
    assert kinds[-1] == "after"
    assert set(kinds) <= {"probe", "after"}
    assert credits == 1
