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
import json
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite
import structlog

from cloud_sync.credit import SignedCredit
from cloud_sync.keys import Keypair
from gateway.channels import Channel
from gateway.credits import Tip, credit_for_interval
from gateway.errors import LedgerError, LedgerIntegrityError
from gateway.intervals import Interval, MeterState, Reading
from gateway.intervals.engine import Event, Grade
from gateway.ledger import integrity, lineage
from gateway.ledger.connection import SCHEMA_VERSION, open_connections, settled
from gateway.ledger.connection import rows as _rows
from gateway.ledger.faults import DAMAGED_ADVICE, translate
from gateway.ledger.ingest import IngestBatch
from gateway.ledger.late import SeriesKey
from gateway.ledger.lineage import DB_FILE
from gateway.ledger.outbox import OutboxMixin, PendingBatch, UplinkSummary
from gateway.ledger.queries import QueriesMixin, StoredInterval

log = structlog.get_logger("gateway.ledger")

__all__ = ["DB_FILE", "SCHEMA_VERSION", "ChainSeed", "CommitResult", "Ledger", "PendingBatch", "SeriesKey",
           "StoredInterval", "UplinkSummary"]

AUTO_VACUUM_INCREMENTAL = 2
"""``PRAGMA auto_vacuum`` value of incremental mode."""
PRUNE_CHUNK = 5000
"""Readings deleted per transaction: a few hundred pages of WAL each, so pruning fits in the WAL's
own space on a full disk, and never holds the writer for long."""
_READING_KEY = "t_ms, meter, channel, disposition, register_wh"
"""The readings table's primary key (schema 7: WITHOUT ROWID, time first)."""
VACUUM_CHUNK_PAGES = 256
"""Free pages returned to the file system per step (256 KiB at 1 KiB pages, 1 MiB in an older 4 KiB file)."""


@dataclass(frozen=True, slots=True)
class ChainSeed:
    """Where a (meter, channel)'s chain and engine go on from in a new ledger (see :mod:`gateway.ledger.recovery`).

    The channel is ``state.channel``; ``state.meter`` the meter.
    """

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


