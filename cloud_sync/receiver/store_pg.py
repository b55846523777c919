"""The PostgreSQL store: any number of stateless receivers on one database (asyncpg).

Why asyncpg (and not psycopg 3, also well kept): the receiver is an asyncio app whose cost per
credit must stay small, and asyncpg speaks PostgreSQL's binary protocol from compiled code,
caches prepared statements per connection and loads rows with binary ``COPY``
(``copy_records_to_table``) — the fastest way to insert a verified batch. It is an optional extra
(``pip install 'meter-gateway[receiver-pg]'``): the receiver is central, the box never needs it.

Concurrency. Every batch runs in one READ COMMITTED transaction that first locks its gateway's
enrolment row (``SELECT … FOR NO KEY UPDATE``), then reads what the batch needs (chain tips,
stored credits, quarter-hour history, the stored answer to its key), verifies, inserts and records
its answer. So two receivers given the same gateway's batches take turns on that one row: the
second reads, after the first committed, everything the first stored, and answers ``duplicate`` or
replays the answer. Batches of different gateways never wait for each other. A revocation updates
the same row, so it waits for a batch in flight and every later batch sees it. Why a row lock
rather than SERIALIZABLE: there is one natural lock (a gateway sends one batch at a time; its chains
are its own), it never aborts work that did not conflict (SERIALIZABLE's predicate locks on index
pages can fail unrelated inserts that share a page, and each failure costs a re-verification), and
it keeps the tip lookups plain index probes. Serialization failures, deadlocks and unique
violations, which the lock makes impossible between receivers, are still retried (a bounded number
of times) in case anything else writes the tables. A receiver killed mid-batch leaves an open
transaction whose connection the server drops: it is rolled back, nothing of it is stored, and the
lock is free for the gateway's retry.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from cloud_sync.credit import ChainTip, Credited
from cloud_sync.fast_json import dumps_compact, loads_text
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
from cloud_sync.receiver.verify import preverify
from cloud_sync.receiver_intake import Batch, BatchRefused, batch_result, examine

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Conn = PoolConnectionProxy[asyncpg.Record]

T = TypeVar("T")

APPLICATION_NAME = "cloud_sync.receiver"
"""Shown in ``pg_stat_activity``: an operator sees which connections are receivers."""
POOL_MAX = 10
"""Connections per receiver process: one per batch being examined; more would only queue on the CPU."""
CONNECT_TIMEOUT_S = 10.0
"""A reachable server accepts a connection in milliseconds; past this the receiver says it cannot reach it."""
COMMAND_TIMEOUT_S = 60.0
"""No statement of a batch takes this long on a healthy server; past it the batch is rolled back (503)."""
LOCK_TIMEOUT_S = 20.0
"""How long a batch waits for its gateway's row: another receiver is examining a batch of the same
gateway (well under a second for 5000 credits). Past it: 503, and the gateway retries."""
EXAMINE_CHUNK = 100
"""Credits verified between two looks at the event loop (about 10-20 ms of CPU). Verification runs on the
loop itself, in chunks: in a worker thread it would cost a quarter more CPU per credit in GIL hand-overs
(measured with benchmarks/fleet.py), and a receiver scales by processes, not threads."""
RETRIES = 5
"""Attempts for a batch that hits a serialization failure, deadlock or unique violation."""
MIGRATION_LOCK = 0x6D657465_72726376
"""Advisory lock key ("meterrcv") held while migrating: receivers starting together migrate once."""
_RETRYABLE = (asyncpg.SerializationError, asyncpg.DeadlockDetectedError, asyncpg.UniqueViolationError)
_UNAVAILABLE = (OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                asyncpg.CannotConnectNowError, asyncpg.TooManyConnectionsError, asyncpg.LockNotAvailableError,
                asyncpg.QueryCanceledError, asyncpg.AdminShutdownError, asyncpg.InsufficientResourcesError)
_COLUMNS = ("gateway", "meter", "channel", "seq", "kind", "start", "wh", "hash", "wire", "received_ms")


def _now_ms() -> int:
    return int(time.time() * 1000)


def redacted(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _enrolment(row: asyncpg.Record) -> Enrolment:
    return Enrolment(row["gateway"], row["public_key"], row["enrolled_ms"], row["revoked_ms"],
                     row["token_sha256"] is not None)


async def _migrate(conn: Conn) -> None:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute("CREATE TABLE IF NOT EXISTS receiver_schema (version integer PRIMARY KEY, "
                           "name text NOT NULL, applied_ms bigint NOT NULL)")
        current = await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM receiver_schema")
        known = migrations("pg")
        if current > len(known):
            raise ReceiverConfigError(f"the database is at receiver schema version {current}, newer than this "
                                      f"receiver knows ({len(known)}): upgrade this receiver")
        for migration in known[current:]:
            await conn.execute(migration.sql)
            await conn.execute("INSERT INTO receiver_schema VALUES ($1, $2, $3)", migration.version,
                               migration.name, _now_ms())


class PgStore:
    """A :class:`~cloud_sync.receiver.store.CreditStore` on PostgreSQL; holds nothing but a connection pool."""

    def __init__(self, pool: asyncpg.Pool, *, lock_timeout_s: float = LOCK_TIMEOUT_S) -> None:
        self._pool = pool
        self._lock_timeout_ms = max(1, int(lock_timeout_s * 1000))

    @classmethod
    async def open(cls, url: str, *, pool_max: int = POOL_MAX, lock_timeout_s: float = LOCK_TIMEOUT_S) -> PgStore:
        """Connect and bring the schema to this receiver's version."""
        try:
            pool = await asyncpg.create_pool(url, min_size=1, max_size=pool_max, timeout=CONNECT_TIMEOUT_S,
                                             command_timeout=COMMAND_TIMEOUT_S,
                                             server_settings={"application_name": APPLICATION_NAME})
        except (*_UNAVAILABLE, asyncpg.PostgresError, ValueError) as exc:
            raise ReceiverConfigError(f"cannot use the PostgreSQL database {redacted(url)}: {exc}; check the URL, "
                                      "that the server runs and that the user may connect") from None
        try:
            async with pool.acquire() as conn:
                await _migrate(conn)
        except BaseException:
            await pool.close()
            raise
        return cls(pool, lock_timeout_s=lock_timeout_s)

    async def close(self) -> None:
        await self._pool.close()

    async def _run(self, work: Callable[[Conn], Awaitable[T]], *, transaction: bool = True) -> T:
        """``work`` on a pooled connection (in one transaction), retried on conflicts; StoreUnavailable on outage."""
        for attempt in range(1, RETRIES + 1):
            try:
                async with self._pool.acquire() as conn:
                    if not transaction:
                        return await work(conn)
                    async with conn.transaction():
                        return await work(conn)
            except _RETRYABLE:
                if attempt == RETRIES:
                    raise StoreUnavailable("the database kept reporting conflicting writes; retry") from None
                await asyncio.sleep(random.uniform(0, 0.01 * 2**attempt))  # let the other writer finish
            except _UNAVAILABLE as exc:
                raise StoreUnavailable(f"the receiver database is unavailable ({type(exc).__name__}: {exc})") \
                    from exc
        raise AssertionError("not reached")

    async def _lock_gateway(self, conn: Conn, gateway: str) -> str:
        """Take the gateway's row lock (see the module docstring); its enrolled key, or a 403."""
        await conn.execute(f"SET LOCAL lock_timeout = {self._lock_timeout_ms}")
        row = await conn.fetchrow("SELECT public_key, revoked_ms FROM gateways WHERE gateway = $1 "
                                  "FOR NO KEY UPDATE", gateway)
        if row is None:
            raise BatchRefused(403, refused_unknown(gateway))
        if row["revoked_ms"] is not None:
            raise BatchRefused(403, refused_revoked(gateway))
        return str(row["public_key"])

    async def _snapshot(self, conn: Conn, gateway: str, credits: list[Any]) -> MemoryView:
        want = wanted(credits)
        tips: dict[Series, ChainTip] = {}
        if want.series:
            for r in await conn.fetch(
                    "SELECT m.meter, m.channel, t.seq, t.hash FROM unnest($2::text[], $3::text[]) AS m(meter, channel) "
                    "CROSS JOIN LATERAL (SELECT seq, hash FROM credits c WHERE c.gateway = $1 AND c.meter = m.meter "
                    "AND c.channel = m.channel ORDER BY seq DESC LIMIT 1) t",
                    gateway, [m for m, _ in want.series], [c for _, c in want.series]):
                tips[r["meter"], r["channel"]] = ChainTip(r["seq"], r["hash"])
        stored: dict[tuple[str, str, int], str] = {}
        keys = want.stored_keys(tips)
        if keys:
            for r in await conn.fetch(
                    "SELECT c.meter, c.channel, c.seq, c.wire FROM unnest($2::text[], $3::text[], $4::bigint[]) "
                    "AS k(meter, channel, seq) JOIN credits c ON c.gateway = $1 AND c.meter = k.meter "
                    "AND c.channel = k.channel AND c.seq = k.seq",
                    gateway, [m for m, _, _ in keys], [c for _, c, _ in keys], [s for _, _, s in keys]):
                stored[r["meter"], r["channel"], r["seq"]] = r["wire"]
        history: dict[tuple[str, str, int], list[Credited]] = {}
        starts = [(m, c, s) for m, c, s in want.starts if (m, c) in tips]  # a series with no credit has no history
        if starts:
            for r in await conn.fetch(
                    "SELECT c.meter, c.channel, c.start, c.seq, c.kind, c.wh FROM unnest($2::text[], $3::text[], "
                    "$4::bigint[]) AS k(meter, channel, start) JOIN credits c ON c.gateway = $1 AND c.meter = k.meter "
                    "AND c.channel = k.channel AND c.start = k.start ORDER BY c.seq",
                    gateway, [m for m, _, _ in starts], [c for _, c, _ in starts], [s for _, _, s in starts]):
                history.setdefault((r["meter"], r["channel"], r["start"]), []).append(
                    Credited(r["seq"], r["kind"], r["wh"]))
        return MemoryView(tips, stored, history)

    async def _examine(self, conn: Conn, batch: Batch, key: str) -> dict[str, Any]:
        view = await self._snapshot(conn, batch.gateway, batch.credits)
        # The signature checks off the event loop, on several cores (cloud_sync.receiver.verify).
        verified = await asyncio.get_running_loop().run_in_executor(
            None, functools.partial(preverify, batch.credits, key, skip=view.stored_already))
        flags = verified if verified is not None else [False] * len(batch.credits)
        results: list[dict[str, Any]] = []
        for first in range(0, len(batch.credits), EXAMINE_CHUNK):
            results += [examine(item, gateway=batch.gateway, expected_key=key, view=view, verified=ok)
                        for item, ok in zip(batch.credits[first:first + EXAMINE_CHUNK],
                                            flags[first:first + EXAMINE_CHUNK], strict=True)]
            await asyncio.sleep(0)  # let other requests move between chunks
        response = batch_result(batch.key, results)
        if view.added:
            now_ms = _now_ms()
            await conn.copy_records_to_table("credits", columns=_COLUMNS, records=[
                (batch.gateway, r.meter, r.channel, r.seq, r.kind, r.start, r.wh, r.hash, r.wire, now_ms)
                for r in view.added])
        return response

    async def ingest(self, gateway: str, batch_key: str, raw: bytes, credits: list[Any]) -> dict[str, Any]:
        digest = hashlib.sha256(raw).hexdigest()

        async def work(conn: Conn) -> dict[str, Any]:
            key = await self._lock_gateway(conn, gateway)
            prior = await conn.fetchrow("SELECT request_sha256, response FROM batches WHERE gateway = $1 "
                                        "AND batch_key = $2", gateway, batch_key)
            replay = stored_answer((prior[0], prior[1]) if prior else None, digest, batch_key)
            if replay is not None:
                return replay
            response = await self._examine(conn, Batch(gateway, batch_key, credits), key)
            await conn.execute(
                "INSERT INTO batches VALUES ($1, $2, $3, $4, $5) ON CONFLICT (gateway, batch_key) DO UPDATE SET "
                "request_sha256 = EXCLUDED.request_sha256, response = EXCLUDED.response, "
                "received_ms = EXCLUDED.received_ms", gateway, batch_key, digest, dumps_compact(response), _now_ms())
            return response

        return await self._run(work)

    async def ingest_pull(self, gateway: str, after: int, page: Sequence[tuple[int, Any]]) -> PullOutcome:
        async def work(conn: Conn) -> PullOutcome:
            key = await self._lock_gateway(conn, gateway)
            response = await self._examine(conn, Batch(gateway, f"pull:{gateway}:{after}",
                                                       [item for _, item in page]), key)
            cursor, stopped = pulled_cursor(after, page, response["results"])
            await conn.execute(
                "INSERT INTO pull_cursors VALUES ($1, $2, $3) ON CONFLICT (gateway) DO UPDATE SET "
                "cursor = GREATEST(pull_cursors.cursor, EXCLUDED.cursor), updated_ms = EXCLUDED.updated_ms",
                gateway, cursor, _now_ms())
            return PullOutcome(response, cursor, stopped)

        return await self._run(work)

    async def pull_cursor(self, gateway: str) -> int:
        async def work(conn: Conn) -> int:
            return int(await conn.fetchval("SELECT cursor FROM pull_cursors WHERE gateway = $1", gateway) or 0)
        return await self._run(work, transaction=False)

    async def principal(self, token: str) -> Principal | None:
        async def work(conn: Conn) -> Principal | None:
            row = await conn.fetchrow("SELECT gateway, revoked_ms FROM gateways WHERE token_sha256 = $1",
                                      token_digest(token))
            return Principal(row["gateway"], revoked=row["revoked_ms"] is not None) if row else None
        return await self._run(work, transaction=False)

    async def enrol(self, gateway: str, public_key: str, token_sha256: str | None, now_ms: int) -> None:
        async def work(conn: Conn) -> str:
            return str(await conn.execute(
                "INSERT INTO gateways VALUES ($1, $2, $3, $4, NULL) ON CONFLICT (gateway) DO UPDATE SET "
                "public_key = EXCLUDED.public_key, token_sha256 = EXCLUDED.token_sha256, "
                "enrolled_ms = EXCLUDED.enrolled_ms, revoked_ms = NULL WHERE gateways.revoked_ms IS NOT NULL",
                gateway, public_key, token_sha256, now_ms))
        if await self._run(work) != "INSERT 0 1":
            raise EnrolmentError(f"gateway {gateway!r} is already enrolled; `rotate-token` gives it a new token, "
                                 "`revoke` and `enrol` again changes its key")

    async def ensure_enrolled(self, gateway: str, public_key: str, now_ms: int) -> Enrolment:
        async def work(conn: Conn) -> asyncpg.Record:
            await conn.execute("INSERT INTO gateways VALUES ($1, $2, NULL, $3, NULL) ON CONFLICT DO NOTHING",
                               gateway, public_key, now_ms)
            row = await conn.fetchrow("SELECT * FROM gateways WHERE gateway = $1", gateway)
            assert row is not None  # inserted or present, and a gateway is never deleted
            return row
        found = _enrolment(await self._run(work))
        if found.public_key != public_key:
            raise EnrolmentError(f"--enroll {gateway}: the store has this gateway with another key "
                                 f"({found.public_key}); revoke and enrol it again to change its key")
        return found

    async def set_token(self, gateway: str, token_sha256: str) -> None:
        async def work(conn: Conn) -> str:
            return str(await conn.execute("UPDATE gateways SET token_sha256 = $2 WHERE gateway = $1 "
                                          "AND revoked_ms IS NULL", gateway, token_sha256))
        if await self._run(work) != "UPDATE 1":
            raise EnrolmentError(f"gateway {gateway!r} is not enrolled (or revoked): enrol it first")

    async def revoke(self, gateway: str, now_ms: int) -> None:
        async def work(conn: Conn) -> str:
            return str(await conn.execute("UPDATE gateways SET revoked_ms = $2 WHERE gateway = $1 "
                                          "AND revoked_ms IS NULL", gateway, now_ms))
        if await self._run(work) != "UPDATE 1":
            raise EnrolmentError(f"gateway {gateway!r} is not enrolled, or revoked already")

    async def gateways(self) -> list[Enrolment]:
        async def work(conn: Conn) -> list[asyncpg.Record]:
            return await conn.fetch("SELECT * FROM gateways ORDER BY gateway")
        return [_enrolment(r) for r in await self._run(work, transaction=False)]

    async def credits(self, gateway: str, meter: str, channel: str | None = None) -> list[dict[str, Any]]:
        async def work(conn: Conn) -> list[asyncpg.Record]:
            return await conn.fetch("SELECT wire FROM credits WHERE gateway = $1 AND meter = $2 "
                                    "AND ($3::text IS NULL OR channel = $3) ORDER BY channel DESC, seq",
                                    gateway, meter, channel)
        return [loads_text(r["wire"]) for r in await self._run(work, transaction=False)]

    async def summary(self, gateway: str | None = None) -> list[dict[str, Any]]:
        async def work(conn: Conn) -> list[asyncpg.Record]:
            return await conn.fetch(
                "SELECT gateway, meter, channel, COUNT(*) AS n, MIN(seq) AS a, MAX(seq) AS b, SUM(wh)::bigint AS wh "
                "FROM credits WHERE $1::text IS NULL OR gateway = $1 GROUP BY gateway, meter, channel "
                "ORDER BY gateway, meter, channel DESC", gateway)
        return [{"gateway": r["gateway"], "meter": r["meter"], "channel": r["channel"], "credits": r["n"],
                 "first_seq": r["a"], "last_seq": r["b"], "wh": r["wh"]}
                for r in await self._run(work, transaction=False)]
