"""The receiver's schema migrations: a file made by the receiver before versioned migrations opens and
keeps its credits; a database migrated by a newer receiver is refused, not misread."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import asyncpg
import pytest
from receiver_kit import GW, KEY, batch_bytes, honest_chain, resign

from cloud_sync.receiver import ReceiverConfigError, ReceiverStore, open_store
from cloud_sync.receiver.migrations import newest
from cloud_sync.receiver.pg_sandbox import PgSandbox

OLD_SCHEMA = """
CREATE TABLE credits (gateway TEXT NOT NULL, meter TEXT NOT NULL, seq INTEGER NOT NULL, hash TEXT NOT NULL,
    wh INTEGER NOT NULL, start INTEGER NOT NULL, wire TEXT NOT NULL, received_ms INTEGER NOT NULL,
    PRIMARY KEY (gateway, meter, seq));
CREATE TABLE batches (gateway TEXT NOT NULL, batch_key TEXT NOT NULL, request_sha256 TEXT NOT NULL,
    response TEXT NOT NULL, received_ms INTEGER NOT NULL, PRIMARY KEY (gateway, batch_key));
CREATE INDEX credits_by_start ON credits (gateway, meter, start);
"""


def test_a_file_from_before_versioned_migrations_keeps_its_credits_and_their_kinds(tmp_path: Path) -> None:
    chain = honest_chain(2)
    correction = resign(chain[0], kind="correction", seq=3, prev_hash=chain[1]["hash"], corrects=1, wh=-10,
                        register_start_wh=50_000, register_end_wh=50_090)
    with sqlite3.connect(tmp_path / "receiver.db") as old:
        old.executescript(OLD_SCHEMA)
        for item in [*chain, correction]:
            c = item["credit"]
            old.execute("INSERT INTO credits VALUES (?,?,?,?,?,?,?,?)",
                        (GW, c["meter"], c["seq"], item["hash"], c["wh"], c["start"], json.dumps(item), 1))
    store = ReceiverStore(tmp_path / "receiver.db", {GW: KEY.public_key})
    try:
        assert [c["credit"]["seq"] for c in store.credits(GW, "m1")] == [1, 2, 3]
        # The history rule reads the migrated kinds: a second correction must add to the first.
        again = resign(chain[0], kind="correction", seq=4, prev_hash=correction["hash"], corrects=1, wh=25,
                       register_start_wh=50_000, register_end_wh=50_115)
        assert store.ingest(GW, "k", batch_bytes([again], "k"), [again])["accepted"] == 1
    finally:
        store.close()
    with sqlite3.connect(tmp_path / "receiver.db") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == newest("sqlite")
        assert db.execute("SELECT kind FROM credits WHERE seq = 3").fetchone()[0] == "correction"


async def test_a_postgresql_database_of_a_newer_receiver_is_refused(pg_server: PgSandbox) -> None:
    url = pg_server.create_database()
    store = await open_store(url)
    await store.close()
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT MAX(version) FROM receiver_schema") == newest("pg")
        await conn.execute("INSERT INTO receiver_schema VALUES (99, 'from_the_future', 0)")
    finally:
        await conn.close()
    with pytest.raises(ReceiverConfigError, match="upgrade this receiver"):
        await open_store(url)


def test_a_sqlite_file_of_a_newer_receiver_is_refused(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "receiver.db") as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(ReceiverConfigError, match="upgrade this receiver"):
        ReceiverStore(tmp_path / "receiver.db")


def test_the_quarter_hour_index_is_keyed_by_time_and_answers_the_history_rule(tmp_path: Path) -> None:
    """Migration 0004: (gateway, start, meter, channel), so a batch's new credits share a few leaves of it
    (with the meter first, each meter of a batch dirtied a leaf of its own at every commit)."""
    with sqlite3.connect(tmp_path / "receiver.db") as old:
        old.executescript(OLD_SCHEMA)
    ReceiverStore(tmp_path / "receiver.db", {GW: KEY.public_key}).close()
    with sqlite3.connect(tmp_path / "receiver.db") as db:
        columns = [row[2] for row in db.execute("PRAGMA index_info(credits_by_start)")]
        assert columns == ["gateway", "start", "meter", "channel"]
        plan = " ".join(row[3] for row in db.execute(
            "EXPLAIN QUERY PLAN SELECT seq FROM credits WHERE gateway = ? AND meter = ? AND channel = ? "
            "AND start = ?", (GW, "m1", "import", 0)))
        assert "credits_by_start" in plan, plan