class Ledger(OutboxMixin, QueriesMixin):
    """Durable store of readings, intervals, credits and delivery state.

    Every series is a (meter, channel) (:mod:`gateway.channels`): its engine state, its intervals,
    and its credits' sequence and hash chain are its own; the outbox holds all of them in id order.
    """

    def __init__(self, path: Path, write: aiosqlite.Connection, read: aiosqlite.Connection,
                 gateway_id: str, keypair: Keypair, estimate_gap_s: float = 3600.0) -> None:
        self.path = path
        self._w = write
        self._r = read
        self._gateway_id = gateway_id
        self._keypair = keypair
        self._public_key = keypair.public_key
        self.estimate_gap_ms = int(estimate_gap_s * 1000)
        self._states: dict[SeriesKey, MeterState] = {}
        self._tips: dict[SeriesKey, Tip] = {}
        self._max_credit_id = 0
        self._unsaved_settles: list[tuple[PendingBatch, int]] = []
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
        async with self._lock, self._begun() as db:
            yield db

    @contextlib.asynccontextmanager
    async def _begun(self) -> AsyncIterator[aiosqlite.Connection]:
        """:meth:`_transaction` for a caller already holding the lock."""
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
            "SELECT meter, channel, last_t_ms, last_wh, anchor_s, anchor_wh, anchor_grade, register_offset_wh, "
            "last_raw_wh, pending, last_seq, last_hash FROM meters")
        for meter, channel_name, t, wh, a_s, a_wh, a_grade, offset, raw, pending, seq, digest in rows:
            channel = Channel(channel_name)
            self._states[meter, channel] = MeterState(
                meter, t, wh, a_s, a_wh, Grade.decode(a_grade), offset, raw,
                tuple((int(pt), int(pr)) for pt, pr in json.loads(pending)), channel=channel)
            self._tips[meter, channel] = Tip(seq, digest)
        (max_id,) = (await _rows(self._w, "SELECT COALESCE(MAX(id), 0) FROM credits"))[0]
        self._max_credit_id = max_id

    async def checkpoint(self) -> None:
        """Copy the WAL back into the database file now and start it over.

        SQLite does it by itself as the WAL fills; this is for the write-volume benchmark, whose
        measured day starts from an empty WAL and ends with every page it wrote in the file.
        """
        try:
            async with self._lock:
                await settled(_rows(self._w, "PRAGMA wal_checkpoint(TRUNCATE)"))
        except sqlite3.Error as exc:
            raise translate(exc, self.path, "checkpoint the WAL") from None

    async def close(self) -> None:
        """Checkpoint and close; never fails on the storage.

        A checkpoint that cannot run (disk full) leaves the committed transactions in the WAL,
        where the next open finds them: nothing is lost by closing without it. The settles still
        in memory are written first; should that fail, their batches are only sent again.
        """
        try:
            await self.save_settles()
        except sqlite3.Error as exc:
            log.warning("ledger_settle_failed", path=str(self.path),
                        error=str(translate(exc, self.path, "record the delivered batches at close")))
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

    def meter_state(self, meter: str, channel: Channel = Channel.IMPORT) -> MeterState:
        """The engine state of one (meter, channel) as committed."""
        return self._states.get((meter, channel), MeterState(meter, channel=channel))

    def series_states(self) -> list[MeterState]:
        """The committed engine state of every (meter, channel) the ledger holds."""
        return list(self._states.values())

    @property
    def max_credit_id(self) -> int:
        return self._max_credit_id

    async def commit_readings(self, readings: Sequence[Reading], *, now_ms: int) -> CommitResult:
        """Feed readings through the interval engine and commit everything durably.

        One transaction holds the readings, the intervals they close, their
        signed credits, revisions and corrections caused by late readings, the
        engine state and the chain tips. In-memory state only moves forward once
        the COMMIT has returned, so a failed commit leaves memory and disk in agreement.

        The engine runs and the credits are signed before BEGIN (under the writer's lock, so on the
        committed state); a batch without late readings is then written in one step on the
        connection's thread, BEGIN to fsynced COMMIT (:meth:`IngestBatch.write_one_step`).
        """
        batch = IngestBatch(self, {}, {}, now_ms)

        async def transaction() -> None:
            try:
                async with self._lock:
                    batch.states, batch.tips = dict(self._states), dict(self._tips)
                    batch.plan(readings)
                    if batch.in_one_step:
                        await batch.prepare_one_step()
                        await batch.commit_one_step(self._w)
                    else:
                        async with self._begun() as db:
                            await batch.run(db)
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

    async def start_chains(self, seeds: Iterable[ChainSeed], *, now_ms: int) -> None:
        """Give a new ledger each (meter, channel)'s chain tip and engine state, in one transaction.

        For recovery only (:mod:`gateway.ledger.recovery`): the next credit of each series links
        on to ``seed.tip``, and its energy is counted from ``seed.state``'s anchor.
        """
        if self._tips or self._max_credit_id:
            raise LedgerError(f"{self.path} already holds chains; they can only be started in a new ledger")
        seeds = list(seeds)
        rows, events = [], []
        for seed in seeds:
            s, tip = seed.state, seed.tip
            rows.append((s.meter, s.channel.value, s.last_t_ms, s.last_wh, s.anchor_s, s.anchor_wh,
                         s.anchor_grade.quality.value, tip.seq, tip.hash, s.anchor_grade.encode(), s.offset_wh,
                         s.last_raw_wh))
            events.append((now_ms, s.meter, "chain_recovered",
                           f"{s.channel} continues after seq {tip.seq} ({tip.hash}) from {s.anchor_wh} Wh at "
                           f"{s.anchor_s}"))
        try:
            async with self._transaction() as db:
                await db.executemany(
                    "INSERT INTO meters (meter, channel, last_t_ms, last_wh, anchor_s, anchor_wh, anchor_quality, "
                    "last_seq, last_hash, anchor_grade, register_offset_wh, last_raw_wh) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    rows)
                await db.executemany("INSERT INTO events (t_ms, meter, kind, detail) VALUES (?,?,?,?)", events)
        except sqlite3.Error as exc:
            raise translate(exc, self.path, "start the recovered chains") from None
        for seed in seeds:
            self._states[seed.state.meter, seed.state.channel] = seed.state
            self._tips[seed.state.meter, seed.state.channel] = seed.tip

    # ---- retention ---------------------------------------------------------

    async def prune_readings(self, *, older_than_ms: int, keep_latest: bool = False) -> int:
        """Delete raw readings older than a time; with ``keep_latest``, keep each (meter, channel)'s newest.

        "Newest" is by reading time among the readings the engine used (not the row inserted
        last, which may be an old late reading): so what is pruned is always everything before
        the readings that remain, and a late reading can never be placed between two stored
        readings with pruned ones between them. One older than all that remain is refused by
        the ingest (``before_retention``) instead of being interpolated across the pruned span.

        Deleted :data:`PRUNE_CHUNK` at a time, oldest first, each chunk its own transaction: on a
        full disk every chunk fits in the WAL's space, and the writer is never held for long.
        """
        if keep_latest:
            # One backward probe of the time-first key per meter, not a scan of all readings.
            keep = ("SELECT m.meter, m.channel, (SELECT r.t_ms FROM readings r WHERE r.meter = m.meter "
                    "AND r.channel = m.channel AND r.virtual_wh IS NOT NULL ORDER BY r.t_ms DESC LIMIT 1) "
                    "FROM meters m")
            victims = (f"SELECT {_READING_KEY} FROM readings WHERE t_ms < ? AND NOT (virtual_wh IS NOT NULL "
                       f"AND (meter, channel, t_ms) IN ({keep})) ORDER BY t_ms LIMIT {PRUNE_CHUNK}")
        else:
            victims = f"SELECT {_READING_KEY} FROM readings WHERE t_ms < ? ORDER BY t_ms LIMIT {PRUNE_CHUNK}"
        total = 0
        while True:
            try:
                async with self._transaction() as db:
                    cursor = await db.execute(f"DELETE FROM readings WHERE ({_READING_KEY}) IN ({victims})",
                                              (older_than_ms,))
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
                    # a reader's snapshot (the background check) must not hold the writer. Its row is read
                    # to the end: an unread one leaves the statement active until its cursor is collected,
                    # and every COMMIT meanwhile fails with "SQL statements in progress".
                    await settled(_rows(self._w, "PRAGMA wal_checkpoint(PASSIVE)"))
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
