"""Where reports read intervals from, and a read-only way to open the ledger beside a running daemon.

Reports need one query: a meter's stored intervals of one channel (import by default, or export) in a
time range. The daemon's web layer already
holds an open :class:`~gateway.ledger.store.Ledger`; the CLI must not open one, because
``Ledger.open`` is a *writer*: it creates a missing data directory (so a wrong ``data_dir`` would
produce an empty ledger and a bill of zero), runs migrations, and on close checkpoints the WAL —
work that competes with the daemon's single writer. :class:`ReadOnlyLedger` opens the file with
SQLite's ``mode=ro`` instead: in WAL mode a reader never blocks the writer and sees only committed
transactions, so ``meter-gateway bill`` is safe while the daemon runs.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import aiosqlite

from gateway.channels import Channel
from gateway.errors import LedgerError
from gateway.ledger.queries import series_intervals_sql, series_params
from gateway.ledger.store import DB_FILE, StoredInterval

MIN_SCHEMA_VERSION = 5
"""First ledger schema with the interval ``channel`` column (0005) that every report query filters on; the
``method`` and ``reason`` columns exports need came with schema 2."""

BUSY_TIMEOUT_MS = 5000


class IntervalSource(Protocol):
    """Anything that can list a meter's stored intervals; the daemon's ``Ledger`` is one."""

    async def stored_intervals(self, meter: str, start: int, end: int, *,
                               channel: Channel = Channel.IMPORT) -> list[StoredInterval]:
        """Intervals of ``meter``'s ``channel`` starting in ``[start, end)`` (Unix seconds), in time order."""
        ...


class ReadOnlyLedger:
    """A read-only connection to an existing ledger file (see module docstring for why)."""

    def __init__(self, path: Path, db: aiosqlite.Connection) -> None:
        self.path = path
        self._db = db

    @classmethod
    async def open(cls, data_dir: Path) -> ReadOnlyLedger:
        path = data_dir / DB_FILE
        if not path.is_file():
            raise LedgerError(
                f"no ledger at {path}: check data_dir in the config (the daemon creates the ledger on its first start)"
            )
        try:
            pending = aiosqlite.connect(f"file:{path}?mode=ro", uri=True)
            thread = getattr(pending, "_thread", None)
            if thread is not None:  # never let an unclosed connection keep the CLI process alive
                thread.daemon = True
            db = await pending
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot open ledger {path} read-only: {exc} (run as the gateway's user)") from exc
        try:
            await db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            rows = list(await db.execute_fetchall("PRAGMA user_version"))
            version = int(rows[0][0])
        except sqlite3.Error as exc:
            await db.close()
            raise LedgerError(f"cannot read ledger {path}: {exc}") from exc
        if version < MIN_SCHEMA_VERSION:
            await db.close()
            raise LedgerError(
                f"ledger {path} has schema version {version}; reports need version {MIN_SCHEMA_VERSION} or "
                "later: start the daemon once with this gateway version so it migrates the ledger"
            )
        return cls(path, db)

    async def stored_intervals(self, meter: str, start: int, end: int, *,
                               channel: Channel = Channel.IMPORT) -> list[StoredInterval]:
        try:
            rows = await self._db.execute_fetchall(
                series_intervals_sql('meter, start, "end", wh, quality, method, reason'),
                series_params(meter, channel, start, end))
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot read {channel} intervals of {meter} from {self.path}: {exc}") from exc
        return [StoredInterval(str(m), int(a), int(b), int(w), str(q), mt, rs, channel)
                for m, a, b, w, q, mt, rs in rows]

    async def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read-only query (bills and other reports that keep their own SQL)."""
        try:
            return [tuple(row) for row in await self._db.execute_fetchall(sql, params)]
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot read {self.path}: {exc}") from exc

    async def close(self) -> None:
        await self._db.close()

    async def __aenter__(self) -> ReadOnlyLedger:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()
