"""Delivery records and their Soroban transactions in the ledger file (migration 0006).

The outbox discipline of credits, for records: a record is decided *inside* the write transaction
that stores it (the intervals are read on the writer's connection, in that transaction), so a
crash either leaves no record or the whole record; ``agreement_id`` is UNIQUE, so a restart that
decides again finds it made and makes nothing. A record's envelope follows the Stellar uplink's
stored-envelope rule: hash and bytes committed before the first send, at most one pending at a
time (the gateway account's sequence numbers are used in order), resent byte for byte, a new one
only after the old is proved void. So an agreement is delivered at most once, and — since nothing
is ever deleted before its fate is known — at least once.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import aiosqlite

from cloud_sync.keys import Keypair
from gateway.errors import LedgerError
from gateway.ledger.atomic import atomic
from gateway.ledger.queries import GRID_CTE
from gateway.p2p.planner import Carry, Decision, ExportInterval, Terms, order, plan
from gateway.p2p.record import CHANNEL, SignedRecord, body_of, sign

PENDING, DELIVERED, DEAD, NOTHING = "pending", "delivered", "dead", "nothing"
TX_PENDING, TX_APPLIED, TX_FAILED, TX_VOID = "pending", "applied", "failed", "void"
UPLINK: Final = "soroban"


class LedgerFile(Protocol):
    """The ledger's single writer and a read connection (the daemon's Ledger)."""

    def write_transaction(self) -> contextlib.AbstractAsyncContextManager[aiosqlite.Connection]: ...

    async def read_rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...


class AlreadyPending(LedgerError):
    """Another deliver_energy envelope is still pending: resolve it first."""




@dataclass(frozen=True, slots=True)
class Agreement:
    """An agreement as the planner and the uplink need it (from ``[[p2p.agreements]]``)."""

    terms: Terms
    provider_meter: str
    provider: str


@dataclass(frozen=True, slots=True)
class RecordRow:
    id: int
    agreement_id: int
    provider_meter: str
    provider: str
    kwh: int
    meter_reading: int
    state: str
    hash: str
    contract_tx_id: int | None
    error_name: str | None
    detail: str | None
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class StoredEnvelope:
    hash: str
    agreement_id: int
    envelope: str
    seq: int
    max_time: int
    state: str
    attempts: int


_RECORD_COLS = ("id, agreement_id, provider_meter, provider, kwh, meter_reading, state, hash, contract_tx_id, "
                "error_name, detail, body")
_TX_COLS = "hash, agreement_id, envelope, seq, max_time, state, attempts"


def _record(r: tuple[Any, ...]) -> RecordRow:
    return RecordRow(int(r[0]), int(r[1]), str(r[2]), str(r[3]), int(r[4]), int(r[5]), str(r[6]), str(r[7]),
                     None if r[8] is None else int(r[8]), r[9], r[10], json.loads(r[11]))


def _envelope(r: tuple[Any, ...]) -> StoredEnvelope:
    return StoredEnvelope(str(r[0]), int(r[1]), str(r[2]), int(r[3]), int(r[4]), str(r[5]), int(r[6]))


async def _rows(db: aiosqlite.Connection, sql: str,
                params: Sequence[Any] | Mapping[str, Any] = ()) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in await db.execute_fetchall(sql, params)]


async def export_intervals(db: aiosqlite.Connection, meter: str, lo: int, hi: int) -> list[ExportInterval]:
    """The meter's export intervals lying in [lo, hi], each with its credit's seq and hash."""
    # Time-ordered keys (schema 7): a primary-key probe per grid step, the credit by the id its interval holds.
    rows = await _rows(db, GRID_CTE +
        'SELECT i.start, i."end", i.wh, i.register_end_wh, i.credit_seq, c.hash FROM intervals i '
        "JOIN credits c ON c.id = i.credit_id "
        'WHERE i.start IN (SELECT s FROM grid) AND i.meter = :meter AND i.channel = :channel AND i."end" <= :end '
        "ORDER BY i.start", {"meter": meter, "channel": CHANNEL, "lo": lo, "hi": hi, "end": hi})
    return [ExportInterval(int(a), int(b), int(w), int(r), int(s), str(h)) for a, b, w, r, s, h in rows]


class P2PStore:
    def __init__(self, db: LedgerFile) -> None:
        self._db = db

    # ---- deciding ---------------------------------------------------------------------------

    @atomic
    async def decide(self, agreements: Sequence[Agreement], *, gateway: str, keypair: Keypair,
                     now: float) -> list[SignedRecord]:
        """Make every delivery record that is due now, each in the transaction that decides it.

        Per provider meter, agreements are taken in :func:`planner.order`; one not yet due holds
        back the meter's later ones (they start from its remainder). Returns the records made.
        """
        made: list[SignedRecord] = []
        # Decided ones are skipped without a write transaction (checked again inside one before writing).
        decided = {int(a) for (a,) in await self._db.read_rows("SELECT agreement_id FROM p2p_deliveries")}
        by_meter: dict[str, list[Agreement]] = {}
        for a in agreements:
            if a.terms.agreement_id not in decided:
                by_meter.setdefault(a.provider_meter, []).append(a)
        for meter, mine in sorted(by_meter.items()):
            lookup = {a.terms.agreement_id: a for a in mine}
            for terms in order(a.terms for a in mine):
                async with self._db.write_transaction() as db:
                    if await _rows(db, "SELECT 1 FROM p2p_deliveries WHERE agreement_id=?", (terms.agreement_id,)):
                        continue
                    carry = await self._carry(db, meter)
                    intervals = await export_intervals(db, meter, max(terms.start, carry.until), terms.deadline)
                    decision = plan(terms, intervals, carry, now)
                    if decision is None:
                        break
                    record = self._signed(decision, terms, lookup[terms.agreement_id], gateway, keypair, now)
                    await self._insert(db, decision, lookup[terms.agreement_id], record, now)
                    made.append(record)
        return made

    @staticmethod
    def _signed(decision: Decision, terms: Terms, a: Agreement, gateway: str, keypair: Keypair,
                now: float) -> SignedRecord:
        body = body_of(decision, terms, gateway=gateway, gateway_key=keypair.public_key, provider=a.provider,
                       provider_meter=a.provider_meter, decided_at=int(now))
        return sign(body, keypair)

    @staticmethod
    async def _carry(db: aiosqlite.Connection, meter: str) -> Carry:
        rows = await _rows(db, "SELECT carry_out_wh, covered_until, meter_reading FROM p2p_deliveries "
                               "WHERE provider_meter=? ORDER BY id DESC LIMIT 1", (meter,))
        return Carry(int(rows[0][0]), int(rows[0][1]), int(rows[0][2])) if rows else Carry()

    @staticmethod
    async def _insert(db: aiosqlite.Connection, decision: Decision, a: Agreement, record: SignedRecord,
                      now: float) -> None:
        await db.execute(
            "INSERT INTO p2p_deliveries (agreement_id, provider_meter, provider, kwh, meter_reading, carry_out_wh, "
            "covered_until, body, hash, signature, state, decided_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (decision.agreement_id, a.provider_meter, a.provider, decision.kwh, decision.meter_reading_wh,
             decision.carry_out_wh, decision.until, record.canonical.decode("ascii"), record.hash, record.signature,
             PENDING if decision.kwh > 0 else NOTHING, int(now * 1000)))

    @atomic
    async def insert_record(self, decision: Decision, agreement: Agreement, *, gateway: str, keypair: Keypair,
                            now: float) -> SignedRecord:
        """Store a decision made elsewhere (tools, tests): the same row ``decide`` writes."""
        record = self._signed(decision, agreement.terms, agreement, gateway, keypair, now)
        async with self._db.write_transaction() as db:
            await self._insert(db, decision, agreement, record, now)
        return record

    # ---- reads ------------------------------------------------------------------------------

    async def records(self) -> list[RecordRow]:
        rows = await self._db.read_rows(f"SELECT {_RECORD_COLS} FROM p2p_deliveries ORDER BY id")
        return [_record(r) for r in rows]

    async def record(self, agreement_id: int) -> RecordRow | None:
        rows = await self._db.read_rows(f"SELECT {_RECORD_COLS} FROM p2p_deliveries WHERE agreement_id=?",
                                        (agreement_id,))
        return _record(rows[0]) if rows else None

    async def next_unsent(self, *, skip: Sequence[int] = ()) -> RecordRow | None:
        """The oldest record still to send (none of its envelopes pending), apart from ``skip``."""
        marks = ",".join("?" * len(skip))
        extra = f" AND agreement_id NOT IN ({marks})" if skip else ""
        rows = await self._db.read_rows(
            f"SELECT {_RECORD_COLS} FROM p2p_deliveries WHERE state=?{extra} ORDER BY id LIMIT 1", (PENDING, *skip))
        return _record(rows[0]) if rows else None

    async def pending_envelope(self) -> StoredEnvelope | None:
        rows = await self._db.read_rows(f"SELECT {_TX_COLS} FROM p2p_txs WHERE state=? ORDER BY created_ms LIMIT 1",
                                        (TX_PENDING,))
        return _envelope(rows[0]) if rows else None

    async def envelopes(self, agreement_id: int) -> list[StoredEnvelope]:
        rows = await self._db.read_rows(f"SELECT {_TX_COLS} FROM p2p_txs WHERE agreement_id=? ORDER BY created_ms",
                                        (agreement_id,))
        return [_envelope(r) for r in rows]

    # ---- the uplink's writes ----------------------------------------------------------------

    @atomic
    async def store_envelope(self, agreement_id: int, tx_hash: str, envelope: str, seq: int, max_time: int, *,
                             now_ms: int) -> StoredEnvelope:
        """Commit the envelope before it is first sent (refused while another is pending)."""
        async with self._db.write_transaction() as db:
            pending = await _rows(db, "SELECT hash FROM p2p_txs WHERE state=? LIMIT 1", (TX_PENDING,))
            if pending:
                raise AlreadyPending(f"deliver_energy transaction {pending[0][0]} is still pending")
            state = await _rows(db, "SELECT state FROM p2p_deliveries WHERE agreement_id=?", (agreement_id,))
            if not state or state[0][0] != PENDING:
                raise AlreadyPending(f"agreement {agreement_id}'s record is not waiting to be sent")
            await db.execute("INSERT INTO p2p_txs (hash, agreement_id, envelope, seq, max_time, state, created_ms) "
                             "VALUES (?,?,?,?,?,?,?)", (tx_hash, agreement_id, envelope, seq, max_time, TX_PENDING,
                                                        now_ms))
        return StoredEnvelope(tx_hash, agreement_id, envelope, seq, max_time, TX_PENDING, 0)

    @atomic
    async def note_attempt(self, tx_hash: str, *, error: str, now_ms: int) -> None:
        async with self._db.write_transaction() as db:
            await db.execute("UPDATE p2p_txs SET attempts=attempts+1, result=? WHERE hash=?", (error, tx_hash))
            await db.execute("INSERT OR IGNORE INTO uplink_cursor (uplink) VALUES (?)", (UPLINK,))
            await db.execute("UPDATE uplink_cursor SET last_error=?, last_error_ms=? WHERE uplink=?",
                             (error, now_ms, UPLINK))

    @atomic
    async def settle(self, tx: StoredEnvelope, state: str, *, result: dict[str, Any], now_ms: int,
                     contract_tx_id: int | None = None, error_name: str | None = None) -> bool:
        """The envelope's fate and its record's, in one transaction; False if already settled.

        applied → the record is delivered (the contract's transaction id kept); failed with an
        ``error_name`` → the record is dead-lettered with it; failed without, or void → the record
        stays pending (it gets a new envelope).
        """
        async with self._db.write_transaction() as db:
            cursor = await db.execute("UPDATE p2p_txs SET state=?, result=?, settled_ms=?, attempts=attempts+1 "
                                      "WHERE hash=? AND state=?", (state, json.dumps(result), now_ms, tx.hash,
                                                                   TX_PENDING))
            if cursor.rowcount == 0:
                return False
            await db.execute("INSERT OR IGNORE INTO uplink_cursor (uplink) VALUES (?)", (UPLINK,))
            if state == TX_APPLIED:
                await db.execute("UPDATE p2p_deliveries SET state=?, contract_tx_id=?, tx_hash=?, settled_ms=?, "
                                 "detail=NULL WHERE agreement_id=? AND state=?",
                                 (DELIVERED, contract_tx_id, tx.hash, now_ms, tx.agreement_id, PENDING))
                await db.execute("UPDATE uplink_cursor SET last_success_ms=?, last_error=NULL WHERE uplink=?",
                                 (now_ms, UPLINK))
            elif error_name is not None:
                await self._dead(db, tx.agreement_id, error_name, str(result.get("detail", "")), now_ms, tx.hash)
        return True

    @atomic
    async def found_delivered(self, agreement_id: int, contract_tx_id: int, *, now_ms: int) -> None:
        """The contract already holds this delivery (found in its history after an envelope was voided)."""
        async with self._db.write_transaction() as db:
            await db.execute("UPDATE p2p_deliveries SET state=?, contract_tx_id=?, settled_ms=?, "
                             "detail='found in the contract history' WHERE agreement_id=? AND state=?",
                             (DELIVERED, contract_tx_id, now_ms, agreement_id, PENDING))

    @atomic
    async def dead_letter(self, agreement_id: int, error_name: str, detail: str, *, now_ms: int) -> None:
        """The contract refused the record before any envelope was sent (its simulation failed)."""
        async with self._db.write_transaction() as db:
            await db.execute("INSERT OR IGNORE INTO uplink_cursor (uplink) VALUES (?)", (UPLINK,))
            await self._dead(db, agreement_id, error_name, detail, now_ms, None)

    @staticmethod
    async def _dead(db: aiosqlite.Connection, agreement_id: int, name: str, detail: str, now_ms: int,
                    tx_hash: str | None) -> None:
        text = f"{name}: {detail}" if detail else name
        await db.execute("UPDATE p2p_deliveries SET state=?, error_name=?, detail=?, tx_hash=?, settled_ms=? "
                         "WHERE agreement_id=? AND state=?", (DEAD, name, text, tx_hash, now_ms, agreement_id,
                                                             PENDING))
        await db.execute("UPDATE uplink_cursor SET last_error=?, last_error_ms=? WHERE uplink=?",
                         (f"agreement {agreement_id}: {text}", now_ms, UPLINK))
