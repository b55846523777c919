"""Is the ledger file intact? Checked at every start, within the start's time budget, then in full.

A full ``PRAGMA quick_check`` reads every page in b-tree order. On a 200-meter, 35-day ledger
(1.2 GB; ``benchmarks/integrity_check.py``) it took 5-15 s with the file cached and 27-29 s cold on
a 2-core x86 VM whose disk reads 450-1400 MB/s sequentially, 11-12 times a sequential read of the
file: on a Raspberry Pi's SD card that is minutes, past systemd's start timeout, with no meter read
meanwhile. So the check is split (``Ledger.open`` with it: 48 ms cached, 81 ms cold on that ledger):

* **at every start, before anything is written** (milliseconds on that ledger): the file's
  header and size (a zeroed header or a truncated file is refused before SQLite parses it), a
  ``quick_check`` of the schema and the small tables (meter state, chain tips, uplink cursors and
  batches, events), and a read of the newest rows of the big tables and their indexes, the
  pages a power cut can have caught mid-write. A file up to :data:`FULL_CHECK_AT_START_BYTES` is
  checked in full right away instead;
* **right after the start**, for a bigger file: the full ``quick_check`` in the background, on
  its own read-only connection and thread at the lowest CPU priority, while the daemon runs.
  Damage found there stops the daemon and leaves :data:`DAMAGED_MARKER`, so the next start
  refuses at once instead of running on the damaged file until the check finds it again.

Every refusal says what to do (:data:`~gateway.ledger.faults.DAMAGED_ADVICE`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import struct
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import aiosqlite
import structlog

from gateway.errors import LedgerIntegrityError
from gateway.ledger.faults import DAMAGED_ADVICE
from gateway.ledger.lineage import has_ledger

log = structlog.get_logger("gateway.ledger")

FULL_CHECK_AT_START_BYTES = 16 * 1024 * 1024
"""Files up to this size are checked in full before the start (about a second cold on an SD card);
bigger ones get the bounded check at start and the full one in the background."""
TAIL_ROWS = 500
"""Newest rows read from each big table and index at start: the last commits' pages and more."""
TIME_ORDERED_SCHEMA = 7
"""From this schema on (migration 0007) intervals and credits are keyed by time first."""
TAIL_PER_METER = 8
"""On a ledger from before schema 7 (checked before it is migrated): newest intervals and credits read per
(meter, channel), the last leaf of each series' stretch of the (meter, channel, ...) keys."""
SMALL_TABLES = ("sqlite_schema", "meters", "uplink_cursor", "uplink_batches", "events")
DAMAGED_MARKER = "ledger.damaged"
"""Left next to the ledger when a check or a write found it damaged; holds the finding."""
_MAGIC = b"SQLite format 3\x00"
_HEADER = 100


def _damaged(path: Path, what: str) -> LedgerIntegrityError:
    return LedgerIntegrityError(f"ledger {path} is damaged: {what}; {DAMAGED_ADVICE}")


def precheck(path: Path) -> None:
    """Refuse a file whose header or size is wrong, before SQLite reads or recovers anything."""
    try:
        with open(path, "rb") as fh:
            header = fh.read(_HEADER)
            size = os.fstat(fh.fileno()).st_size
    except OSError as exc:
        raise LedgerIntegrityError(f"cannot read ledger {path} ({exc.strerror}); check the file's owner and mode, "
                                   "and the SD card") from None
    if len(header) < _HEADER:
        raise _damaged(path, f"the file is truncated to {size} bytes, shorter than a database header")
    if header[:16] != _MAGIC:
        raise _damaged(path, "its first bytes are not a SQLite header (zeroed or overwritten)")
    (raw_page_size,) = struct.unpack(">H", header[16:18])
    page_size = 65536 if raw_page_size == 1 else raw_page_size
    if page_size < 512 or page_size & (page_size - 1):
        raise _damaged(path, f"its header gives an impossible page size ({raw_page_size})")
    wal = path.with_name(path.name + "-wal")
    wal_pending = wal.exists() and wal.stat().st_size > 0
    # A power cut while a checkpoint copies the WAL back can leave the file's last page torn (its length
    # ends mid-page). That page's content is still in the WAL, which is only reset once the copy was
    # synced: SQLite reads it from there and the next checkpoint rewrites it and sets the length again.
    if size % page_size and not wal_pending:
        raise _damaged(path, f"its size ({size} bytes) is not a whole number of {page_size}-byte pages: truncated")
    change_counter, pages = struct.unpack(">II", header[24:32])
    (valid_for,) = struct.unpack(">I", header[92:96])
    # In WAL mode the file only reaches its full length when the WAL is copied back into it,
    # so a file shorter than its header says is only proof of truncation without a pending WAL.
    if pages and valid_for == change_counter and not wal_pending and size < pages * page_size:
        raise _damaged(path, f"the file holds {size // page_size} of its {pages} pages: truncated")


