"""The ledger: one SQLite file per gateway.

Durability rules (see ARCHITECTURE.md, principles 1 and 5):

* WAL mode with ``synchronous=FULL``: a COMMIT returns only after the WAL is
  fsynced, so a credit that exists for an uplink survives a power cut.
* One write connection, guarded by a lock, is the only writer. Readers (web,
  uplinks) use their own read-only connection and never block it.
* Readings reach the ledger in batches (see :mod:`gateway.ledger.writer`);
  a batch, the intervals it closes, their credits and the engine state are one
  transaction: either all of it is on disk or none of it is.
* The schema is versioned by ``PRAGMA user_version``; migrations are the
  numbered ``.sql`` files next to this module, each applied in one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import aiosqlite
import structlog
from stellar_sdk import Keypair

from cloud_sync.credit import SignedCredit
from gateway.credits import Tip, credit_for_interval
from gateway.errors import LedgerError, LedgerIntegrityError
from gateway.intervals import Interval, MeterState, Reading
from gateway.intervals.engine import Event, Grade
from gateway.ledger.ingest import IngestBatch

log = structlog.get_logger("gateway.ledger")

DB_FILE = "ledger.db"
AUTO_VACUUM_INCREMENTAL = 2
"""``PRAGMA auto_vacuum`` value of incremental mode."""
CLEAN_MARKER = "ledger.clean"
"""Present only between a clean close and the next open: no integrity scan needed then."""


def _migrations() -> list[tuple[int, str]]:
    folder = resources.files("gateway.ledger") / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.read_text(encoding="utf-8")))
    return sorted(found)


SCHEMA_VERSION = max(v for v, _ in _migrations())


async def _connect(database: str | Path, *, uri: bool = False) -> aiosqlite.Connection:
    """Open a connection whose worker thread cannot keep the process alive.

    aiosqlite runs each connection in a non-daemon thread: if the daemon dies on
    an error before it closes the ledger, the interpreter would wait forever for
    that thread at exit instead of exiting so systemd can restart it.
    Committed data is safe either way (every commit is already on disk).
    """
    pending = aiosqlite.connect(database, isolation_level=None, uri=uri)
    thread = getattr(pending, "_thread", None)
    if thread is not None:
        thread.daemon = True
    return await pending


async def _rows(db: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in await db.execute_fetchall(sql, params)]


@dataclass
class CommitResult:
    intervals: list[Interval] = field(default_factory=list)
    """Intervals closed for the first time."""
    dispositions: list[tuple[Reading, str]] = field(default_factory=list)
    """What became of each reading: a Disposition value, or why a late reading was refused."""
    revised: int = 0
    """Unsent credits rewritten in place because a late reading changed their interval."""
    corrections: int = 0
    """Correction credits issued for intervals whose credit had already left."""
    events: list[tuple[str, Event]] = field(default_factory=list)

    @property
    def credits_created(self) -> int:
        return len(self.intervals) + self.corrections


@dataclass(frozen=True)
class PendingBatch:
    uplink: str
    batch_key: str
    first_id: int
    last_id: int
    wire: list[str]
    """Each credit's stored wire JSON, sent byte for byte (never re-encoded)."""
    attempts: int
    refused: bool = False
    """The receiver refused it before: it blocks the outbox until it is accepted."""


@dataclass(frozen=True, slots=True)
class StoredInterval:
    """An interval as the ledger holds it (the source for bills, exports and the API)."""

    meter: str
    start: int
    end: int
    wh: int
    quality: str
    method: int | None
    reason: int | None


@dataclass(frozen=True)
class UplinkSummary:
    uplink: str
    delivered_id: int
    backlog: int
    oldest_pending_ms: int | None
    last_success_ms: int | None
    last_error: str | None
    last_error_ms: int | None
    dead_batches: int
    dead_credits: int


