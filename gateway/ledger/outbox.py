"""The outbox side of the ledger: what the uplinks read, and their delivery state.

Kept apart from :mod:`gateway.ledger.store` (the ingest and the file's lifecycle): a mixin of
:class:`~gateway.ledger.store.Ledger`, using its connections and its single writer's transaction.
Credits of every channel go through the one outbox in id order; each uplink decides what it does
with a channel (the Stellar uplink pays import only, :mod:`cloud_sync.stellar.store`).

A batch costs one fsynced transaction, its claim (:meth:`OutboxMixin.next_batch`): what must be
on disk before a POST is that its credits may have left the box (so a late reading corrects them
instead of rewriting them) and the batch's key and contents. Its settle need not be: a settle
lost in a crash only sends the same batch again, same key and bytes, which the receiver answers
from its record of the first (``cloud_sync/openapi.yaml``). So :meth:`OutboxMixin.settle_batch_later`
settles in memory at once (backlog and status follow it), and the record goes to disk with the
outbox's next transaction, the next claim as a rule, or at close (issue 11: the SD card).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiosqlite

from gateway.ledger.connection import rows as _rows


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


class OutboxMixin:
    """Delivery state of the uplinks (see :class:`~gateway.ledger.store.Ledger`)."""

    _r: aiosqlite.Connection
    _gateway_id: str
    _max_credit_id: int
    _unsaved_settles: list[tuple[PendingBatch, int]]
    """Batches delivered and settled in memory, with their settle time, oldest first, whose record
    waits for the outbox's next transaction (see the module's docstring)."""

    def _transaction(self) -> contextlib.AbstractAsyncContextManager[aiosqlite.Connection]:
        raise NotImplementedError

    @contextlib.asynccontextmanager
    async def _outbox_transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """A write transaction that first records the settles waiting in memory.

        They leave the waiting list only once the COMMIT returned: a failed transaction keeps
        them for the next one (the worst a lost settle does is send its batch again).
        """
        async with self._transaction() as db:
            saved = len(self._unsaved_settles)
            for batch, now_ms in self._unsaved_settles[:saved]:
                await db.execute(
                    "UPDATE uplink_batches SET state='delivered', settled_ms=?, detail=NULL, attempts=attempts+1 "
                    "WHERE uplink=? AND batch_key=? AND state<>'delivered'",  # once, even if a cancelled
                    (now_ms, batch.uplink, batch.batch_key))  # COMMIT left it listed after writing it
                await db.execute("UPDATE uplink_cursor SET delivered_id=MAX(delivered_id, ?), last_success_ms=? "
                                 "WHERE uplink=?", (batch.last_id, now_ms, batch.uplink))
            yield db
        # Nothing ran between COMMIT and here (no await): only later settles were appended.
        del self._unsaved_settles[:saved]

    def _unsaved(self, uplink: str) -> list[tuple[PendingBatch, int]]:
        return [(b, t) for b, t in self._unsaved_settles if b.uplink == uplink]

    async def register_uplink(self, uplink: str) -> None:
        async with self._outbox_transaction() as db:
            await db.execute("INSERT OR IGNORE INTO uplink_cursor (uplink) VALUES (?)", (uplink,))

    async def _delivered_id(self, uplink: str) -> int:
        """The uplink's cursor, settles still in memory included."""
        rows = await _rows(self._r, "SELECT delivered_id FROM uplink_cursor WHERE uplink=?", (uplink,))
        return max([int(rows[0][0]) if rows else 0] + [b.last_id for b, _ in self._unsaved(uplink)])

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
        async with self._outbox_transaction() as db:
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

    def settle_batch_later(self, batch: PendingBatch, *, now_ms: int) -> None:
        """Mark a batch delivered now, in memory; on disk with the outbox's next transaction.

        From now on the backlog, the status and the next claim are past it. Until its record is
        written a crash only sends it again (same key, same bytes): the receiver answers from its
        record, nothing is counted twice. :meth:`save_settles` (and closing the ledger) writes it.
        """
        self._unsaved_settles.append((batch, now_ms))

    async def settle_batch(self, batch: PendingBatch, *, now_ms: int) -> None:
        """Mark a batch delivered and move the cursor past it, atomically, on disk now."""
        self.settle_batch_later(batch, now_ms=now_ms)
        await self.save_settles()

    async def save_settles(self) -> None:
        """Write the settles waiting in memory (one transaction; none when nothing waits)."""
        if self._unsaved_settles:
            async with self._outbox_transaction():
                pass

    async def mark_refused(self, batch: PendingBatch, *, now_ms: int, detail: str) -> None:
        """The receiver refused the batch for a reason a retry soon will not fix.

        It is dead-lettered — shown in status with the reason, offered again only
        at the slowest retry pace — but never skipped and never dropped.
        """
        async with self._outbox_transaction() as db:
            await db.execute(
                "UPDATE uplink_batches SET state='dead', attempts=attempts+1, detail=? WHERE uplink=? AND batch_key=?",
                (detail, batch.uplink, batch.batch_key))
            await db.execute("UPDATE uplink_cursor SET last_error=?, last_error_ms=? WHERE uplink=?",
                             (f"refused {batch.batch_key}: {detail}", now_ms, batch.uplink))

    async def note_attempt_failed(self, batch: PendingBatch, *, now_ms: int, error: str) -> None:
        async with self._outbox_transaction() as db:
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
        unsaved = self._unsaved(uplink)
        if unsaved:  # settled in memory, not yet on disk: as they will be
            cursor = max([int(cursor)] + [b.last_id for b, _ in unsaved])
            success = max([t for _, t in unsaved] + ([] if success is None else [int(success)]))
        backlog, oldest = await self.pending_count(uplink)
        keys = [b.batch_key for b, _ in unsaved]
        (dead,) = await _rows(self._r,
            "SELECT COUNT(*), COALESCE(SUM(n_credits), 0) FROM uplink_batches WHERE uplink=? AND state='dead' "
            f"AND batch_key NOT IN ({','.join('?' * len(keys))})", (uplink, *keys))
        return UplinkSummary(uplink, int(cursor), backlog, oldest, success, error, error_ms,
                             int(dead[0]), int(dead[1]))
