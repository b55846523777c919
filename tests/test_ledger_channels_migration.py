"""A ledger from before channels (schema 4, v1 credits) migrates: everything is import, ids and chains go on.

The old ledger is made as the version before channels made it: its history is built through the
ledger, the file rewritten with the migrations up to 4 (``tests/old_ledger.py``), and every credit
signed again in the v1 encoding that version wrote (15 fields, no channel; the bytes are the old
version's, see ``tests/test_credit_encoding.py``). Its credits reach a real receiver store first;
then the gateway of today opens the file, and its next credits must be accepted by the same
receiver as the next links of the same chains.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Any

from stellar_sdk import Keypair

from cloud_sync.credit import GENESIS_HASH, CreditBody, channel_of, sign
from cloud_sync.receiver import CreditStore, open_store
from gateway.channels import Channel
from gateway.intervals import Reading
from gateway.ledger.store import DB_FILE, SCHEMA_VERSION, Ledger
from tests.old_ledger import rewrite_at_version

KEY = Keypair.from_raw_ed25519_seed(bytes(range(7, 39)))
GW = "gw-old"
T0 = 1_767_225_600_000
METERS = ("m1", "m2")
SEQUENCE_HEADROOM = 7
"""AUTOINCREMENT's high-water mark above the newest id (ids of rows that are gone): never reused."""


OUTAGE_MIN = range(101, 130)
"""No readings then: the boundaries in it are estimated, and a late reading there revises delivered credits."""


def _readings(start_min: int, end_min: int) -> list[Reading]:
    return [Reading(meter, T0 + minute * 60_000, 10_000 * (k + 1) + 7 * minute)
            for minute in range(start_min, end_min) if minute not in OUTAGE_MIN for k, meter in enumerate(METERS)]


async def _history(data: Path) -> None:
    ledger = await Ledger.open(data, gateway_id=GW, keypair=KEY)
    try:
        for a in range(0, 180, 45):
            await ledger.commit_readings(_readings(a, a + 45), now_ms=T0 + a * 60_000)
    finally:
        await ledger.close()


