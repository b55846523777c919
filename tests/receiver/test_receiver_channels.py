"""Energy channels at the receiver (both stores): each (gateway, meter, channel) is a chain of its own.

Import and export credits of one meter carry the same seqs and quarter-hours without touching each
other; a credit of one channel can never extend, correct or replay the other's; a v1 import chain
(a gateway from before channels) goes on in v2; and stores made before channels migrate with
every credit import.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import asyncpg
from receiver_kit import CREDITS_PATH, GW, KEY, Client, batch_bytes, honest_chain, resign

from cloud_sync.credit import CreditBody, sign
from cloud_sync.receiver import ReceiverStore, open_store
from cloud_sync.receiver.migrations import migrations, newest
from cloud_sync.receiver.pg_sandbox import PgSandbox
from gateway.channels import Channel
from gateway.credits import Tip


def _as_v1(chain: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same import chain as a gateway from before channels signed it (v1: no channel field)."""
    out, prev = [], "0" * 64
    for item in chain:
        body = {k: v for k, v in item["credit"].items() if k != "channel"}
        signed = sign(CreditBody(**{**body, "v": 1, "prev_hash": prev}), KEY)
        out.append(json.loads(signed.wire_json()))
        prev = signed.hash
    return out


def _results(answer: Any) -> list[tuple[Any, ...]]:
    return [(r["meter"], r["channel"], r["seq"], r["status"], r.get("reason")) for r in answer.json()["results"]]


async def test_import_and_export_chains_of_one_meter_are_separate(client: Client) -> None:
    imports = honest_chain(3)
    exports = honest_chain(2, channel=Channel.EXPORT)
    # The same seqs, the same quarter-hours: nothing collides.
    answer = await client.send([imports[0], exports[0], imports[1], exports[1], imports[2]], "k1")
    assert _results(answer) == [("m1", "import", 1, "accepted", None), ("m1", "export", 1, "accepted", None),
                                ("m1", "import", 2, "accepted", None), ("m1", "export", 2, "accepted", None),
                                ("m1", "import", 3, "accepted", None)]
    again = await client.send([exports[1]], "k2")
    assert _results(again) == [("m1", "export", 2, "duplicate", None)]

    summary = (await client.get("/v1/summary", "/v1/summary")).json()["meters"]
    assert summary == [
        {"gateway": GW, "meter": "m1", "channel": "import", "credits": 3, "first_seq": 1, "last_seq": 3,
         "wh": 100 + 101 + 102},
        {"gateway": GW, "meter": "m1", "channel": "export", "credits": 2, "first_seq": 1, "last_seq": 2,
         "wh": 100 + 101}]
    stored = await client.stored()
    assert [(c["credit"]["channel"], c["credit"]["seq"]) for c in stored] == [
        ("import", 1), ("import", 2), ("import", 3), ("export", 1), ("export", 2)]
    for channel, n in (("import", 3), ("export", 2)):
        only = await client.get(f"/v1/gateways/{GW}/meters/m1/credits?channel={channel}", CREDITS_PATH)
        assert [c["credit"]["channel"] for c in only.json()["credits"]] == [channel] * n
    bad = await client.get(f"/v1/gateways/{GW}/meters/m1/credits?channel=solar", CREDITS_PATH)
    assert bad.status_code == 400
    assert "import, export" in bad.json()["error"]


async def test_a_credit_of_one_channel_never_extends_or_corrects_the_other(client: Client) -> None:
    imports = honest_chain(2)
    assert (await client.send(imports, "k1")).json()["accepted"] == 2
    # An export credit that claims to follow the import chain: the export chain has nothing yet.
    follows = resign(imports[1], channel="export", seq=3, prev_hash=imports[1]["hash"])
    # The import interval's energy credited again under the export channel's name, as its seq 1: that is
    # the export channel's own first interval (accepted), never a second credit of the import interval.
    first_export = resign(imports[0], channel="export")
    # A correction in the export chain of an interval only the import chain credited.
    correction = resign(imports[0], channel="export", kind="correction", seq=2, corrects=1,
                        prev_hash=first_export["hash"], wh=5,
                        register_end_wh=imports[0]["credit"]["register_end_wh"] + 5)
    answer = await client.send([follows, first_export, correction], "k2")
    assert _results(answer) == [("m1", "export", 3, "rejected", "gap"), ("m1", "export", 1, "accepted", None),
                                ("m1", "export", 2, "accepted", None)]
    # The correction was checked against the export channel's credits only (5 Wh more than its 100).
    summary = {row["channel"]: row["wh"] for row in (await client.get("/v1/summary", "/v1/summary")).json()["meters"]}
    assert summary == {"import": 100 + 101, "export": 100 + 5}
    # An import credit linked to the export chain's tip breaks the import chain.
    crossed = resign(honest_chain(3)[2], prev_hash=correction["hash"])
    assert _results(await client.send([crossed], "k3")) == [("m1", "import", 3, "rejected", "chain_break")]


