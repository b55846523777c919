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
* Every start checks the file (:mod:`gateway.ledger.integrity`) and refuses to start new
  credit chains for a key whose ledger is gone (:mod:`gateway.ledger.lineage`).
* Failures of the storage are raised as the gateway's own errors (:mod:`gateway.ledger.faults`):
  a full disk, an I/O error and a damaged file each call for something different.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite
import structlog

from cloud_sync.credit import SignedCredit
from cloud_sync.keys import Keypair
from gateway.credits import Tip, credit_for_interval
from gateway.errors import LedgerError, LedgerIntegrityError
from gateway.intervals import Interval, MeterState, Reading
from gateway.intervals.engine import Event, Grade
from gateway.ledger import integrity, lineage
from gateway.ledger.connection import SCHEMA_VERSION, open_connections, settled
from gateway.ledger.connection import rows as _rows
from gateway.ledger.faults import DAMAGED_ADVICE, translate
from gateway.ledger.ingest import IngestBatch
from gateway.ledger.lineage import DB_FILE

log = structlog.get_logger("gateway.ledger")

__all__ = ["DB_FILE", "SCHEMA_VERSION", "ChainSeed", "CommitResult", "Ledger", "PendingBatch", "StoredInterval",
           "UplinkSummary"]

AUTO_VACUUM_INCREMENTAL = 2
"""``PRAGMA auto_vacuum`` value of incremental mode."""
PRUNE_CHUNK = 5000
"""Readings deleted per transaction: a few hundred pages of WAL each, so pruning fits in the WAL's
own space on a full disk, and never holds the writer for long."""
VACUUM_CHUNK_PAGES = 256
"""Free pages returned to the file system per step (1 MB at 4 KiB pages)."""


@dataclass(frozen=True, slots=True)
class ChainSeed:
    """Where a meter's chain and engine go on from in a new ledger (see :mod:`gateway.ledger.recovery`)."""

    tip: Tip
    state: MeterState


