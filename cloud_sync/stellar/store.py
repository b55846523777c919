"""What the Stellar uplink keeps in the gateway's ledger file (migration 0004), and why.

The stored-envelope rule: a transaction's hash, exact bytes, sequence number and upper bounds
are committed *before* its first submit. After any crash the same bytes are resent, or looked
up by hash; a new transaction for the same purpose is built only once the old one is proved
never to be included (:data:`VOID`). So a SIGKILL at any instant can neither pay a credit twice
nor create a second account for a meter.

At most one transaction is pending at a time (checked inside the write transaction that
records it, so also across processes: the daemon and ``meter-gateway stellar provision``):
the gateway account's sequence numbers are used one after another, never raced.

Credit batches use the ledger's common uplink tables (``uplink='stellar'``): a batch is a
contiguous range of outbox ids recorded before its payments are built, so the ingest's
"sent horizon" protects those credits from being revised from then on.

Only import credits are paid: the asset credited to a meter's account is for its consumption,
and an export Wh (energy fed in, :mod:`gateway.channels`) is never consumption. A batch's lines
(its payments and its memo) are the import credits of its id range; export credits in the range
are passed over, and a range of export credits alone is delivered with nothing to pay. Feed-in
reaches the utility through the billing API, and P2P deliveries through the Soroban uplink.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Final, Protocol

import aiosqlite

from cloud_sync.stellar.txbuild import MAX_OPS, Bounds, BuiltTx, CreditLine
from gateway.errors import LedgerError
from gateway.ledger.atomic import atomic

UPLINK: Final = "stellar"
PENDING, APPLIED, FAILED, VOID = "pending", "applied", "failed", "void"
CREDIT, ACCOUNT = "credit", "account"
PAID_CHANNEL: Final = "import"
"""The one channel whose credits are paid (see the module docstring)."""
SCAN_LIMIT: Final = 1000
"""Credits looked at per new batch (zero-energy credits have no payment, so a batch may span more than 100)."""


def _stellar_schema() -> int:
    """The ledger schema version that brings this module's tables: its migration's number, read from the
    migration files (numbers are assigned when branches land; never written down twice)."""
    folder = resources.files("gateway.ledger") / "migrations"
    (number,) = (int(e.name.split("_", 1)[0]) for e in folder.iterdir() if e.name.endswith("_stellar.sql"))
    return number


MIN_SCHEMA: Final = _stellar_schema()


class AlreadyPending(LedgerError):
    """Another transaction of this gateway is pending (another process is submitting)."""


class LedgerFile(Protocol):
    """The ledger's single writer and a read connection (the daemon's Ledger, or the CLI's own)."""

    def write_transaction(self) -> contextlib.AbstractAsyncContextManager[aiosqlite.Connection]: ...

    async def read_rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...


@dataclass(frozen=True, slots=True)
class StoredTx:
    hash: str
    purpose: str
    ref: str
    envelope: str
    seq: int
    bounds: Bounds
    state: str
    attempts: int


@dataclass(frozen=True, slots=True)
class AccountRow:
    meter: str
    serial: str
    account_id: str
    state: str
    """'creating' (a transaction is or was pending), 'active', 'failed' (it failed; retried later)."""
    tx_hash: str | None
    detail: str | None


@dataclass(frozen=True, slots=True)
class Batch:
    key: str
    first_id: int
    last_id: int
    dead: bool
    credits: list[CreditLine]


async def _rows(db: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in await db.execute_fetchall(sql, params)]


_TX_COLUMNS = "hash, purpose, ref, envelope, seq, max_ledger, max_time, state, attempts"


def _tx(row: tuple[Any, ...]) -> StoredTx:
    h, purpose, ref, envelope, seq, max_ledger, max_time, state, attempts = row
    return StoredTx(h, purpose, ref, envelope, int(seq), Bounds(int(max_ledger), int(max_time)), state, int(attempts))




