"""Migrations from an older ledger keep its data and continue its chains."""

from __future__ import annotations

import contextlib
import sqlite3
from importlib import resources
from pathlib import Path

from stellar_sdk import Keypair

from gateway.intervals import Reading
from gateway.ledger.store import DB_FILE, SCHEMA_VERSION, Ledger

T0 = 1_767_225_600_000


def _v1_snapshot(path: Path) -> None:
    """A ledger as version 1 left it: schema 1, one meter mid-interval, two credits."""
    sql = (resources.files("gateway.ledger") / "migrations" / "0001_initial.sql").read_text()
    with contextlib.closing(sqlite3.connect(path / DB_FILE)) as db:
        db.executescript(sql)
        db.execute("PRAGMA user_version=1")
        db.execute("INSERT INTO meters (meter, last_t_ms, last_wh, anchor_s, anchor_wh, anchor_quality, last_seq, "
                   "last_hash) VALUES ('m', ?, 1210, ?, 1210, 'A', 2, ?)", (T0 + 1_800_000, (T0 + 1_800_000) // 1000,
                                                                           "ab" * 32))
        db.execute("INSERT INTO readings VALUES ('m', ?, 1210, 'modbus', 'accepted')", (T0 + 1_800_000,))
        db.commit()


async def test_v1_ledger_migrates_and_continues(tmp_path: Path) -> None:
    _v1_snapshot(tmp_path)
    ledger = await Ledger.open(tmp_path, gateway_id="gw", keypair=Keypair.random())
    try:
        state = ledger.meter_state("m")
        assert (state.last_wh, state.last_raw_wh, state.anchor_wh) == (1210, 1210, 1210)
        result = await ledger.commit_readings([Reading("m", T0 + 2_700_000, 1300)], now_ms=1)
        assert [(i.start, i.wh) for i in result.intervals] == [((T0 + 1_800_000) // 1000, 90)]
    finally:
        await ledger.close()
    with contextlib.closing(sqlite3.connect(tmp_path / DB_FILE)) as db:
        (version,) = db.execute("PRAGMA user_version").fetchone()
        (virtual,) = db.execute("SELECT virtual_wh FROM readings WHERE t_ms=?", (T0 + 1_800_000,)).fetchone()
        seq, prev = db.execute("SELECT seq, json_extract(wire, '$.credit.prev_hash') FROM credits").fetchone()
    assert version == SCHEMA_VERSION >= 5  # 5: the Stellar uplink's tables
    assert virtual == 1210, "old readings can still anchor late ones"
    assert (seq, prev) == (3, "ab" * 32), "the chain continues from the old tip"
