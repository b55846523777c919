"""The ingest's one-step write (BEGIN to COMMIT in one call on the connection's thread) fails whole.

A statement failing after others of the same batch ran (here a trigger refusing the credit, after the
readings and intervals went in) must leave neither rows on disk nor moved state in memory, and the
next commit must get a connection outside any transaction and start the chain where it stood.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from cloud_sync.keys import Keypair
from gateway.errors import LedgerError
from gateway.intervals import Reading
from gateway.ledger.store import DB_FILE, Ledger

T0 = 1_767_225_600_000  # a quarter-hour boundary, ms
KEY = Keypair.random()


def _counts(path: Path) -> tuple[int, int, int]:
    with contextlib.closing(sqlite3.connect(path / DB_FILE)) as db:
        return tuple(db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]  # type: ignore[return-value]
                     for t in ("readings", "intervals", "credits"))


async def test_a_statement_failing_mid_batch_rolls_the_whole_batch_back(tmp_path: Path) -> None:
    ledger = await Ledger.open(tmp_path, gateway_id="gw", keypair=KEY)
    try:
        await ledger.commit_readings([Reading("m", T0, 1000), Reading("m", T0 + 60_000, 1010)], now_ms=1)
        before_state, before_id, before_rows = ledger.meter_state("m"), ledger.max_credit_id, _counts(tmp_path)
        with contextlib.closing(sqlite3.connect(tmp_path / DB_FILE)) as db:
            db.execute("CREATE TRIGGER refuse BEFORE INSERT ON credits BEGIN SELECT RAISE(ABORT, 'refused'); END")
            db.commit()
        closing = [Reading("m", T0 + k * 60_000, 1000 + 10 * k) for k in range(2, 17)]  # crosses T0 + 900 s
        with pytest.raises(LedgerError, match="refused"):
            await ledger.commit_readings(closing, now_ms=2)
        assert _counts(tmp_path) == before_rows, "the readings and interval inserted before the failure are gone"
        assert (ledger.meter_state("m"), ledger.max_credit_id) == (before_state, before_id), "memory stayed"
        with contextlib.closing(sqlite3.connect(tmp_path / DB_FILE)) as db:
            db.execute("DROP TRIGGER refuse")
            db.commit()
        result = await ledger.commit_readings(closing, now_ms=3)
        assert result.credits_created == 1
        assert ledger.meter_state("m").last_t_ms == closing[-1].t_ms
    finally:
        await ledger.close()
    with contextlib.closing(sqlite3.connect(tmp_path / DB_FILE)) as db:
        assert [s for (s,) in db.execute("SELECT seq FROM credits")] == [1], "the chain starts where it stood"
