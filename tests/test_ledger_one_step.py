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


def _misnamed(path: Path) -> list[tuple[object, ...]]:
    """Interval rows whose credit_id is not the credit of their own (meter, channel, seq)."""
    with contextlib.closing(sqlite3.connect(path / DB_FILE)) as db:
        return db.execute(
            "SELECT i.meter, i.channel, i.credit_seq, i.credit_id FROM intervals i LEFT JOIN credits c "
            "ON c.id = i.credit_id WHERE c.id IS NULL OR c.meter <> i.meter OR c.channel <> i.channel "
            "OR c.seq <> i.credit_seq").fetchall()


async def test_every_interval_names_its_own_credit_on_every_write_path(tmp_path: Path) -> None:
    """Schema 7 finds an interval's credit by the id stored with it, taken from ``last_insert_rowid()``.

    Shown on the one-step write (many meters closing together), on the statement-by-statement path (a
    late reading, a long outage written in slices), and after AUTOINCREMENT's high-water mark ran past
    the largest id (ids once used by credits since deleted are never handed out again).
    """
    meters = [f"m{k:02d}" for k in range(12)]
    ledger = await Ledger.open(tmp_path, gateway_id="gw", keypair=KEY)
    try:
        minute = 60_000
        for step in range(31):  # two quarter-hours closed by every meter in the same batches
            await ledger.commit_readings([Reading(m, T0 + step * minute, 1000 + 7 * step + k)
                                          for k, m in enumerate(meters)], now_ms=step + 1)
        assert _misnamed(tmp_path) == []
        with contextlib.closing(sqlite3.connect(tmp_path / DB_FILE)) as db:
            db.execute("UPDATE sqlite_sequence SET seq = seq + 1000 WHERE name = 'credits'")
            db.commit()
        # A late reading of m00 between two it already has, then m01 back after a two-day outage.
        await ledger.commit_readings([Reading("m00", T0 + 30 * minute + 30_000, 1000 + 7 * 30 + 3),
                                      Reading("m00", T0 + 31 * minute, 1000 + 7 * 31 + 5)], now_ms=40)
        await ledger.commit_readings([Reading("m01", T0 + 2 * 86_400_000, 5000)], now_ms=41)
        await ledger.commit_readings([Reading(m, T0 + 2 * 86_400_000 + 16 * minute, 6000)
                                      for m in meters], now_ms=42)
    finally:
        await ledger.close()
    assert _misnamed(tmp_path) == []
    with contextlib.closing(sqlite3.connect(tmp_path / DB_FILE)) as db:
        (count,) = db.execute("SELECT COUNT(*) FROM intervals WHERE credit_id > (SELECT MIN(id) FROM credits) + 1000"
                              ).fetchone()
    assert count > 2 * 96, "the outage's intervals were written after the high-water mark"