async def _tail_probes(db: aiosqlite.Connection) -> None:
    """Read the newest rows of every big table and index: SQLite raises on any damaged page it crosses.

    Each value is summed so that the rows themselves are read (overflow pages of long credits too),
    in one statement per table: a few hundred milliseconds at most on a 200-meter ledger.
    """
    n, k = TAIL_ROWS, TAIL_PER_METER
    common = (f"SELECT SUM(length(wire) + seq) FROM (SELECT * FROM credits ORDER BY id DESC LIMIT {n})",
              "SELECT SUM(seq) FROM sqlite_sequence")
    (version,) = next(iter(await db.execute_fetchall("PRAGMA user_version")))  # checked before it is migrated
    if int(version) >= TIME_ORDERED_SCHEMA:
        # Every big b-tree is keyed by time first, so the pages the last commits wrote are the last
        # pages of each: the newest rows of each table and index, in key order.
        layout: tuple[str, ...] = (f"SELECT SUM(wh + register_end_wh + credit_id + length(meter)) FROM "
                                   f"(SELECT * FROM intervals ORDER BY start DESC LIMIT {n})",
                                   f"SELECT SUM(t_ms + register_wh + length(meter)) FROM "
                                   f"(SELECT * FROM readings ORDER BY t_ms DESC LIMIT {n})")
    else:  # keyed by series first: the last commits wrote the end of every series' stretch
        layout = (f"SELECT SUM(t_ms + register_wh + length(meter)) FROM "
                  f"(SELECT * FROM readings ORDER BY rowid DESC LIMIT {n})",
                  f"SELECT SUM(t_ms) FROM (SELECT t_ms, meter FROM readings INDEXED BY readings_by_time "
                  f"ORDER BY t_ms DESC LIMIT {n})",
                  f"SELECT SUM((SELECT SUM(wh + register_end_wh) FROM (SELECT * FROM intervals i WHERE i.meter = "
                  f"m.meter AND i.channel = m.channel ORDER BY start DESC LIMIT {k})) + (SELECT SUM(seq) FROM "
                  f"(SELECT seq FROM credits c WHERE c.meter = m.meter AND c.channel = m.channel ORDER BY seq DESC "
                  f"LIMIT {k}))) FROM meters m",)
    for sql in common + layout:
        await db.execute_fetchall(sql)


async def start_check(db: aiosqlite.Connection, *, full: bool) -> list[str]:
    """The check at start, on the write connection before anything is written: ``["ok"]`` or findings."""
    try:
        if full:
            checked = [str(r[0]) for r in await db.execute_fetchall("PRAGMA quick_check")]
            (version,) = next(iter(await db.execute_fetchall("PRAGMA user_version")))
            if checked != ["ok"] or int(version) < TIME_ORDERED_SCHEMA:
                return checked
            return _chain_findings(await db.execute_fetchall(_DUPLICATE_SEQS),
                                   await db.execute_fetchall(_FOREIGN_CREDITS))
        tables = {str(name) for (name,) in await db.execute_fetchall(
            "SELECT name FROM sqlite_schema WHERE type='table'")} | {"sqlite_schema"}
        found: list[str] = []
        for table in SMALL_TABLES:
            if table in tables:
                found += [str(r[0]) for r in await db.execute_fetchall(f"PRAGMA quick_check({table})")
                          if r[0] != "ok"]
        if {"readings", "credits", "intervals", "meters"} <= tables:
            await _tail_probes(db)
        return found or ["ok"]
    except sqlite3.DatabaseError as exc:
        return [str(exc)]