class StellarStore:
    def __init__(self, db: LedgerFile) -> None:
        self._db = db

    # ---- reads ---------------------------------------------------------------------------

    async def accounts(self) -> dict[str, AccountRow]:
        rows = await self._db.read_rows(
            "SELECT meter, serial, account_id, state, tx_hash, detail FROM stellar_accounts ORDER BY meter")
        return {r[0]: AccountRow(*r) for r in rows}

    async def pending_tx(self) -> StoredTx | None:
        rows = await self._db.read_rows(
            f"SELECT {_TX_COLUMNS} FROM stellar_txs WHERE state=? ORDER BY created_ms LIMIT 1", (PENDING,))
        return _tx(rows[0]) if rows else None

    async def tx(self, tx_hash: str) -> StoredTx | None:
        rows = await self._db.read_rows(f"SELECT {_TX_COLUMNS} FROM stellar_txs WHERE hash=?", (tx_hash,))
        return _tx(rows[0]) if rows else None

    async def txs_for(self, ref: str) -> list[StoredTx]:
        rows = await self._db.read_rows(f"SELECT {_TX_COLUMNS} FROM stellar_txs WHERE ref=? ORDER BY created_ms",
                                        (ref,))
        return [_tx(r) for r in rows]

    async def meta(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in await self._db.read_rows("SELECT key, value FROM stellar_meta")}

    async def batch_credits(self, first_id: int, last_id: int) -> list[CreditLine]:
        rows = await self._db.read_rows(
            "SELECT id, meter, wh, hash FROM credits WHERE id BETWEEN ? AND ? AND channel = ? ORDER BY id",
            (first_id, last_id, PAID_CHANNEL))
        return [CreditLine(int(i), str(m), int(w), str(h)) for i, m, w, h in rows]

    # ---- writes --------------------------------------------------------------------------

    @atomic
    async def set_meta(self, items: Mapping[str, str]) -> None:
        async with self._db.write_transaction() as db:
            await db.executemany("INSERT INTO stellar_meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE "
                                 "SET value=excluded.value", list(items.items()))

    @staticmethod
    async def _insert_tx(db: aiosqlite.Connection, purpose: str, ref: str, tx: BuiltTx, now_ms: int) -> None:
        pending = await _rows(db, "SELECT hash FROM stellar_txs WHERE state=? LIMIT 1", (PENDING,))
        if pending:
            raise AlreadyPending(f"transaction {pending[0][0]} is still pending; resolve it first")
        await db.execute(
            "INSERT INTO stellar_txs (hash, purpose, ref, envelope, seq, max_ledger, max_time, state, created_ms) "
            "VALUES (?,?,?,?,?,?,?,?,?)",
            (tx.hash, purpose, ref, tx.envelope, tx.seq, tx.bounds.max_ledger, tx.bounds.max_time, PENDING, now_ms))

    @atomic
    async def record_account_tx(self, meter: str, serial: str, account_id: str, tx: BuiltTx, *, now_ms: int) -> None:
        """Fix the meter's (next) account and the transaction creating it, before it is submitted."""
        async with self._db.write_transaction() as db:
            rows = await _rows(db, "SELECT state FROM stellar_accounts WHERE meter=?", (meter,))
            if rows and rows[0][0] == "active":
                raise AlreadyPending(f"meter {meter} already has an account")
            await self._insert_tx(db, ACCOUNT, meter, tx, now_ms)
            await db.execute(
                "INSERT INTO stellar_accounts (meter, serial, account_id, state, tx_hash, created_ms) "
                "VALUES (?,?,?,'creating',?,?) ON CONFLICT(meter) DO UPDATE SET serial=excluded.serial, "
                "account_id=excluded.account_id, state='creating', tx_hash=excluded.tx_hash, detail=NULL",
                (meter, serial, account_id, tx.hash, now_ms))

    @atomic
    async def adopt_account(self, meter: str, serial: str, account_id: str, *, now_ms: int) -> None:
        """An account made for this meter earlier (a lost ledger file): use it, never make a second."""
        async with self._db.write_transaction() as db:
            await db.execute(
                "INSERT INTO stellar_accounts (meter, serial, account_id, state, created_ms, active_ms, detail) "
                "VALUES (?,?,?,'active',?,?,'adopted: found on the network') ON CONFLICT(meter) DO UPDATE SET "
                "serial=excluded.serial, account_id=excluded.account_id, state='active', active_ms=excluded.active_ms, "
                "detail=excluded.detail", (meter, serial, account_id, now_ms, now_ms))

    @atomic
    async def record_credit_tx(self, batch: Batch, tx: BuiltTx, *, now_ms: int) -> None:
        async with self._db.write_transaction() as db:
            await self._insert_tx(db, CREDIT, batch.key, tx, now_ms)

    @atomic
    async def note_attempt(self, tx: StoredTx, *, error: str, now_ms: int) -> None:
        """An attempt without a final answer: counted, and shown as the uplink's last error."""
        async with self._db.write_transaction() as db:
            await db.execute("UPDATE stellar_txs SET attempts=attempts+1, result=? WHERE hash=?", (error, tx.hash))
            await db.execute("INSERT OR IGNORE INTO uplink_cursor (uplink) VALUES (?)", (UPLINK,))
            await db.execute("UPDATE uplink_cursor SET last_error=?, last_error_ms=? WHERE uplink=?",
                             (error, now_ms, UPLINK))

    @atomic
    async def settle(self, tx: StoredTx, state: str, *, result: dict[str, Any], now_ms: int,
                     dead_detail: str | None = None) -> None:
        """The transaction's final state and what follows from it, in one write transaction.

        applied → the batch is delivered (cursor past it) or the account active; failed → the
        account failed, or the batch dead-lettered with ``dead_detail``; void → nothing else
        (the batch is rebuilt; the meter gets a new device key), unless ``dead_detail`` says
        the refusal needs an operator first.
        """
        async with self._db.write_transaction() as db:
            cursor = await db.execute(
                "UPDATE stellar_txs SET state=?, result=?, settled_ms=?, attempts=attempts+1 "
                "WHERE hash=? AND state=?", (state, json.dumps(result), now_ms, tx.hash, PENDING))
            if cursor.rowcount == 0:
                return  # settled already (by another process resolving the same bytes)
            if tx.purpose == ACCOUNT:
                if state == APPLIED:
                    await db.execute("UPDATE stellar_accounts SET state='active', active_ms=?, detail=NULL "
                                     "WHERE meter=? AND tx_hash=?", (now_ms, tx.ref, tx.hash))
                elif state == FAILED or dead_detail:
                    await db.execute("UPDATE stellar_accounts SET state='failed', detail=? WHERE meter=? AND tx_hash=?",
                                     (dead_detail or json.dumps(result), tx.ref, tx.hash))
                return
            await db.execute("INSERT OR IGNORE INTO uplink_cursor (uplink) VALUES (?)", (UPLINK,))
            if state == APPLIED:
                await self._deliver(db, tx.ref, now_ms)
            elif dead_detail:
                await db.execute("UPDATE uplink_batches SET state='dead', attempts=attempts+1, detail=? "
                                 "WHERE uplink=? AND batch_key=?", (dead_detail, UPLINK, tx.ref))
                await db.execute("UPDATE uplink_cursor SET last_error=?, last_error_ms=? WHERE uplink=?",
                                 (dead_detail, now_ms, UPLINK))

    @staticmethod
    async def _deliver(db: aiosqlite.Connection, batch_key: str, now_ms: int) -> None:
        (last_id,) = (await _rows(db, "SELECT last_id FROM uplink_batches WHERE uplink=? AND batch_key=?",
                                  (UPLINK, batch_key)))[0]
        await db.execute("UPDATE uplink_batches SET state='delivered', settled_ms=?, detail=NULL, "
                         "attempts=attempts+1 WHERE uplink=? AND batch_key=?", (now_ms, UPLINK, batch_key))
        await db.execute("UPDATE uplink_cursor SET delivered_id=MAX(delivered_id, ?), last_success_ms=?, "
                         "last_error=NULL WHERE uplink=?", (int(last_id), now_ms, UPLINK))

    @atomic
    async def deliver_empty(self, batch: Batch, *, now_ms: int) -> None:
        """A batch of zero-energy credits only: nothing to pay, delivered as it is."""
        async with self._db.write_transaction() as db:
            await self._deliver(db, batch.key, now_ms)

    @atomic
    async def next_batch(self, active: Mapping[str, str], *, max_ops: int = MAX_OPS,
                         now_ms: int) -> tuple[Batch | None, str | None]:
        """The batch to pay now (an unfinished one first), or (None, meter the next credit waits for).

        A new batch is the longest run of credits after the cursor whose meters all have an
        active account and whose non-zero credits fit in ``max_ops`` payments. It is recorded
        before it is returned: its credits are fixed from now on.
        """
        async with self._db.write_transaction() as db:
            rows = await _rows(db,
                "SELECT batch_key, first_id, last_id, state FROM uplink_batches WHERE uplink=? "
                "AND state IN ('inflight', 'dead') ORDER BY first_id LIMIT 1", (UPLINK,))
            if rows:
                key, first, last, state = rows[0]
                lines = await _rows(db, "SELECT id, meter, wh, hash FROM credits WHERE id BETWEEN ? AND ? "
                                        "AND channel = ? ORDER BY id", (first, last, PAID_CHANNEL))
                return Batch(key, int(first), int(last), state == "dead",
                             [CreditLine(int(i), str(m), int(w), str(h)) for i, m, w, h in lines]), None
            await db.execute("INSERT OR IGNORE INTO uplink_cursor (uplink) VALUES (?)", (UPLINK,))
            (cursor,) = (await _rows(db, "SELECT delivered_id FROM uplink_cursor WHERE uplink=?", (UPLINK,)))[0]
            candidates = await _rows(db, "SELECT id, meter, wh, hash, channel FROM credits WHERE id > ? "
                                         "ORDER BY id LIMIT ?", (cursor, SCAN_LIMIT))
            taken: list[CreditLine] = []
            ops = 0
            waiting: str | None = None
            span: list[int] = []  # the range's ids, import and export: an export credit joins it, never its lines
            for i, m, w, h, channel in candidates:
                if channel != PAID_CHANNEL:
                    span.append(int(i))
                    continue
                if m not in active:
                    waiting = str(m)
                    break
                if w != 0:
                    if ops == max_ops:
                        break
                    ops += 1
                taken.append(CreditLine(int(i), str(m), int(w), str(h)))
                span.append(int(i))
            if not span:
                return None, waiting
            first, last = span[0], span[-1]
            key = f"{UPLINK}:{first}-{last}"
            await db.execute(
                "INSERT INTO uplink_batches (uplink, batch_key, first_id, last_id, n_credits, state, created_ms) "
                "VALUES (?,?,?,?,?, 'inflight', ?)", (UPLINK, key, first, last, len(span), now_ms))
        return Batch(key, first, last, False, taken), None

    @atomic
    async def prune(self, *, older_than_ms: int) -> int:
        """Settled envelopes of the past (kept a while for audits); never a pending one."""
        async with self._db.write_transaction() as db:
            cursor = await db.execute("DELETE FROM stellar_txs WHERE state != ? AND settled_ms < ?",
                                      (PENDING, older_than_ms))
            return int(cursor.rowcount)