class Ledger:
    """Durable store of readings, intervals, credits and delivery state."""

    def __init__(self, path: Path, write: aiosqlite.Connection, read: aiosqlite.Connection,
                 gateway_id: str, keypair: Keypair, estimate_gap_s: float = 3600.0) -> None:
        self.path = path
        self._w = write
        self._r = read
        self._gateway_id = gateway_id
        self._keypair = keypair
        self._public_key = keypair.public_key
        self.estimate_gap_ms = int(estimate_gap_s * 1000)
        self._states: dict[str, MeterState] = {}
        self._tips: dict[str, Tip] = {}
        self._max_credit_id = 0
        self._vacuum_tried = False
        # Every use of the write connection holds this lock, so one task's
        # transaction can never swallow another task's statements.
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction on the single write connection."""
        async with self._lock:
            await self._w.execute("BEGIN IMMEDIATE")
            try:
                yield self._w
                await self._w.execute("COMMIT")
            except BaseException:
                # Also when COMMIT itself failed (disk full, I/O error): never leave a
                # transaction open, or every later BEGIN would fail too.
                if self._w.in_transaction:
                    await self._w.execute("ROLLBACK")
                raise

    def write_transaction(self) -> contextlib.AbstractAsyncContextManager[aiosqlite.Connection]:
        """The single writer's transaction, for a part with its own tables in this file (the Stellar
        uplink): its writes queue behind the ingest's like every other, never beside them."""
        return self._transaction()

    async def read_rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """A query on the read-only connection (never blocks the writer)."""
        return await _rows(self._r, sql, params)

    # ---- lifecycle -------------------------------------------------------

    @classmethod
    async def open(cls, data_dir: Path, *, gateway_id: str, keypair: Keypair,
                   estimate_gap_s: float = 3600.0) -> Ledger:
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / DB_FILE
        try:
            write = await _connect(path)
        except Exception as exc:
            raise LedgerError(f"cannot open ledger {path}: {exc}") from exc
        try:
            if (await _rows(write, "PRAGMA page_count"))[0][0] == 0:
                # A new file: auto-vacuum can only be chosen before the first page is written, and
                # switching to WAL writes it. Without it, pruning never returns space to the card.
                await write.execute("PRAGMA auto_vacuum=INCREMENTAL")
            await write.execute("PRAGMA journal_mode=WAL")
            await write.execute("PRAGMA synchronous=FULL")
            await write.execute("PRAGMA busy_timeout=5000")
            clean = path.with_name(CLEAN_MARKER)
            was_clean = clean.exists()
            clean.unlink(missing_ok=True)
            verdict = ["ok"]
            if not was_clean:
                # Only after an unclean stop (power cut, kill, crash): the check reads the whole file,
                # which takes seconds per hundred MB on an SD card. A damaged file found later by any
                # query fails loudly, the daemon restarts uncleanly, and this check runs then.
                try:
                    verdict = [r[0] for r in await _rows(write, "PRAGMA quick_check")]
                except sqlite3.DatabaseError as exc:
                    verdict = [str(exc)]
            if verdict != ["ok"]:
                raise LedgerIntegrityError(
                    f"ledger {path} failed its integrity check ({'; '.join(map(str, verdict[:3]))}); "
                    "stop the gateway, move the file aside and restore from backup"
                )
            await cls._migrate(write, path)
        except BaseException:
            await write.close()
            raise
        read = await _connect(f"file:{path}?mode=ro", uri=True)
        await read.execute("PRAGMA busy_timeout=5000")
        ledger = cls(path, write, read, gateway_id, keypair, estimate_gap_s)
        await ledger._load_states()
        return ledger

    @staticmethod
    async def _migrate(conn: aiosqlite.Connection, path: Path) -> None:
        (current,) = (await _rows(conn, "PRAGMA user_version"))[0]
        if current > SCHEMA_VERSION:
            raise LedgerError(
                f"ledger {path} has schema version {current}, newer than this gateway knows "
                f"({SCHEMA_VERSION}); install the newer gateway version again"
            )
        for version, sql in _migrations():
            if version <= current:
                continue
            try:
                await conn.executescript(f"BEGIN IMMEDIATE;\n{sql}\nPRAGMA user_version={version};\nCOMMIT;")
            except Exception as exc:
                await conn.execute("ROLLBACK") if conn.in_transaction else None
                raise LedgerError(f"migration {version} of {path} failed: {exc}") from exc
            log.info("ledger_migrated", path=str(path), version=version)

    async def _load_states(self) -> None:
        rows = await _rows(self._w,
            "SELECT meter, last_t_ms, last_wh, anchor_s, anchor_wh, anchor_grade, register_offset_wh, last_raw_wh, "
            "pending, last_seq, last_hash FROM meters")
        for meter, t, wh, a_s, a_wh, a_grade, offset, raw, pending, seq, digest in rows:
            self._states[meter] = MeterState(
                meter, t, wh, a_s, a_wh, Grade.decode(a_grade), offset, raw,
                tuple((int(pt), int(pr)) for pt, pr in json.loads(pending)))
            self._tips[meter] = Tip(seq, digest)
        (max_id,) = (await _rows(self._w, "SELECT COALESCE(MAX(id), 0) FROM credits"))[0]
        self._max_credit_id = max_id

    async def close(self, *, clean: bool = True) -> None:
        """Checkpoint and close. ``clean=False`` after a failure: the next open scans the file."""
        try:
            async with self._lock:
                await self._w.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            await self._r.close()
            await self._w.close()
        if clean:
            self.path.with_name(CLEAN_MARKER).touch()

    # ---- ingest (the single writer) ------------------------------------------

    def meter_state(self, meter: str) -> MeterState:
        return self._states.get(meter, MeterState(meter))

    @property
    def max_credit_id(self) -> int:
        return self._max_credit_id

    async def commit_readings(self, readings: Sequence[Reading], *, now_ms: int) -> CommitResult:
        """Feed readings through the interval engine and commit everything durably.

        One transaction holds the readings, the intervals they close, their
        signed credits, revisions and corrections caused by late readings, the
        engine state and the chain tips. In-memory state only moves forward once
        the COMMIT has returned, so a failed commit leaves memory and disk in agreement.
        """
        batch = IngestBatch(self, dict(self._states), dict(self._tips), now_ms)

        async def transaction() -> None:
            try:
                async with self._transaction() as db:
                    await batch.run(db, readings)
            except Exception as exc:
                raise LedgerError(f"could not commit {len(readings)} readings to {self.path}: {exc}") from exc
            # Only now, after COMMIT returned, may memory follow the disk.
            self._states = batch.states
            self._tips = batch.tips
            if batch.max_id is not None:
                self._max_credit_id = batch.max_id

        # Shielded: a cancellation (SIGTERM) arriving mid-commit must not leave the
        # transaction committed on disk but not in memory; it waits for the end.
        task = asyncio.ensure_future(transaction())
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            await asyncio.wait([task])
            raise
        return batch.result

    def _sign(self, interval: Interval, tip: Tip, now_ms: int, *, corrects: int | None = None,
              wh: int | None = None) -> tuple[SignedCredit, Tip]:
        return credit_for_interval(interval, tip, gateway_id=self._gateway_id, keypair=self._keypair,
                                   created_ms=now_ms, corrects=corrects, wh=wh, public_key=self._public_key)

    async def record_event(self, kind: str, *, t_ms: int, meter: str | None = None, detail: str = "") -> None:
        async with self._transaction() as db:
            await db.execute("INSERT INTO events (t_ms, meter, kind, detail) VALUES (?,?,?,?)",
                             (t_ms, meter, kind, detail))

    # ---- outbox side (uplinks) ---------------------------------------------

    async def register_uplink(self, uplink: str) -> None:
        async with self._transaction() as db:
            await db.execute("INSERT OR IGNORE INTO uplink_cursor (uplink) VALUES (?)", (uplink,))

    async def _delivered_id(self, uplink: str) -> int:
        rows = await _rows(self._r, "SELECT delivered_id FROM uplink_cursor WHERE uplink=?", (uplink,))
        return int(rows[0][0]) if rows else 0

    async def pending_count(self, uplink: str) -> tuple[int, int | None]:
        """Credits not yet settled for ``uplink`` and the creation time of the oldest.

        O(1) whatever the backlog: credit ids are contiguous (AUTOINCREMENT, a
        rolled-back insert does not consume an id, and credits are never
        deleted), so the backlog is the distance between the newest id and
        the uplink's cursor.
        """
        cursor = await self._delivered_id(uplink)
        count = max(0, self._max_credit_id - cursor)
        if not count:
            return 0, None
        rows = await _rows(self._r, "SELECT created_ms FROM credits WHERE id = ?", (cursor + 1,))
        return count, (int(rows[0][0]) if rows else None)

    async def pull(self, after_id: int, limit: int) -> list[tuple[int, str]]:
        """Credits for the pull API, in id order: (cursor, wire JSON text).

        Read and marked as "may have left the box" in one write transaction, so
        no late-reading revision can slip in between serving a credit and
        protecting it from being rewritten.
        """
        async with self._transaction() as db:
            rows = await _rows(db, "SELECT id, wire FROM credits WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit))
            if rows:
                await db.execute("INSERT OR IGNORE INTO uplink_cursor (uplink) VALUES ('pull')")
                await db.execute("UPDATE uplink_cursor SET delivered_id=MAX(delivered_id, ?) WHERE uplink='pull'",
                                 (int(rows[-1][0]),))
        return [(int(i), str(w)) for i, w in rows]

    async def next_batch(self, uplink: str, limit: int, *, now_ms: int) -> PendingBatch | None:
        """The batch to send now: an unsettled one from before (in flight or refused), or a new one.

        A new batch is recorded before it is returned, so its key and contents
        are fixed from the first attempt on, across restarts. A refused batch
        stays first in line: the credits after it cannot be accepted before it
        (each meter's chain must arrive in order), so nothing skips past it.
        """
        async with self._transaction() as db:
            rows = await _rows(db,
                "SELECT batch_key, first_id, last_id, attempts, state FROM uplink_batches "
                "WHERE uplink=? AND state IN ('inflight', 'dead') ORDER BY first_id LIMIT 1", (uplink,))
            if rows:
                key, first, last, attempts, state = rows[0]
            else:
                (cursor,) = (await _rows(db,
                    "SELECT delivered_id FROM uplink_cursor WHERE uplink=?", (uplink,)))[0]
                ids = await _rows(db,
                    "SELECT MIN(id), MAX(id), COUNT(*) FROM "
                    "(SELECT id FROM credits WHERE id > ? ORDER BY id LIMIT ?)", (cursor, limit))
                first, last, n = ids[0]
                if not n:
                    return None
                key = f"{self._gateway_id}:{uplink}:{first}-{last}"
                attempts, state = 0, "inflight"
                await db.execute(
                    "INSERT INTO uplink_batches (uplink, batch_key, first_id, last_id, n_credits, state, "
                    "created_ms) VALUES (?,?,?,?,?, 'inflight', ?)", (uplink, key, first, last, n, now_ms))
            wire_rows = await _rows(db,
                "SELECT wire FROM credits WHERE id BETWEEN ? AND ? ORDER BY id", (first, last))
        return PendingBatch(uplink, key, first, last, [str(w) for (w,) in wire_rows], attempts, state == "dead")

    async def settle_batch(self, batch: PendingBatch, *, now_ms: int) -> None:
        """Mark a batch delivered and move the cursor past it, atomically."""
        async with self._transaction() as db:
            await db.execute(
                "UPDATE uplink_batches SET state='delivered', settled_ms=?, detail=NULL, attempts=attempts+1 "
                "WHERE uplink=? AND batch_key=?", (now_ms, batch.uplink, batch.batch_key))
            await db.execute("UPDATE uplink_cursor SET delivered_id=MAX(delivered_id, ?), last_success_ms=? "
                             "WHERE uplink=?", (batch.last_id, now_ms, batch.uplink))

    async def mark_refused(self, batch: PendingBatch, *, now_ms: int, detail: str) -> None:
        """The receiver refused the batch for a reason a retry soon will not fix.

        It is dead-lettered — shown in status with the reason, offered again only
        at the slowest retry pace — but never skipped and never dropped.
        """
        async with self._transaction() as db:
            await db.execute(
                "UPDATE uplink_batches SET state='dead', attempts=attempts+1, detail=? WHERE uplink=? AND batch_key=?",
                (detail, batch.uplink, batch.batch_key))
            await db.execute("UPDATE uplink_cursor SET last_error=?, last_error_ms=? WHERE uplink=?",
                             (f"refused {batch.batch_key}: {detail}", now_ms, batch.uplink))

    async def note_attempt_failed(self, batch: PendingBatch, *, now_ms: int, error: str) -> None:
        async with self._transaction() as db:
            await db.execute(
                "UPDATE uplink_batches SET attempts=attempts+1, detail=? WHERE uplink=? AND batch_key=?",
                (error, batch.uplink, batch.batch_key))
            await db.execute("UPDATE uplink_cursor SET last_error=?, last_error_ms=? WHERE uplink=?",
                             (error, now_ms, batch.uplink))

    async def uplink_summary(self, uplink: str) -> UplinkSummary:
        rows = await _rows(self._r,
            "SELECT delivered_id, last_success_ms, last_error, last_error_ms FROM uplink_cursor WHERE uplink=?",
            (uplink,))
        cursor, success, error, error_ms = rows[0] if rows else (0, None, None, None)
        backlog, oldest = await self.pending_count(uplink)
        (dead,) = await _rows(self._r,
            "SELECT COUNT(*), COALESCE(SUM(n_credits), 0) FROM uplink_batches WHERE uplink=? AND state='dead'",
            (uplink,))
        return UplinkSummary(uplink, int(cursor), backlog, oldest, success, error, error_ms,
                             int(dead[0]), int(dead[1]))

    # ---- retention ---------------------------------------------------------

    async def prune_readings(self, *, older_than_ms: int, keep_latest: bool = False) -> int:
        """Delete raw readings older than a time; with ``keep_latest``, keep each meter's newest.

        "Newest" is by reading time among the readings the engine used (not the row inserted
        last, which may be an old late reading): so what is pruned is always everything before
        the readings that remain, and a late reading can never be placed between two stored
        readings with pruned ones between them. One older than all that remain is refused by
        the ingest (``before_retention``) instead of being interpolated across the pruned span.
        """
        async with self._transaction() as db:
            if keep_latest:
                # One backward probe of the time index per meter, not a scan of all readings.
                cursor = await db.execute(
                    "DELETE FROM readings WHERE t_ms < ? AND rowid NOT IN (SELECT keep FROM "
                    "(SELECT (SELECT r.rowid FROM readings r WHERE r.meter = m.meter AND r.virtual_wh IS NOT NULL "
                    "ORDER BY r.t_ms DESC LIMIT 1) AS keep FROM meters m) WHERE keep IS NOT NULL)",
                    (older_than_ms,))
            else:
                cursor = await db.execute("DELETE FROM readings WHERE t_ms < ?", (older_than_ms,))
            return int(cursor.rowcount)

    async def prune_history(self, *, older_than_ms: int) -> int:
        """Old events and settled batch records: bookkeeping that would otherwise grow forever."""
        async with self._transaction() as db:
            events = await db.execute("DELETE FROM events WHERE t_ms < ?", (older_than_ms,))
            batches = await db.execute(
                "DELETE FROM uplink_batches WHERE state='delivered' AND settled_ms < ? AND last_id < "
                "(SELECT MAX(last_id) FROM uplink_batches b2 WHERE b2.uplink = uplink_batches.uplink)",
                (older_than_ms,))
            return int(events.rowcount) + int(batches.rowcount)

    async def release_free_pages(self) -> int:
        """Give pages freed by pruning back to the file system; returns how many were released.

        Needs incremental auto-vacuum (every ledger created by this version has it; an older one
        gets it from :meth:`enable_auto_vacuum`); without it the free pages are only reused.
        """
        async with self._lock:
            (before,) = (await _rows(self._w, "PRAGMA freelist_count"))[0]
            # executescript steps the pragma to the end: a single step (execute) frees one page.
            await self._w.executescript("PRAGMA incremental_vacuum;")
            (after,) = (await _rows(self._w, "PRAGMA freelist_count"))[0]
            if before != after:
                # The file only shrinks when the WAL is copied back; also empties the grown WAL.
                await self._w.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return int(before) - int(after)

    async def auto_vacuum_enabled(self) -> bool:
        """Can :meth:`release_free_pages` return space (incremental auto-vacuum)?"""
        async with self._lock:  # the write connection: a reader's cached header may be older
            (mode,) = (await _rows(self._w, "PRAGMA auto_vacuum"))[0]
        return int(mode) == AUTO_VACUUM_INCREMENTAL

    def file_bytes(self) -> int:
        """The ledger's size on disk: the database file and its WAL."""
        total = 0
        for file in (self.path, self.path.with_name(self.path.name + "-wal")):
            with contextlib.suppress(FileNotFoundError):
                total += file.stat().st_size
        return total

    @property
    def vacuum_tried(self) -> bool:
        """:meth:`enable_auto_vacuum` already ran (or failed) in this process."""
        return self._vacuum_tried

    async def enable_auto_vacuum(self) -> bool:
        """Switch a ledger created without auto-vacuum (by an older version) to incremental.

        A one-off VACUUM: it rewrites the whole file (through the WAL, then back), so it needs
        about twice the file's size free and holds the writer for as long as that takes. The
        caller decides when (see :mod:`gateway.ledger.maintenance`); never from
        :meth:`open`, where it would delay the start past systemd's start timeout.
        Tried at most once per process: a VACUUM that failed (disk full) is not repeated every
        few minutes, rewriting the card each time; the next start tries again.
        """
        if self._vacuum_tried:
            return False
        self._vacuum_tried = True
        async with self._lock:
            try:
                await self._w.execute(f"PRAGMA auto_vacuum={AUTO_VACUUM_INCREMENTAL}")
                await self._w.execute("VACUUM")
                await self._w.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                log.error("ledger_vacuum_failed", path=str(self.path), error=str(exc))
                return False
            (mode,) = (await _rows(self._w, "PRAGMA auto_vacuum"))[0]
        return int(mode) == AUTO_VACUUM_INCREMENTAL

    # ---- queries for the web and CLI -------------------------------------------

    async def last_intervals(self) -> dict[str, tuple[int, int, str]]:
        """Each meter's newest interval: one index probe per meter, not a scan of the history."""
        out: dict[str, tuple[int, int, str]] = {}
        for meter in await self.meter_ids():
            rows = await _rows(self._r, "SELECT start, wh, quality FROM intervals WHERE meter=? "
                                        "ORDER BY start DESC LIMIT 1", (meter,))
            if rows:
                out[meter] = (int(rows[0][0]), int(rows[0][1]), str(rows[0][2]))
        return out

    async def intervals(self, meter: str, start: int, end: int) -> list[tuple[int, int, int, str]]:
        rows = await _rows(self._r,
            'SELECT start, "end", wh, quality FROM intervals WHERE meter=? AND start>=? AND start<? ORDER BY start',
            (meter, start, end))
        return [(int(a), int(b), int(c), str(d)) for a, b, c, d in rows]

    async def stored_intervals(self, meter: str, start: int, end: int) -> list[StoredInterval]:
        """Intervals of ``meter`` starting in [start, end) (Unix seconds), in time order."""
        rows = await _rows(self._r,
            'SELECT meter, start, "end", wh, quality, method, reason FROM intervals '
            "WHERE meter=? AND start>=? AND start<? ORDER BY start", (meter, start, end))
        return [StoredInterval(m, int(a), int(b), int(w), str(q), mt, rs) for m, a, b, w, q, mt, rs in rows]

    async def meter_ids(self) -> list[str]:
        """Every meter the ledger has seen, sorted."""
        return [str(m) for (m,) in await _rows(self._r, "SELECT meter FROM meters ORDER BY meter")]

    async def credit_count(self) -> int:
        (row,) = await _rows(self._r, "SELECT COUNT(*) FROM credits")
        return int(row[0])