async def test_a_v1_import_chain_goes_on_in_v2(client: Client) -> None:
    old = _as_v1(honest_chain(2))
    assert (await client.send(old, "k1")).json()["accepted"] == 2
    assert _results(await client.send([old[1]], "k1-again")) == [("m1", "import", 2, "duplicate", None)]
    new = honest_chain(2, tip=Tip(2, old[1]["hash"]))
    assert [c["credit"]["v"] for c in new] == [2, 2]
    assert _results(await client.send(new, "k2")) == [("m1", "import", 3, "accepted", None),
                                                       ("m1", "import", 4, "accepted", None)]
    # The export chain starts at seq 1 with the genesis hash, whatever the import chain holds.
    export = honest_chain(1, channel=Channel.EXPORT)
    assert _results(await client.send(export, "k3")) == [("m1", "export", 1, "accepted", None)]


def _old_sqlite_store(path: Path, chain: list[dict[str, Any]]) -> None:
    """A receiver file at the schema before channels (migrations 1-2), holding ``chain``."""
    with sqlite3.connect(path) as db:
        for migration in migrations("sqlite")[:2]:
            db.executescript(migration.sql)
        db.execute("PRAGMA user_version = 2")
        for item in chain:
            c = item["credit"]
            db.execute("INSERT INTO credits (gateway, meter, seq, hash, wh, start, wire, received_ms, kind) "
                       "VALUES (?,?,?,?,?,?,?,?,?)",
                       (GW, c["meter"], c["seq"], item["hash"], c["wh"], c["start"], json.dumps(item), 1, c["kind"]))


def test_a_sqlite_store_from_before_channels_migrates_its_credits_to_import(tmp_path: Path) -> None:
    old = _as_v1(honest_chain(2))
    _old_sqlite_store(tmp_path / "receiver.db", old)
    store = ReceiverStore(tmp_path / "receiver.db", {GW: KEY.public_key})
    try:
        assert store.credits(GW, "m1", "import") == old
        assert store.credits(GW, "m1", "export") == []
        new = [*honest_chain(1, tip=Tip(2, old[1]["hash"])), *honest_chain(1, channel=Channel.EXPORT)]
        answer = store.ingest(GW, "k", batch_bytes(new, "k"), new)
        assert [(r["channel"], r["seq"], r["status"]) for r in answer["results"]] == [
            ("import", 3, "accepted"), ("export", 1, "accepted")]
    finally:
        store.close()
    with sqlite3.connect(tmp_path / "receiver.db") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == newest("sqlite")
        assert db.execute("SELECT channel, COUNT(*) FROM credits GROUP BY channel ORDER BY channel").fetchall() == [
            ("export", 1), ("import", 3)]


async def test_a_postgresql_store_from_before_channels_migrates_its_credits_to_import(pg_server: PgSandbox) -> None:
    url = pg_server.create_database()
    old = _as_v1(honest_chain(2))
    conn = await asyncpg.connect(url)
    try:  # the schema before channels, as that receiver's migration made it, and its rows
        await conn.execute("CREATE TABLE receiver_schema (version integer PRIMARY KEY, name text NOT NULL, "
                           "applied_ms bigint NOT NULL)")
        first = migrations("pg")[0]
        await conn.execute(first.sql)
        await conn.execute("INSERT INTO receiver_schema VALUES ($1, $2, 0)", first.version, first.name)
        await conn.execute("INSERT INTO gateways VALUES ($1, $2, NULL, 0, NULL)", GW, KEY.public_key)
        for item in old:
            c = item["credit"]
            await conn.execute("INSERT INTO credits VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1)", GW, c["meter"],
                               c["seq"], c["kind"], c["start"], c["wh"], item["hash"], json.dumps(item))
    finally:
        await conn.close()
    store = await open_store(url)
    try:
        assert await store.credits(GW, "m1", "import") == old
        new = [*honest_chain(1, tip=Tip(2, old[1]["hash"])), *honest_chain(1, channel=Channel.EXPORT)]
        answer = await store.ingest(GW, "k", batch_bytes(new, "k"), new)
        assert [(r["channel"], r["seq"], r["status"]) for r in answer["results"]] == [
            ("import", 3, "accepted"), ("export", 1, "accepted")]
        assert [(r["channel"], r["credits"]) for r in await store.summary(GW)] == [("import", 3), ("export", 1)]
    finally:
        await store.close()
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT MAX(version) FROM receiver_schema") == newest("pg")
        keys = await conn.fetchval("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'credits_pkey'")
        assert keys == "PRIMARY KEY (gateway, meter, channel, seq)"
    finally:
        await conn.close()