def _lower_priority() -> None:
    """This thread only (Linux: a thread is a task) at the lowest CPU priority, so meters come first."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


class FullCheck:
    """The full ``quick_check`` on its own connection and thread; cancelling it interrupts SQLite."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stop = threading.Event()
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _work(self) -> list[str] | None:
        _lower_priority()
        try:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        except sqlite3.Error as exc:
            return [str(exc)]
        with self._lock:
            self._conn = conn
        try:
            if self._stop.is_set():
                return None
            found = [str(r[0]) for r in conn.execute("PRAGMA quick_check")]
            if self._stop.is_set():
                return None
            return found if found != ["ok"] else chain_keys_check(conn)
        except sqlite3.OperationalError as exc:
            if self._stop.is_set():
                return None  # interrupted: the daemon is stopping
            return [str(exc)]
        except sqlite3.DatabaseError as exc:
            return [str(exc)]
        finally:
            with self._lock:
                self._conn = None
            conn.close()

    def _interrupt(self) -> None:
        self._stop.set()
        with self._lock:
            if self._conn is not None:
                self._conn.interrupt()

    async def run(self) -> list[str] | None:
        """``["ok"]``, the findings, or None if interrupted."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[list[str] | None] = loop.create_future()

        def work() -> None:
            result = self._work()

            def deliver() -> None:
                if not done.done():
                    done.set_result(result)

            with contextlib.suppress(RuntimeError):  # the loop may be gone at exit
                loop.call_soon_threadsafe(deliver)

        # A thread of its own, not the loop's executor: its priority is lowered for good.
        threading.Thread(target=work, name="ledger-check", daemon=True).start()
        try:
            return await done
        finally:
            if not done.done():
                self._interrupt()


_DUPLICATE_SEQS = ("SELECT meter, channel, seq, COUNT(*) FROM credits GROUP BY meter, channel, seq "
                   "HAVING COUNT(*) > 1 LIMIT 5")
_FOREIGN_CREDITS = ("SELECT i.start, i.meter, i.channel, i.credit_id, i.credit_seq FROM intervals i "
                    "LEFT JOIN credits c ON c.id = i.credit_id WHERE c.id IS NULL OR c.meter != i.meter "
                    "OR c.channel != i.channel OR c.seq != i.credit_seq LIMIT 5")


def _chain_findings(duplicates: Iterable[Sequence[Any]], foreign: Iterable[Sequence[Any]]) -> list[str]:
    found = [f"credits: seq {seq} of {meter} {channel} is stored {n} times" for meter, channel, seq, n in duplicates]
    found += [f"intervals: {meter} {channel} at {start} names credit {credit_id}, not its own (seq {seq})"
              for start, meter, channel, credit_id, seq in foreign]
    return found or ["ok"]


def chain_keys_check(conn: sqlite3.Connection) -> list[str]:
    """What schema 7's time-ordered layout no longer has an index for: ``["ok"]`` or findings.

    Each (meter, channel, seq) is one credit (the writer takes seqs from the chain tip and the
    schema refuses one at or before it; this finds any that got in another way), and each
    interval's ``credit_id`` is its own credit (same series, the seq it records). A scan of the
    credits and one rowid probe per interval, after ``quick_check`` in the same full pass.
    """
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if int(version) < TIME_ORDERED_SCHEMA:
        return ["ok"]  # the (meter, channel, seq) index is still there: SQLite keeps it unique
    return _chain_findings(conn.execute(_DUPLICATE_SEQS), conn.execute(_FOREIGN_CREDITS))


async def full_check(path: Path) -> list[str]:
    """The full check, as the background task runs it (benchmarks and tests)."""
    return await FullCheck(path).run() or ["interrupted"]


def mark_damaged(data_dir: Path, finding: str) -> None:
    """Leave the finding next to the ledger, so the next start refuses at once."""
    with contextlib.suppress(OSError):  # a full or read-only disk: the refusal at start still follows
        (data_dir / DAMAGED_MARKER).write_text(finding + "\n", encoding="utf-8")


def refuse_if_marked(path: Path) -> None:
    """Refuse a ledger an earlier check found damaged; a marker without its ledger is stale and goes."""
    marker = path.with_name(DAMAGED_MARKER)
    if not marker.exists():
        return
    if not has_ledger(path):
        with contextlib.suppress(OSError):
            marker.unlink()
        return
    try:
        finding = marker.read_text(encoding="utf-8").strip()
    except OSError:
        finding = "unknown"
    raise LedgerIntegrityError(
        f"ledger {path} was found damaged ({finding}); {DAMAGED_ADVICE}. If you restored a good copy "
        f"in its place, delete {marker} and start again")


def verdict_text(verdict: list[str]) -> str:
    return "; ".join(verdict[:3])
