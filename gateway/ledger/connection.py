"""Opening the ledger's SQLite connections: checked, migrated, never on a file that must be refused.

The order matters: the lineage and damage records and the file's header are looked at before
SQLite touches the file (SQLite would recover a WAL or create an empty database); then the
connection is set up, checked (:mod:`gateway.ledger.integrity`), migrated, and matched against
the key. Every SQLite or OS error on the way becomes the gateway's own error with advice
(:func:`gateway.ledger.faults.translate`); nothing reaches the user as a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import structlog

from cloud_sync.keys import Keypair
from gateway.errors import LedgerError, LedgerIntegrityError
from gateway.ledger import integrity, lineage
from gateway.ledger.faults import DAMAGED_ADVICE, translate
from gateway.ledger.lineage import DB_FILE
from gateway.sdnotify import start_extended

log = structlog.get_logger("gateway.ledger")

OLD_CLEAN_MARKER = "ledger.clean"
"""Left by versions that skipped the check after a clean stop; removed on open."""
JOURNAL_SIZE_LIMIT = 4 * 1024 * 1024
"""A checkpointed WAL is cut back to this, not to zero: its allocated space is where SQLite can still
write (prune readings, return pages) when the disk is full. The auto-checkpoint runs when the WAL
reaches this size too (``wal_autocheckpoint`` in pages of the file: 4096 at :data:`PAGE_SIZE`, 1024
in a ledger made before it with 4 KiB pages): each checkpoint copies back every distinct page of
its WAL, and four times fewer of them rewrite the pages every commit touches (meters, interior
pages, the last leaves) four times less often (issue 11, ``benchmarks/drain.py --volume-only``)."""
PAGE_SIZE = 1024
"""Bytes per page of a ledger file made by this version (an older file keeps its 4 KiB pages).

Every commit writes each page it changes whole, and a quarter-hour commit changes the last page or
two of every table and index (and page 1, the meters, the pointer map, the sequence), each with a
few hundred bytes new: at 1 KiB pages that costs a third of what it costs at SQLite's 4 KiB, and
the card's write volume follows (``benchmarks/drain.py --volume-only``; 512-byte pages measured
worse: rows of a few hundred bytes then split more pages than they save)."""
BUSY_TIMEOUT_MS = 5000
"""Only the ledger's own connections use the file; waiting longer would only hide a stuck one."""

_T = TypeVar("_T")


async def settled(aw: Awaitable[_T]) -> _T:
    """Await ``aw`` to its end even if the caller is cancelled meanwhile; then re-raise the cancellation.

    A statement handed to a connection's worker thread runs whether or not its caller still waits.
    Deciding anything before it ran (a ROLLBACK skipped because BEGIN had not run yet) leaves the
    connection inside a transaction nobody owns: every later BEGIN fails, and the checkpoint at
    close fails with "database table is locked" (seen at shutdown, when the daemon cancels
    tasks that were just starting a write).
    """
    task = asyncio.ensure_future(aw)
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        if not task.cancelled():
            task.exception()  # retrieved: the caller learns of its cancellation instead
        raise asyncio.CancelledError
    return task.result()


def migrations() -> list[tuple[int, str]]:
    folder = resources.files("gateway.ledger") / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.read_text(encoding="utf-8")))
    return sorted(found)


SCHEMA_VERSION = max(v for v, _ in migrations())


async def connect(database: str | Path, *, uri: bool = False) -> aiosqlite.Connection:
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


async def rows(db: aiosqlite.Connection, sql: str,
               params: Sequence[Any] | Mapping[str, Any] = ()) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in await db.execute_fetchall(sql, params)]


@dataclass
class Opened:
    path: Path
    write: aiosqlite.Connection
    read: aiosqlite.Connection
    existed: bool
    """The file held a ledger before (else it was just created: record its lineage once it works)."""
    fully_checked: bool
    """The whole file was checked; otherwise the bounded check ran and the full one is still due."""