@dataclass
class CommitResult:
    intervals: list[Interval] = field(default_factory=list)
    """Intervals closed for the first time: the first :data:`gateway.ledger.ingest.KEPT_INTERVALS` of them
    (a long outage closes tens of thousands; memory stays flat). ``intervals_closed`` counts them all."""
    intervals_closed: int = 0
    dispositions: list[tuple[Reading, str]] = field(default_factory=list)
    """What became of each reading: a Disposition value, or why a late reading was refused."""
    revised: int = 0
    """Unsent credits rewritten in place because a late reading changed their interval."""
    corrections: int = 0
    """Correction credits issued for intervals whose credit had already left."""
    events: list[tuple[str, Event]] = field(default_factory=list)

    @property
    def credits_created(self) -> int:
        return self.intervals_closed + self.corrections


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
        self.fully_checked = False
        """The whole file passed a full check in this process (at start, or in the background since)."""
        # Every use of the write connection holds this lock, so one task's
        # transaction can never swallow another task's statements.
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction on the single write connection.

        Cancellation-safe: BEGIN, COMMIT and ROLLBACK are each awaited to their end, and the
        rollback is decided on the worker thread (a no-op without a transaction), after every
        statement queued before it. Also when COMMIT itself failed (disk full, I/O error): no
        transaction is ever left open, or every later BEGIN would fail too.
        """
        async with self._lock:
            try:
                await settled(self._w.execute("BEGIN IMMEDIATE"))
                yield self._w
                await settled(self._w.execute("COMMIT"))
            except BaseException:
                try:
                    await settled(self._w.rollback())
                except sqlite3.Error as exc:
                    log.error("ledger_rollback_failed", path=str(self.path), error=str(exc))
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
                   estimate_gap_s: float = 3600.0, full_check_at_start_bytes: int | None = None,
                   require_own_key: bool = False) -> Ledger:
        """Open (or create) the ledger in ``data_dir``, checked; refuses rather than run on a bad file.

        Raises :class:`~gateway.errors.LedgerIntegrityError` for a damaged file,
        :class:`~gateway.errors.LedgerMissing` when this gateway's chains were started from a
        ledger that is gone, :class:`~gateway.errors.LedgerDiskFull` /
        :class:`~gateway.errors.LedgerStorageError` when the storage fails. A file bigger than
        ``full_check_at_start_bytes`` (default :data:`~gateway.ledger.integrity.FULL_CHECK_AT_START_BYTES`)
        gets the bounded check here; run :meth:`background_check` once the daemon is up.
        ``require_own_key`` (the daemon): refuse a ledger whose credits another key signed.
        """
        if full_check_at_start_bytes is None:
            full_check_at_start_bytes = integrity.FULL_CHECK_AT_START_BYTES
        opened = await open_connections(data_dir, gateway_id=gateway_id, keypair=keypair,
                                        full_check_at_start_bytes=full_check_at_start_bytes,
                                        require_own_key=require_own_key)
        path, write, read, existed = opened.path, opened.write, opened.read, opened.existed
        ledger = cls(path, write, read, gateway_id, keypair, estimate_gap_s)
        ledger.fully_checked = opened.fully_checked
        try:
            await ledger._load_states()
            if not existed:
                lineage.record(data_dir, lineage.Lineage(gateway_id, keypair.public_key))
        except BaseException as exc:
            await ledger.close()
            if isinstance(exc, sqlite3.Error | OSError):
                raise translate(exc, path, "open the ledger") from None
            raise
        return ledger

    async def background_check(self) -> None:
        """The full check a big file did not get at start; raises LedgerIntegrityError on damage.

        Runs beside the daemon (its own connection and thread, lowest priority); the daemon then
        stops and marks the file, so the next start refuses at once. Cancelling it interrupts the check.
        """
        if self.fully_checked:
            return
        log.info("ledger_check_started", path=str(self.path), size_mb=round(self.file_bytes() / 1_048_576))
        verdict = await integrity.FullCheck(self.path).run()
        if verdict is None:
            return
        if verdict != ["ok"]:
            finding = integrity.verdict_text(verdict)
            raise LedgerIntegrityError(f"ledger {self.path} failed its integrity check ({finding}); "
                                       + DAMAGED_ADVICE, finding=finding)
        self.fully_checked = True
        log.info("ledger_check_done", path=str(self.path))

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

    async def close(self) -> None:
        """Checkpoint and close; never fails on the storage.

        A checkpoint that cannot run (disk full) leaves the committed transactions in the WAL,
        where the next open finds them: nothing is lost by closing without it.
        """
        try:
            async with self._lock:
                await settled(self._w.execute("PRAGMA wal_checkpoint(TRUNCATE)"))
        except sqlite3.Error as exc:
            log.warning("ledger_checkpoint_failed", path=str(self.path),
                        error=str(translate(exc, self.path, "checkpoint the WAL at close")))
        for conn in (self._r, self._w):
            try:
                await settled(conn.close())
            except sqlite3.Error as exc:
                log.warning("ledger_close_failed", path=str(self.path), error=str(exc))

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
            except Exception as exc:  # a value SQLite cannot bind raises OverflowError, not sqlite3.Error
                raise translate(exc, self.path, f"commit {len(readings)} readings") from exc
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
        try:
            async with self._transaction() as db:
                await db.execute("INSERT INTO events (t_ms, meter, kind, detail) VALUES (?,?,?,?)",
                                 (t_ms, meter, kind, detail))
        except sqlite3.Error as exc:
            raise translate(exc, self.path, f"record event {kind}") from None

    async def start_chains(self, seeds: Mapping[str, ChainSeed], *, now_ms: int) -> None:
        """Give a new ledger each meter's chain tip and engine state, in one transaction.

        For recovery only (:mod:`gateway.ledger.recovery`): the next credit of each meter links
        on to ``seed.tip``, and its energy is counted from ``seed.state``'s anchor.
        """
        if self._tips or self._max_credit_id:
            raise LedgerError(f"{self.path} already holds chains; they can only be started in a new ledger")
        rows, events = [], []
        for meter, seed in seeds.items():
            s, tip = seed.state, seed.tip
            rows.append((meter, s.last_t_ms, s.last_wh, s.anchor_s, s.anchor_wh, s.anchor_grade.quality.value,
                         tip.seq, tip.hash, s.anchor_grade.encode(), s.offset_wh, s.last_raw_wh))
            events.append((now_ms, meter, "chain_recovered",
                           f"continues after seq {tip.seq} ({tip.hash}) from {s.anchor_wh} Wh at {s.anchor_s}"))
        try:
            async with self._transaction() as db:
                await db.executemany(
                    "INSERT INTO meters (meter, last_t_ms, last_wh, anchor_s, anchor_wh, anchor_quality, last_seq, "
                    "last_hash, anchor_grade, register_offset_wh, last_raw_wh) VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
                await db.executemany("INSERT INTO events (t_ms, meter, kind, detail) VALUES (?,?,?,?)", events)
        except sqlite3.Error as exc:
            raise translate(exc, self.path, "start the recovered chains") from None
        for meter, seed in seeds.items():
            self._states[meter] = seed.state
            self._tips[meter] = seed.tip

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

    async def next_batch(self, uplink: str, limit: int, *, now_ms: int,
                         after_id: int | None = None) -> PendingBatch | None:
        """The batch to send now: an unsettled one from before (in flight or refused), or a new one.

        A new batch is recorded before it is returned, so its key and contents
        are fixed from the first attempt on, across restarts. A refused batch
        stays first in line: the credits after it cannot be accepted before it
        (each meter's chain must arrive in order), so nothing skips past it.

        ``after_id``: the batch that follows one still in flight (ending at that id), fixed while
        it travels, so that the next POST does not wait for this transaction's fsync.
        """
        async with self._transaction() as db:
            rows = await _rows(db,
                "SELECT batch_key, first_id, last_id, attempts, state FROM uplink_batches "
                "WHERE uplink=? AND state IN ('inflight', 'dead') AND first_id > ? ORDER BY first_id LIMIT 1",
                (uplink, after_id or 0))
            if rows:
                key, first, last, attempts, state = rows[0]
            else:
                (cursor,) = (await _rows(db,
                    "SELECT delivered_id FROM uplink_cursor WHERE uplink=?", (uplink,)))[0]
                cursor = max(int(cursor), after_id or 0)
                ids = await _rows(db,
                    "SELECT MIN(id), MAX(id), COUNT(*) FROM "
                    "(SELECT id FROM credits WHERE id > ? ORDER BY id LIMIT ?)", (cursor, limit))
                first, last, n = ids[0]
                if not n:
                    return None
                # The ids alone repeat in a ledger started anew under the same key (recover-chains): the
                # receiver would take its first batch for a reused Idempotency-Key with another body.
                hashes = await _rows(db, "SELECT hash FROM credits WHERE id IN (?, ?) ORDER BY id", (first, last))
                tag = hashlib.sha256("".join(str(h) for (h,) in hashes).encode()).hexdigest()[:16]
                key = f"{self._gateway_id}:{uplink}:{first}-{last}:{tag}"
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

        Deleted :data:`PRUNE_CHUNK` at a time, oldest first, each chunk its own transaction: on a
        full disk every chunk fits in the WAL's space, and the writer is never held for long.
        """
        if keep_latest:
            # One backward probe of the time index per meter, not a scan of all readings.
            victims = ("SELECT rowid FROM readings WHERE t_ms < ? AND rowid NOT IN (SELECT keep FROM "
                       "(SELECT (SELECT r.rowid FROM readings r WHERE r.meter = m.meter AND r.virtual_wh IS NOT NULL "
                       "ORDER BY r.t_ms DESC LIMIT 1) AS keep FROM meters m) WHERE keep IS NOT NULL) "
                       f"ORDER BY t_ms LIMIT {PRUNE_CHUNK}")
        else:
            victims = f"SELECT rowid FROM readings WHERE t_ms < ? ORDER BY t_ms LIMIT {PRUNE_CHUNK}"
        total = 0
        while True:
            try:
                async with self._transaction() as db:
                    cursor = await db.execute(f"DELETE FROM readings WHERE rowid IN ({victims})", (older_than_ms,))
                    n = int(cursor.rowcount)
            except sqlite3.Error as exc:
                raise translate(exc, self.path, f"prune raw readings (after {total} pruned)") from None
            total += n
            if n < PRUNE_CHUNK:
                return total

    async def prune_history(self, *, older_than_ms: int) -> int:
        """Old events and settled batch records: bookkeeping that would otherwise grow forever."""
        try:
            async with self._transaction() as db:
                events = await db.execute("DELETE FROM events WHERE t_ms < ?", (older_than_ms,))
                batches = await db.execute(
                    "DELETE FROM uplink_batches WHERE state='delivered' AND settled_ms < ? AND last_id < "
                    "(SELECT MAX(last_id) FROM uplink_batches b2 WHERE b2.uplink = uplink_batches.uplink)",
                    (older_than_ms,))
                return int(events.rowcount) + int(batches.rowcount)
        except sqlite3.Error as exc:
            raise translate(exc, self.path, "prune old events") from None

    async def release_free_pages(self) -> int:
        """Give pages freed by pruning back to the file system; returns how many were released.

        Needs incremental auto-vacuum (every ledger created by this version has it; an older one
        gets it from :meth:`enable_auto_vacuum`); without it the free pages are only reused.
        In steps of :data:`VACUUM_CHUNK_PAGES`, each checkpointed: the file shrinks as it goes,
        and each step's WAL fits in the space the last one returned (a full disk included).
        """
        released = 0
        try:
            while True:
                async with self._lock:
                    (before,) = (await _rows(self._w, "PRAGMA freelist_count"))[0]
                    if before:
                        # executescript steps the pragma to the end: one step (execute) frees one page.
                        await settled(self._w.executescript(f"PRAGMA incremental_vacuum({VACUUM_CHUNK_PAGES});"))
                    (after,) = (await _rows(self._w, "PRAGMA freelist_count"))[0]
                    # The file only shrinks when the WAL is copied back, and the WAL starts over in its
                    # own space only after that (cut back to JOURNAL_SIZE_LIMIT, not to zero). Passive:
                    # a reader's snapshot (the background check) must not hold the writer.
                    await settled(self._w.execute("PRAGMA wal_checkpoint(PASSIVE)"))
                released += int(before) - int(after)
                if not after or after >= before:
                    break
        except sqlite3.Error as exc:
            raise translate(exc, self.path, f"return free pages to the file system (after {released})") from None
        return released

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

