"""A credit stored compactly reads back as the very bytes that were signed (schema 7's generated ``wire``)."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_sync.credit import GENESIS_HASH, CreditBody, sign
from cloud_sync.keys import Keypair
from gateway.channels import Channel
from gateway.credits import IntervalSigner, Tip, credit_for_interval
from gateway.intervals import Interval, Quality, Reading
from gateway.ledger import connection
from gateway.ledger.credit_rows import INSERT_CREDIT, TEMPLATE_SQL, WIRE_SQL, compact_columns, credit_columns
from gateway.ledger.store import DB_FILE, Ledger

KEY = Keypair.random()
_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True) | st.text(max_size=8)
_ints = st.integers(-(2**63), 2**63 - 1)
_regs = st.integers(0, 2**62)


@contextlib.contextmanager
def _schema() -> Iterator[sqlite3.Connection]:
    """An empty ledger file's schema (every migration applied), in memory."""
    db = sqlite3.connect(":memory:", isolation_level=None)
    db.create_function("ledger_unhex", 1, connection._unhex, deterministic=True)
    try:
        for _, sql in connection.migrations():
            db.executescript(sql)
        yield db
    finally:
        db.close()


def _stored(db: sqlite3.Connection, columns: tuple[object, ...]) -> tuple[str, str, bool]:
    cursor = db.execute(INSERT_CREDIT, columns)
    wire, digest, whole = db.execute("SELECT wire, hash, wire_text IS NOT NULL FROM credits WHERE id=?",
                                     (cursor.lastrowid,)).fetchone()
    return str(wire), str(digest), bool(whole)


def test_the_migration_defines_wire_as_the_modules_template() -> None:
    (_, sql), = [m for m in connection.migrations() if m[0] == 7]
    assert f"GENERATED ALWAYS AS ({WIRE_SQL}) VIRTUAL" in sql
    assert f"({TEMPLATE_SQL}) = wire_text" in sql


@settings(max_examples=150, deadline=None)
@given(meter=_ids, gateway=_ids, start=_ints, wh=_ints, reg_start=_regs, reg_end=_regs,
       quality=st.sampled_from(list(Quality)), channel=st.sampled_from(list(Channel)),
       seq=st.integers(0, 2**62), prev=st.sampled_from([GENESIS_HASH, "ab" * 32, "AB" * 32]),
       created_ms=_ints, corrects=st.none() | st.integers(1, 2**40), end_off=st.sampled_from([900, 900, 899]))
def test_a_stored_credit_reads_back_as_the_signed_wire_bytes(
        meter: str, gateway: str, start: int, wh: int, reg_start: int, reg_end: int, quality: Quality,
        channel: Channel, seq: int, prev: str, created_ms: int, corrects: int | None, end_off: int) -> None:
    end = start + end_off
    if not -(2**63) <= end < 2**63:
        end = start
    interval = Interval(meter, start, end, wh, quality, reg_start, reg_end, channel=channel)
    signed, tip = credit_for_interval(interval, Tip(seq, prev), gateway_id=gateway, keypair=KEY,
                                      created_ms=created_ms, corrects=corrects, wh=wh)
    wire = signed.wire_json()
    plain = (meter.isascii() and meter.isalnum() and gateway.isascii() and gateway.isalnum() and end_off == 900
             and prev.islower() and start <= 2**63 - 1 - 900)
    with _schema() as db:
        stored, digest, whole = _stored(db, credit_columns(meter, channel.value, tip.seq, start, wh, signed.hash,
                                                           created_ms, wire))
        assert (stored, digest) == (wire, signed.hash)
        if plain:
            assert not whole, "a plain v2 credit is stored compactly"
        if corrects is None:  # the ingest's fast path: the signer's parts, no JSON parsed
            digest2, wire2, _ = IntervalSigner(gateway_id=gateway, keypair=KEY).sign(interval, Tip(seq, prev),
                                                                                     created_ms)
            assert wire2 == wire
            stored2, _, whole2 = _stored(db, compact_columns(
                meter, channel.value, tip.seq, start, wh, digest2, created_ms, gateway, KEY.public_key, None,
                quality.value, reg_start, reg_end, prev, wire2[-90:-2], wire2))
            assert stored2 == wire
            assert whole2 == whole


def test_a_version_1_credit_is_kept_whole_and_reads_back_unchanged() -> None:
    body = CreditBody(gateway="gw", gateway_key=KEY.public_key, meter="m1", seq=1, start=0, end=900, wh=5,
                      quality="A", register_start_wh=0, register_end_wh=5, prev_hash=GENESIS_HASH, created_ms=1, v=1)
    signed = sign(body, KEY)
    with _schema() as db:
        stored, digest, whole = _stored(db, credit_columns("m1", "import", 1, 0, 5, signed.hash, 1,
                                                           signed.wire_json()))
    assert (stored, digest, whole) == (signed.wire_json(), signed.hash, True)


async def test_the_ledgers_credits_are_stored_compactly_and_read_back_verbatim(tmp_path: Path) -> None:
    keypair = Keypair.random()
    t0 = 1_700_000_100_000
    ledger = await Ledger.open(tmp_path, gateway_id="gw", keypair=keypair)
    try:
        readings = [Reading(m, t0 + k * 60_000, 1000 + 7 * k, "modbus") for k in range(50) for m in ("m1", "m2")]
        await ledger.register_uplink("api")
        await ledger.commit_readings(readings, now_ms=t0 + 50 * 60_000)
        batch = await ledger.next_batch("api", 100, now_ms=1)
    finally:
        await ledger.close()
    assert batch is not None
    assert len(batch.wire) >= 4
    with contextlib.closing(sqlite3.connect(tmp_path / DB_FILE)) as db:
        rows = db.execute("SELECT wire, hash, wire_text IS NULL, length(signature) FROM credits ORDER BY id").fetchall()
    assert [r[0] for r in rows] == batch.wire
    for wire, digest, compact, sig_len in rows:
        item = json.loads(wire)
        assert (item["hash"], compact, sig_len) == (digest, True, 88)
        body = CreditBody(**item["credit"])
        assert sign(body, keypair).wire_json() == wire  # ed25519 is deterministic: the bytes that were signed


def test_unhex_refuses_what_is_not_hex() -> None:
    assert connection._unhex("00ff") == b"\x00\xff"
    assert connection._unhex("zz") is None
    assert connection._unhex(5) is None


@pytest.mark.parametrize("meter", ["m\"1", "mé", "m\\1"])
def test_an_id_that_json_escapes_is_stored_whole(meter: str) -> None:
    interval = Interval(meter, 0, 900, 5, Quality.ACTUAL, 0, 5)
    signed, _ = credit_for_interval(interval, Tip(), gateway_id="gw", keypair=KEY, created_ms=1)
    with _schema() as db:
        stored, _, whole = _stored(db, credit_columns(meter, "import", 1, 0, 5, signed.hash, 1, signed.wire_json()))
    assert stored == signed.wire_json()
    assert whole