class StandaloneLedgerFile:
    """The ledger file opened by a CLI command beside (or without) the daemon.

    One connection, ``BEGIN IMMEDIATE`` per write transaction: SQLite serialises it with the
    daemon's writer (busy timeout), so both may run; only the Stellar tables are written.
    """

    BUSY_TIMEOUT_MS: Final = 10_000
    """The daemon's writer holds the lock for one commit (milliseconds); ten seconds means trouble."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._conn = db

    @classmethod
    async def open(cls, path: Path) -> StandaloneLedgerFile:
        if not path.is_file():
            raise LedgerError(f"no ledger at {path}: start the gateway once (it creates the ledger), or check data_dir")
        pending = aiosqlite.connect(path, isolation_level=None)
        thread = getattr(pending, "_thread", None)
        if thread is not None:
            thread.daemon = True
        conn = await pending
        await conn.execute(f"PRAGMA busy_timeout={cls.BUSY_TIMEOUT_MS}")
        (version,) = (await _rows(conn, "PRAGMA user_version"))[0]
        if int(version) < MIN_SCHEMA:
            await conn.close()
            raise LedgerError(f"the ledger {path} predates the Stellar uplink (schema {version}); start the daemon "
                              "of this version once so it migrates the ledger")
        return cls(conn)

    async def close(self) -> None:
        await self._conn.close()

    @contextlib.asynccontextmanager
    async def _write(self) -> Any:
        await self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
            await self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                await self._conn.execute("ROLLBACK")
            raise

    def write_transaction(self) -> contextlib.AbstractAsyncContextManager[aiosqlite.Connection]:
        cm: contextlib.AbstractAsyncContextManager[aiosqlite.Connection] = self._write()
        return cm

    async def read_rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return await _rows(self._conn, sql, params)
