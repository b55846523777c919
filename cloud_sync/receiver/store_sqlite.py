"""The embedded store: one SQLite file, one receiver process (the demo's and the tests' default).

:class:`ReceiverStore` is synchronous (the demo and tests call it directly); :class:`SqliteStore`
gives the app its :class:`~cloud_sync.receiver.store.CreditStore` interface by running each call
in a worker thread. Every write takes SQLite's write lock first (``BEGIN IMMEDIATE``), which is
the one lock a single file has: the enrolment is read, the batch examined and stored, and its
answer recorded inside it. Another process holding the file past the busy timeout makes a batch
:class:`~cloud_sync.receiver.store.StoreUnavailable` (503), with nothing stored.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cloud_sync.credit import ChainTip, Credited
from cloud_sync.fast_json import dumps_compact
from cloud_sync.receiver.enrolment import (
    Enrolment,
    EnrolmentError,
    Principal,
    refused_revoked,
    refused_unknown,
    token_digest,
)
from cloud_sync.receiver.migrations import migrations
from cloud_sync.receiver.snapshot import MemoryView, Series, wanted
from cloud_sync.receiver.store import (
    PullOutcome,
    ReceiverConfigError,
    StoreUnavailable,
    pulled_cursor,
    stored_answer,
)
from cloud_sync.receiver.verify import preverify, start_checks
from cloud_sync.receiver_intake import Batch, BatchRefused, examine_batch

BUSY_TIMEOUT_S = 5.0
"""How long a write waits for another process holding the file (an enrolment CLI commits in milliseconds)."""
CACHE_KIB = 64 * 1024
"""SQLite's page cache (its default is 2 MiB): the two indexes of a few million credits stay in memory, so a
batch's lookups and inserts seldom read a page back from the file (at 200 000 credits inserting a batch took
twice as long with the default)."""
AUTOCHECKPOINT_PAGES = 8000
"""WAL pages (32 MiB at 4 KiB) before a commit copies them into the database file (SQLite's default is 1000).
A batch of 500 credits writes about 400 pages, mostly index leaves that the next batches write again: a
checkpoint every 20 batches copies each such leaf once instead of once every two or three batches."""


def _now_ms() -> int:
    return int(time.time() * 1000)


_KEYS = ("WITH k(meter, channel, n) AS (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), "
         "json_extract(value, '$[2]') FROM json_each(?2)) ")
"""The keys a batch asks about, passed as one JSON array of [meter, channel, seq or start] (``json_each``)."""
_TIPS = (_KEYS + "SELECT k.meter, k.channel, c.seq, c.hash FROM k CROSS JOIN credits c ON c.gateway = ?1 "
         "AND c.meter = k.meter AND c.channel = k.channel AND c.seq = (SELECT MAX(m.seq) FROM credits m "
         "WHERE m.gateway = ?1 AND m.meter = k.meter AND m.channel = k.channel)")
_STORED = (_KEYS + "SELECT c.meter, c.channel, c.seq, c.wire FROM k CROSS JOIN credits c ON c.gateway = ?1 "
           "AND c.meter = k.meter AND c.channel = k.channel AND c.seq = k.n")
_HISTORY = (_KEYS + "SELECT c.meter, c.channel, c.start, c.seq, c.kind, c.wh FROM k CROSS JOIN credits c "
            "ON c.gateway = ?1 AND c.meter = k.meter AND c.channel = k.channel AND c.start = k.n ORDER BY c.seq")
_INSERT = ("INSERT INTO credits (gateway, meter, channel, seq, kind, start, wh, hash, wire, received_ms) "
           "VALUES (?,?,?,?,?,?,?,?,?,?)")


def _snapshot(db: sqlite3.Connection, gateway: str, credits: list[Any]) -> MemoryView:
    """What a batch can ask about, in three queries (the PostgreSQL store's :mod:`..snapshot`, the same rows).

    One query per question per credit (four per credit) was a third of the time a batch spent
    outside the signature checks. The keys travel as one JSON array each (``json_each``).
    """
    want = wanted(credits)
    tips: dict[Series, ChainTip] = {}
    if want.series:
        series = dumps_compact([[m, c, 0] for m, c in want.series])
        for meter, channel, seq, digest in db.execute(_TIPS, (gateway, series)):
            tips[meter, channel] = ChainTip(seq, digest)
    stored: dict[tuple[str, str, int], str] = {}
    keys = want.stored_keys(tips)
    if keys:
        for meter, channel, seq, wire in db.execute(_STORED, (gateway, dumps_compact(keys))):
            stored[meter, channel, seq] = wire
    history: dict[tuple[str, str, int], list[Credited]] = {}
    starts = [k for k in want.starts if (k[0], k[1]) in tips]  # a series with no credit has no history
    if starts:
        for meter, channel, start, seq, kind, wh in db.execute(_HISTORY, (gateway, dumps_compact(starts))):
            history.setdefault((meter, channel, start), []).append(Credited(seq, kind, wh))
    return MemoryView(tips, stored, history)


def _insert(db: sqlite3.Connection, gateway: str, view: MemoryView) -> None:
    if view.added:
        now_ms = _now_ms()
        db.executemany(_INSERT, [(gateway, r.meter, r.channel, r.seq, r.kind, r.start, r.wh, r.hash, r.wire, now_ms)
                                 for r in view.added])


def _examine(db: sqlite3.Connection, batch: Batch, key: str) -> dict[str, Any]:
    """Examine a batch inside the current transaction and store what it accepts (one ``executemany``).

    A batch big enough is examined while its signatures are being checked (``verify.start_checks``): the
    verdicts are first worked out assuming every credit not stored before passes its check, and what they
    accept is inserted under a savepoint. When the checks end, that is exactly what examining with their
    flags gives if every such credit did pass (the flag only spares ``examine`` its own check; a stored
    credit is examined without one, and checks itself where its verdict needs it). If one did not (a
    forged or malformed credit), the savepoint is rolled back and the batch examined again with the real
    flags, from a fresh read: the verdicts are always those of examining credit by credit with each check.
    """
    pending = start_checks(batch.credits, key)
    view = _snapshot(db, batch.gateway, batch.credits)
    if pending is None:
        response = examine_batch(batch, key, view, preverify(batch.credits, key, skip=view.stored_already))
        _insert(db, batch.gateway, view)
        return response
    pending.skip(view.stored_already)
    fresh = [not view.stored_already(item) for item in batch.credits]
    db.execute("SAVEPOINT optimistic")
    try:
        response = examine_batch(batch, key, view, fresh)
        _insert(db, batch.gateway, view)
    finally:
        flags = pending.flags()  # never leave checks running on a batch whose transaction is over
    if all(ok for ok, new in zip(flags, fresh, strict=True) if new):
        db.execute("RELEASE optimistic")
        return response
    db.execute("ROLLBACK TO optimistic")
    db.execute("RELEASE optimistic")
    view = _snapshot(db, batch.gateway, batch.credits)
    response = examine_batch(batch, key, view, flags)
    _insert(db, batch.gateway, view)
    return response


def _enrolment(row: tuple[Any, ...]) -> Enrolment:
    gateway, key, token, enrolled, revoked = row
    return Enrolment(gateway, key, enrolled, revoked, token is not None)


class ReceiverStore:
    """SQLite storage of verified credits and enrolments; one lock makes each call atomic.

    ``enrolled`` (gateway → ``G…`` key) are enrolled at open unless they are already (the
    command line's ``--enroll``, kept for the demo and tests).
    """

    def __init__(self, path: Path, enrolled: Mapping[str, str] | None = None) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT_S)
        self._lock = threading.Lock()
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            self._db.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES}")
            self._migrate()
            for gateway, key in (enrolled or {}).items():
                self.ensure_enrolled(gateway, key, _now_ms())
        except BaseException:
            self._db.close()
            raise

    def _migrate(self) -> None:
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        known = migrations("sqlite")
        if version > len(known):
            raise ReceiverConfigError(f"the receiver database is at schema version {version}, newer than this "
                                      f"receiver knows ({len(known)}): upgrade this receiver")
        for migration in known:
            if migration.version > version:
                # executescript commits first and runs the text as given: the BEGIN/COMMIT make it one transaction.
                self._db.executescript(f"BEGIN IMMEDIATE;\n{migration.sql}\n"
                                       f"PRAGMA user_version = {migration.version};\nCOMMIT;")

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction holding the file's write lock; rolled back on any error."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:  # locked past the busy timeout, disk I/O error
                raise StoreUnavailable(f"the receiver database is unavailable ({exc})") from exc
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _active_key(self, db: sqlite3.Connection, gateway: str) -> str:
        row = db.execute("SELECT public_key, revoked_ms FROM gateways WHERE gateway=?", (gateway,)).fetchone()
        if row is None:
            raise BatchRefused(403, refused_unknown(gateway))
        if row[1] is not None:
            raise BatchRefused(403, refused_revoked(gateway))
        return str(row[0])

    def ingest(self, gateway: str, batch_key: str, raw: bytes, credits: list[Any]) -> dict[str, Any]:
        """Examine and store one batch in one transaction; return its ``BatchResult``.

        Raises ``IdempotencyConflict`` when ``batch_key`` was answered before for other
        bytes (that answer stands, nothing is examined), ``BatchRefused`` (403) for a
        gateway not enrolled or revoked, ``StoreUnavailable`` when the file is locked.
        """
        digest = hashlib.sha256(raw).hexdigest()
        try:
            with self._write() as db:
                key = self._active_key(db, gateway)
                prior = db.execute("SELECT request_sha256, response FROM batches WHERE gateway=? AND batch_key=?",
                                   (gateway, batch_key)).fetchone()
                replay = stored_answer(prior, digest, batch_key)
                if replay is not None:
                    return replay
                response = _examine(db, Batch(gateway, batch_key, credits), key)
                db.execute("INSERT OR REPLACE INTO batches VALUES (?,?,?,?,?)",
                           (gateway, batch_key, digest, dumps_compact(response), _now_ms()))
                return response
        except sqlite3.OperationalError as exc:  # disk full, I/O error mid-batch: rolled back, nothing stored
            raise StoreUnavailable(f"the receiver database failed ({exc})") from exc

    def ingest_pull(self, gateway: str, after: int, page: Sequence[tuple[int, Any]]) -> PullOutcome:
        with self._write() as db:
            key = self._active_key(db, gateway)
            batch = Batch(gateway, f"pull:{gateway}:{after}", [item for _, item in page])
            response = _examine(db, batch, key)
            cursor, stopped = pulled_cursor(after, page, response["results"])
            db.execute("INSERT INTO pull_cursors VALUES (?,?,?) ON CONFLICT (gateway) DO UPDATE "
                       "SET cursor = MAX(cursor, excluded.cursor), updated_ms = excluded.updated_ms",
                       (gateway, cursor, _now_ms()))
            return PullOutcome(response, cursor, stopped)

    def pull_cursor(self, gateway: str) -> int:
        row = self._db.execute("SELECT cursor FROM pull_cursors WHERE gateway=?", (gateway,)).fetchone()
        return int(row[0]) if row else 0

    def principal(self, token_sha256: str) -> Principal | None:
        row = self._db.execute("SELECT gateway, revoked_ms FROM gateways WHERE token_sha256=?",
                               (token_sha256,)).fetchone()
        return Principal(row[0], revoked=row[1] is not None) if row else None

    def enrol(self, gateway: str, public_key: str, token_sha256: str | None, now_ms: int) -> None:
        with self._write() as db:
            row = db.execute("SELECT revoked_ms, enrolled_ms FROM gateways WHERE gateway=?", (gateway,)).fetchone()
            if row is not None and row[0] is None:
                raise EnrolmentError(f"gateway {gateway!r} is already enrolled; `rotate-token` gives it a new "
                                     "token, `revoke` and `enrol` again changes its key")
            db.execute("INSERT INTO gateways VALUES (?,?,?,?,NULL) ON CONFLICT (gateway) DO UPDATE SET "
                       "public_key=excluded.public_key, token_sha256=excluded.token_sha256, "
                       "enrolled_ms=excluded.enrolled_ms, revoked_ms=NULL", (gateway, public_key, token_sha256, now_ms))

    def ensure_enrolled(self, gateway: str, public_key: str, now_ms: int) -> Enrolment:
        with self._write() as db:
            db.execute("INSERT OR IGNORE INTO gateways VALUES (?,?,NULL,?,NULL)", (gateway, public_key, now_ms))
            row = db.execute("SELECT * FROM gateways WHERE gateway=?", (gateway,)).fetchone()
        found = _enrolment(row)
        if found.public_key != public_key:
            raise EnrolmentError(f"--enroll {gateway}: the store has this gateway with another key "
                                 f"({found.public_key}); revoke and enrol it again to change its key")
        return found

    def set_token(self, gateway: str, token_sha256: str) -> None:
        with self._write() as db:
            if db.execute("UPDATE gateways SET token_sha256=? WHERE gateway=? AND revoked_ms IS NULL",
                          (token_sha256, gateway)).rowcount != 1:
                raise EnrolmentError(f"gateway {gateway!r} is not enrolled (or revoked): enrol it first")

    def revoke(self, gateway: str, now_ms: int) -> None:
        with self._write() as db:
            if db.execute("UPDATE gateways SET revoked_ms=? WHERE gateway=? AND revoked_ms IS NULL",
                          (now_ms, gateway)).rowcount != 1:
                raise EnrolmentError(f"gateway {gateway!r} is not enrolled, or revoked already")

    def gateways(self) -> list[Enrolment]:
        return [_enrolment(r) for r in self._db.execute("SELECT * FROM gateways ORDER BY gateway").fetchall()]

    def credits(self, gateway: str, meter: str, channel: str | None = None) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT wire FROM credits WHERE gateway=? AND meter=? AND (? IS NULL OR channel = ?) "
            "ORDER BY channel DESC, seq", (gateway, meter, channel, channel)).fetchall()
        return [json.loads(w) for (w,) in rows]

    def summary(self, gateway: str | None = None) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT gateway, meter, channel, COUNT(*), MIN(seq), MAX(seq), SUM(wh) FROM credits "
            "WHERE ? IS NULL OR gateway = ? GROUP BY gateway, meter, channel "
            "ORDER BY gateway, meter, channel DESC", (gateway, gateway)
        ).fetchall()
        return [{"gateway": g, "meter": m, "channel": c, "credits": n, "first_seq": a, "last_seq": b, "wh": wh}
                for g, m, c, n, a, b, wh in rows]


class SqliteStore:
    """:class:`ReceiverStore` as a ``CreditStore``: each call in a worker thread, off the event loop."""

    def __init__(self, store: ReceiverStore) -> None:
        self.sync = store

    async def principal(self, token: str) -> Principal | None:
        return await asyncio.to_thread(self.sync.principal, token_digest(token))

    async def ingest(self, gateway: str, batch_key: str, raw: bytes, credits: list[Any]) -> dict[str, Any]:
        return await asyncio.to_thread(self.sync.ingest, gateway, batch_key, raw, credits)

    async def credits(self, gateway: str, meter: str, channel: str | None = None) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.sync.credits, gateway, meter, channel)

    async def summary(self, gateway: str | None = None) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.sync.summary, gateway)

    async def enrol(self, gateway: str, public_key: str, token_sha256: str | None, now_ms: int) -> None:
        await asyncio.to_thread(self.sync.enrol, gateway, public_key, token_sha256, now_ms)

    async def ensure_enrolled(self, gateway: str, public_key: str, now_ms: int) -> Enrolment:
        return await asyncio.to_thread(self.sync.ensure_enrolled, gateway, public_key, now_ms)

    async def set_token(self, gateway: str, token_sha256: str) -> None:
        await asyncio.to_thread(self.sync.set_token, gateway, token_sha256)

    async def revoke(self, gateway: str, now_ms: int) -> None:
        await asyncio.to_thread(self.sync.revoke, gateway, now_ms)

    async def gateways(self) -> list[Enrolment]:
        return await asyncio.to_thread(self.sync.gateways)

    async def pull_cursor(self, gateway: str) -> int:
        return await asyncio.to_thread(self.sync.pull_cursor, gateway)

    async def ingest_pull(self, gateway: str, after: int, page: Sequence[tuple[int, Any]]) -> PullOutcome:
        return await asyncio.to_thread(self.sync.ingest_pull, gateway, after, page)

    async def close(self) -> None:
        self.sync.close()