def _as_version_1(path: Path) -> None:
    """Sign every credit again as the version before channels did (v1), and relink the chains and tips."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("BEGIN")
        tips: dict[str, str] = {}
        for credit_id, meter, wire in db.execute("SELECT id, meter, wire FROM credits ORDER BY id").fetchall():
            body = json.loads(wire)["credit"]
            del body["channel"]
            signed = sign(CreditBody(**{**body, "v": 1, "prev_hash": tips.get(meter, GENESIS_HASH)}), KEY)
            assert len(signed.fields) == 15
            assert "channel" not in signed.fields
            db.execute("UPDATE credits SET hash=?, wire=? WHERE id=?", (signed.hash, signed.wire_json(), credit_id))
            tips[meter] = signed.hash
        for meter, digest in tips.items():
            db.execute("UPDATE meters SET last_hash=? WHERE meter=?", (digest, meter))
        db.execute("UPDATE sqlite_sequence SET seq = seq + ? WHERE name = 'credits'", (SEQUENCE_HEADROOM,))
        db.execute("INSERT INTO uplink_cursor (uplink, delivered_id) VALUES ('billing_api', "
                   "(SELECT MAX(id) FROM credits))")
        db.execute("COMMIT")


async def _deliver(store: CreditStore, wires: list[str], key: str) -> list[dict[str, Any]]:
    credits = [json.loads(w) for w in wires]
    raw = json.dumps({"gateway": GW, "batch": key, "credits": credits}).encode()
    answer = await store.ingest(GW, key, raw, credits)
    results: list[dict[str, Any]] = answer["results"]
    return results


def _snapshot(path: Path) -> dict[str, Any]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return {
            "credits": db.execute("SELECT id, meter, seq, start, wh, hash, wire FROM credits ORDER BY id").fetchall(),
            "intervals": db.execute('SELECT meter, start, "end", wh, quality, register_start_wh, register_end_wh, '
                                    "credit_seq FROM intervals ORDER BY meter, start").fetchall(),
            "meters": db.execute("SELECT meter, last_t_ms, last_wh, anchor_s, anchor_wh, last_seq, last_hash "
                                 "FROM meters ORDER BY meter").fetchall(),
            "readings": db.execute("SELECT meter, t_ms, register_wh, disposition, virtual_wh FROM readings "
                                   "ORDER BY t_ms, meter, disposition, register_wh").fetchall(),
            "sequence": db.execute("SELECT seq FROM sqlite_sequence WHERE name='credits'").fetchone()[0],
        }


async def test_a_ledger_from_before_channels_migrates_and_its_import_chains_go_on(tmp_path: Path) -> None:
    data = tmp_path / "gw"
    await _history(data)
    rewrite_at_version(data / DB_FILE, 4)
    _as_version_1(data / DB_FILE)
    old = _snapshot(data / DB_FILE)
    with contextlib.closing(sqlite3.connect(data / DB_FILE)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (4,)
        assert "channel" not in {row[1] for row in db.execute("PRAGMA table_info(credits)")}
    store = await open_store(str(tmp_path / "receiver.db"))
    try:
        await store.ensure_enrolled(GW, KEY.public_key, 0)
        results = await _deliver(store, [row[6] for row in old["credits"]], "old-ledger:all")
        assert {r["status"] for r in results} == {"accepted"}, "the old ledger's v1 credits are what it delivered"

        ledger = await Ledger.open(data, gateway_id=GW, keypair=KEY)
        try:
            assert ledger.meter_state("m1").last_t_ms == T0 + 179 * 60_000, "engine state kept"
            assert ledger.meter_state("m1", Channel.EXPORT).last_t_ms is None, "no export channel until it reads"
            # On: the next readings, and one late reading inside the delivered history (a correction).
            late = Reading("m1", T0 + 112 * 60_000, 10_000 + 7 * 112 + 50)
            result = await ledger.commit_readings([*_readings(180, 240), late], now_ms=T0 + 240 * 60_000)
            assert result.corrections >= 1
            batch = await ledger.next_batch("billing_api", 500, now_ms=T0 + 240 * 60_000)
            assert batch is not None
            new_results = await _deliver(store, batch.wire, batch.batch_key)
        finally:
            await ledger.close()
    finally:
        await store.close()
    assert {r["status"] for r in new_results} == {"accepted"}, new_results

    new = _snapshot(data / DB_FILE)
    assert new["credits"][:len(old["credits"])] == old["credits"], "every old credit kept, under its id"
    revised = {row for row in old["intervals"] if row[0] == "m1" and row[1] * 1000 in range(T0 + 90 * 60_000,
                                                                                           T0 + 135 * 60_000)}
    assert set(old["intervals"]) - set(new["intervals"]) <= revised, "only the late reading's intervals moved"
    # In time order since schema 7 (a late reading sorts among the old ones): compared as sets, sizes too.
    assert set(old["readings"]) <= set(new["readings"]), "every old reading kept"
    assert len(set(old["readings"])) == len(old["readings"])
    assert new["sequence"] >= old["sequence"]
    added = new["credits"][len(old["credits"]):]
    assert added[0][0] == old["sequence"] + 1, "ids go on above AUTOINCREMENT's mark: none is reused"
    with contextlib.closing(sqlite3.connect(data / DB_FILE)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        for table in ("readings", "intervals", "credits", "meters"):
            assert db.execute(f"SELECT DISTINCT channel FROM {table}").fetchall() == [("import",)], table
    old_tips = {meter: (seq, digest) for meter, _, _, _, _, seq, digest in old["meters"]}
    firsts: dict[str, dict[str, Any]] = {}
    for _, meter, _, _, _, _, wire in added:
        firsts.setdefault(meter, json.loads(wire)["credit"])
    for meter in METERS:
        body = firsts[meter]
        assert (body["v"], channel_of(body)) == (2, "import")
        assert (body["seq"] - 1, body["prev_hash"]) == old_tips[meter], f"{meter}: the import chain continues"
