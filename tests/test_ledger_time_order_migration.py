"""Schema 7: the billing tables keyed by time first, migrated from schema 6 with nothing lost or renumbered.

A ledger is built through the ledger (two meters, import and export, a revision and a correction
from late readings), its credits delivered to a real receiver store, and the file rewritten as
the migrations up to 6 made it (``tests/old_ledger.py``). Today's gateway opens it: every credit
keeps its id, seq, hash and wire bytes, every interval its values, AUTOINCREMENT its mark; the
next credits (new intervals, a correction of a delivered one, a revision of an unsent one) are
accepted by the same receiver as the next links of the same chains. Then what a commit writes
is counted in the WAL: a quarter-hour of many meters lands in a page or two of each b-tree,
not one page per meter.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import struct
from pathlib import Path
from typing import Any

import pytest
from stellar_sdk import Keypair

from cloud_sync.receiver import CreditStore, open_store
from gateway.channels import Channel
from gateway.errors import LedgerIntegrityError
from gateway.intervals import Reading
from gateway.ledger import integrity
from gateway.ledger.store import DB_FILE, SCHEMA_VERSION, Ledger
from tests.old_ledger import rewrite_at_version

KEY = Keypair.from_raw_ed25519_seed(bytes(range(11, 43)))
GW = "gw-time"
T0 = 1_767_225_600_000
METERS = ("m1", "m2")
OUTAGE_MIN = range(101, 130)
"""No readings then: estimated boundaries, which late readings later revise."""


def _readings(start_min: int, end_min: int) -> list[Reading]:
    out = []
    for minute in range(start_min, end_min):
        if minute in OUTAGE_MIN:
            continue
        for k, meter in enumerate(METERS):
            out.append(Reading(meter, T0 + minute * 60_000, 10_000 * (k + 1) + 7 * minute))
            out.append(Reading(meter, T0 + minute * 60_000, 500 * (k + 1) + 2 * minute, channel=Channel.EXPORT))
    return out


def _snapshot(path: Path) -> dict[str, Any]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return {
            "credits": db.execute("SELECT id, meter, channel, seq, start, wh, hash, wire, created_ms FROM credits "
                                  "ORDER BY id").fetchall(),
            "intervals": db.execute('SELECT meter, channel, start, "end", wh, quality, register_start_wh, '
                                    "register_end_wh, credit_seq, method, reason, start_grade, end_grade "
                                    "FROM intervals ORDER BY meter, channel, start").fetchall(),
            "meters": db.execute("SELECT meter, channel, last_seq, last_hash FROM meters ORDER BY meter, channel")
                        .fetchall(),
            "sequence": db.execute("SELECT seq FROM sqlite_sequence WHERE name='credits'").fetchone()[0],
            "keys": dict(db.execute("SELECT name, sql FROM sqlite_schema WHERE tbl_name IN ('credits', 'intervals')")),
        }


async def _deliver(store: CreditStore, wires: list[str], key: str) -> list[str]:
    credits = [json.loads(w) for w in wires]
    raw = json.dumps({"gateway": GW, "batch": key, "credits": credits}).encode()
    answer = await store.ingest(GW, key, raw, credits)
    return [str(r["status"]) for r in answer["results"]]


async def test_a_schema_6_ledger_migrates_keeping_every_credit_and_its_chains_go_on(tmp_path: Path) -> None:
    data = tmp_path / "gw"
    ledger = await Ledger.open(data, gateway_id=GW, keypair=KEY)
    try:
        for a in range(0, 180, 45):
            await ledger.commit_readings(_readings(a, a + 45), now_ms=T0 + a * 60_000)
        await ledger.register_uplink("billing_api")
        delivered = await ledger.next_batch("billing_api", 10_000, now_ms=T0 + 180 * 60_000)
        assert delivered is not None
        await ledger.settle_batch(delivered, now_ms=T0 + 180 * 60_000)
    finally:
        await ledger.close()
    rewrite_at_version(data / DB_FILE, 6)
    old = _snapshot(data / DB_FILE)
    assert "UNIQUE (meter, channel, seq)" in old["keys"]["credits"], "the schema-6 layout, keyed by series"
    assert "PRIMARY KEY (meter, channel, start)" in old["keys"]["intervals"]

    store = await open_store(str(tmp_path / "receiver.db"))
    try:
        await store.ensure_enrolled(GW, KEY.public_key, 0)
        assert set(await _deliver(store, delivered.wire, delivered.batch_key)) == {"accepted"}
        ledger = await Ledger.open(data, gateway_id=GW, keypair=KEY)
        try:
            migrated = _snapshot(data / DB_FILE)
            # On: new intervals, a late reading inside the delivered outage (corrections), then,
            # before anything is sent, a late reading inside the new unsent stretch (revised in place).
            late_sent = Reading("m1", T0 + 112 * 60_000, 10_000 + 7 * 112 + 50)
            first = await ledger.commit_readings([*_readings(180, 200), *_readings(215, 240), late_sent],
                                                 now_ms=T0 + 240 * 60_000)
            late_unsent = Reading("m2", T0 + 207 * 60_000, 20_000 + 7 * 207 + 3)
            second = await ledger.commit_readings([late_unsent, *_readings(240, 250)], now_ms=T0 + 250 * 60_000)
            batch = await ledger.next_batch("billing_api", 10_000, now_ms=T0 + 250 * 60_000)
            assert batch is not None
            statuses = await _deliver(store, batch.wire, batch.batch_key)
            shown = await ledger.stored_intervals("m1", 0, 2**40)
            shown_export = await ledger.stored_intervals("m2", T0 // 1000 + 3_600, T0 // 1000 + 7_201,
                                                         channel=Channel.EXPORT)
            newest = await ledger.last_intervals()
        finally:
            await ledger.close()
    finally:
        await store.close()

    assert first.corrections >= 1, "a late reading inside the delivered stretch: corrections"
    assert second.revised >= 1, "a late reading inside the unsent stretch: revised in place"
    assert set(statuses) == {"accepted"}, "corrections, revisions and new credits continue the migrated chains"
    assert migrated["credits"] == old["credits"], "ids, seqs, hashes and wire bytes kept"
    assert migrated["intervals"] == old["intervals"]
    assert migrated["meters"] == old["meters"]
    assert migrated["sequence"] == old["sequence"]
    assert "PRIMARY KEY (start, meter, channel)" in migrated["keys"]["intervals"]
    assert "UNIQUE" not in migrated["keys"]["credits"]
    assert "credit_id" in migrated["keys"]["intervals"]
    with contextlib.closing(sqlite3.connect(data / DB_FILE)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        m1 = db.execute('SELECT meter, start, "end", wh, quality, method, reason FROM intervals '
                        "WHERE meter='m1' AND channel='import' ORDER BY start").fetchall()
        m2_export = db.execute("SELECT start FROM intervals WHERE meter='m2' AND channel='export' "
                               "AND start >= ? AND start < ? ORDER BY start",
                               (T0 // 1000 + 3_600, T0 // 1000 + 7_201)).fetchall()
        last = db.execute("SELECT meter, MAX(start) FROM intervals WHERE channel='import' GROUP BY meter").fetchall()
    assert [(i.meter, i.start, i.end, i.wh, i.quality, i.method, i.reason) for i in shown] == m1, \
        "a series read by grid probes is the series a plain scan finds"
    assert [i.start for i in shown_export] == [s for (s,) in m2_export]
    assert {m: s for m, (s, _, _) in newest.items()} == dict(last)


async def test_a_credit_cannot_reuse_a_seq_at_or_before_its_series_tip(tmp_path: Path) -> None:
    ledger = await Ledger.open(tmp_path, gateway_id=GW, keypair=KEY)
    try:
        await ledger.commit_readings(_readings(0, 40), now_ms=T0 + 40 * 60_000)
    finally:
        await ledger.close()
    with contextlib.closing(sqlite3.connect(tmp_path / DB_FILE)) as db:
        (tip,) = db.execute("SELECT last_seq FROM meters WHERE meter='m1' AND channel='import'").fetchone()
        assert tip >= 2
        with pytest.raises(sqlite3.IntegrityError, match="chain tip"):
            db.execute("INSERT INTO credits (meter, channel, seq, start, wh, hash_b, wire_text, created_ms) "
                       "VALUES ('m1', 'import', ?, 0, 0, x'00', '{}', 0)", (tip,))


def _wal_pages_of_last_commit(path: Path) -> list[int]:
    """Page numbers of the frames of the newest transaction in the WAL (its header's salts)."""
    data = path.with_name(path.name + "-wal").read_bytes()
    page_size, salts = struct.unpack(">I", data[8:12])[0], data[16:24]
    size = 24 + page_size
    transactions: list[list[int]] = [[]]
    for at in range(32, len(data) - size + 1, size):
        if data[at + 8:at + 16] != salts:
            break
        transactions[-1].append(struct.unpack(">I", data[at:at + 4])[0])
        if struct.unpack(">I", data[at + 4:at + 8])[0]:
            transactions.append([])
    return transactions[-2]


async def test_a_quarter_hour_of_many_meters_writes_a_page_or_two_of_each_billing_btree(tmp_path: Path) -> None:
    """The SD-card property itself: with two days of history (keyed by meter, every series would have
    leaves of its own by then), one more quarter-hour of 40 meters dirties the last few pages of
    intervals and of the credits, not one page per meter."""
    meters = [f"meter-{i:03d}" for i in range(40)]
    ledger = await Ledger.open(tmp_path, gateway_id=GW, keypair=KEY)
    try:
        history = [Reading(m, T0 + minute * 60_000, 1_000 * k + 5 * minute)
                   for minute in range(0, 2 * 24 * 60, 15) for k, m in enumerate(meters)]
        await ledger.commit_readings(history, now_ms=history[-1].t_ms)
        minute = 2 * 24 * 60
        await ledger.commit_readings([Reading(m, T0 + minute * 60_000, 1_000 * k + 5 * minute)
                                      for k, m in enumerate(meters)], now_ms=T0 + minute * 60_000)
        pages = _wal_pages_of_last_commit(tmp_path / DB_FILE)
        with contextlib.closing(sqlite3.connect(f"file:{tmp_path / DB_FILE}?mode=ro", uri=True)) as db:
            owner = dict(db.execute("SELECT pageno, name FROM dbstat"))
            (page_size,) = db.execute("PRAGMA page_size").fetchone()
    finally:
        await ledger.close()
    written: dict[str, int] = {}
    for page in pages:
        written[owner.get(page, "other")] = written.get(owner.get(page, "other"), 0) + 1
    # Appending 40 rows to an index b-tree may split its last leaf: SQLite rebalances it with its
    # siblings (up to 3 leaves, the new one and their parent); keyed by meter it was 40 leaves.
    # In bytes: 5 pages of 4 KiB (the 1 KiB pages of a new ledger hold a quarter as much each).
    assert written.get("intervals", 0) * page_size <= 5 * 4096, written
    # The credits were always appended in id order (their pages are their 40 wire texts); what
    # else the commit writes is a few pages of each structure, fewer than one per meter in all.
    assert sum(n for name, n in written.items() if name != "credits") < len(meters), written


@pytest.mark.parametrize("damage", ["seq stored twice", "interval names another credit"])
async def test_the_full_check_finds_what_no_index_guards_any_more(tmp_path: Path, damage: str) -> None:
    """Schema 7 has no (meter, channel, seq) index to keep a chain's seqs unique, nor a foreign key from an
    interval to its credit: the full check (at start for a small file, in the background for a big
    one) looks for both, and the ledger is refused like any damaged file."""
    ledger = await Ledger.open(tmp_path, gateway_id=GW, keypair=KEY)
    try:
        await ledger.commit_readings(_readings(0, 40), now_ms=T0 + 40 * 60_000)
        assert await integrity.full_check(tmp_path / DB_FILE) == ["ok"]
    finally:
        await ledger.close()
    with contextlib.closing(sqlite3.connect(tmp_path / DB_FILE, isolation_level=None)) as db:
        if damage == "seq stored twice":  # an UPDATE, not an INSERT: past the trigger
            db.execute("UPDATE credits SET seq = seq - 1 WHERE id = (SELECT MAX(id) FROM credits "
                       "WHERE meter='m1' AND channel='import')")
        else:
            db.execute("UPDATE intervals SET credit_id = credit_id + 1 WHERE start = (SELECT MIN(start) FROM "
                       "intervals) AND meter='m1' AND channel='import'")
    verdict = await integrity.full_check(tmp_path / DB_FILE)
    assert verdict != ["ok"]
    assert ("stored 2 times" if damage == "seq stored twice" else "not its own") in verdict[0], verdict
    with pytest.raises(LedgerIntegrityError):
        await Ledger.open(tmp_path, gateway_id=GW, keypair=KEY)  # small: checked in full at start