async def open_connections(data_dir: Path, *, gateway_id: str, keypair: Keypair,
                           full_check_at_start_bytes: int, require_own_key: bool = False) -> Opened:
    path = data_dir / DB_FILE
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise translate(exc, path, f"create the data directory {data_dir}") from None
    existed = lineage.has_ledger(path)
    if existed:
        integrity.refuse_if_marked(path)
        integrity.precheck(path)
    else:
        lineage.refuse_new_chains(data_dir, gateway_id)
        integrity.refuse_if_marked(path)  # a marker without its ledger is stale: removed
    with contextlib.suppress(OSError):
        path.with_name(OLD_CLEAN_MARKER).unlink(missing_ok=True)
    full = not existed or path.stat().st_size <= full_check_at_start_bytes
    try:
        write = await connect(path)
    except (sqlite3.Error, OSError) as exc:
        raise translate(exc, path, "open the ledger") from None
    try:
        if (await rows(write, "PRAGMA page_count"))[0][0] == 0:
            # A new file: auto-vacuum and the page size can only be chosen before the first page is
            # written, and switching to WAL writes it. Without auto-vacuum, pruning never returns space
            # to the card. The page size goes first (after auto-vacuum, SQLite ignores it).
            await write.execute(f"PRAGMA page_size={PAGE_SIZE}")
            await write.execute("PRAGMA auto_vacuum=INCREMENTAL")
        await write.execute("PRAGMA journal_mode=WAL")
        await write.execute("PRAGMA synchronous=FULL")
        await write.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        await write.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
        (page_size,) = (await rows(write, "PRAGMA page_size"))[0]
        await write.execute(f"PRAGMA wal_autocheckpoint={JOURNAL_SIZE_LIMIT // int(page_size)}")
        verdict = await integrity.start_check(write, full=full)
        if verdict != ["ok"]:
            finding = integrity.verdict_text(verdict)
            integrity.mark_damaged(data_dir, finding)
            raise LedgerIntegrityError(f"ledger {path} failed its integrity check ({finding}); {DAMAGED_ADVICE}",
                                       finding=finding)
        await migrate(write, path)
        if require_own_key:
            await check_key(write, path, keypair)
    except BaseException as exc:
        with contextlib.suppress(sqlite3.Error):
            await write.close()
        if isinstance(exc, sqlite3.Error | OSError):
            raise translate(exc, path, "open the ledger") from None
        raise
    try:
        read = await connect(f"file:{path}?mode=ro", uri=True)
        await read.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    except (sqlite3.Error, OSError) as exc:
        with contextlib.suppress(sqlite3.Error):
            await write.close()
        raise translate(exc, path, "open the ledger for reading") from None
    return Opened(path, write, read, existed, full)


async def check_key(conn: aiosqlite.Connection, path: Path, keypair: Keypair) -> None:
    """A ledger whose credits another key signed cannot be continued with this one."""
    found = await rows(conn, "SELECT json_extract(wire, '$.credit.gateway_key') FROM credits "
                             "ORDER BY id DESC LIMIT 1")
    if found and found[0][0] not in (None, keypair.public_key):
        raise LedgerError(
            f"the credits in {path} are signed by key {found[0][0]}, but this gateway's key file holds "
            f"{keypair.public_key}: put the matching key file back; to start with the new key, move the "
            "ledger aside and follow README, 'Lost or damaged ledger'")


async def migrate(conn: aiosqlite.Connection, path: Path) -> None:
    (current,) = (await rows(conn, "PRAGMA user_version"))[0]
    if current > SCHEMA_VERSION:
        raise LedgerError(
            f"ledger {path} has schema version {current}, newer than this gateway knows "
            f"({SCHEMA_VERSION}); install the newer gateway version again"
        )
    pending = [(version, sql) for version, sql in migrations() if version > current]
    if not pending:
        return
    # Migration 7 stores the credits' hashes as raw bytes; SQLite before 3.41 has no unhex().
    await conn.create_function("ledger_unhex", 1, _unhex, deterministic=True)
    # A migration rewrites tables: on a big ledger it outlasts systemd's start timeout unless renewed.
    async with start_extended("ledger_migration"):
        for version, sql in pending:
            try:
                await conn.executescript(f"BEGIN IMMEDIATE;\n{sql}\nPRAGMA user_version={version};\nCOMMIT;")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    await conn.rollback()
                raise translate(exc, path, f"apply migration {version}") from None
            log.info("ledger_migrated", path=str(path), version=version)


def _unhex(text: object) -> bytes | None:
    """Hex text to bytes for a migration's SQL (NULL for anything else: that credit is then kept whole)."""
    try:
        return bytes.fromhex(text) if isinstance(text, str) else None
    except ValueError:
        return None

