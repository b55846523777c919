"""Pruning raw readings: late readings never rewrite what pruned readings measured; space goes back to the card."""

from __future__ import annotations

import contextlib
import sqlite3
from importlib import resources
from pathlib import Path

from stellar_sdk import Keypair

from gateway.clock import ManualClock
from gateway.config.model import LedgerConfig
from gateway.intervals import Reading
from gateway.ledger.connection import PAGE_SIZE
from gateway.ledger.maintenance import maintain_once
from gateway.ledger.store import DB_FILE, Ledger, StoredInterval
from gateway.ledger.writer import ReadingWriter
from gateway.status import GatewayStatus, MeterStatus

T0 = 1_767_225_600_000  # a quarter-hour boundary, ms
DAY_MS = 86_400_000
KEY = Keypair.random()


async def _ledger(path: Path) -> Ledger:
    return await Ledger.open(path, gateway_id="gw", keypair=KEY)


def _hourly_pattern(n_minutes: int, offset_ms: int = 0) -> list[Reading]:
    """One reading a minute: 10 Wh a minute in even hours, 1 Wh in odd ones (no straight line fits)."""
    readings, wh = [], 100_000
    for k in range(n_minutes):
        readings.append(Reading("m", T0 + offset_ms + k * 60_000, wh))
        wh += 10 if (k // 60) % 2 == 0 else 1
    return readings


async def _all(ledger: Ledger) -> list[StoredInterval]:
    return await ledger.stored_intervals("m", 0, 2**40)


def _db(tmp_path: Path, sql: str) -> list[tuple[object, ...]]:
    with contextlib.closing(sqlite3.connect(tmp_path / DB_FILE)) as db:
        return [tuple(row) for row in db.execute(sql)]


def _pragma(tmp_path: Path, name: str) -> int:
    with contextlib.closing(sqlite3.connect(tmp_path / DB_FILE)) as db:
        return int(db.execute(f"PRAGMA {name}").fetchone()[0])


async def _sent(ledger: Ledger) -> None:
    """Every credit leaves the box (pulled): a change to one now needs a correction credit."""
    cursor = 0
    while page := await ledger.pull(cursor, 1000):
        cursor = page[-1][0]


async def test_a_late_reading_older_than_the_retained_readings_is_refused_not_interpolated_across(
        tmp_path: Path) -> None:
    ledger = await _ledger(tmp_path)
    readings = _hourly_pattern(2 * 1440, offset_ms=50_000)  # two days, 50 s past each minute
    for i in range(0, len(readings), 500):
        await ledger.commit_readings(readings[i:i + 500], now_ms=1)
    await _sent(ledger)
    before = await _all(ledger)
    credits = await ledger.credit_count()
    await ledger.prune_readings(older_than_ms=T0 + DAY_MS)  # retention: the first day's readings go
    status = GatewayStatus("gw", "G", 0)
    status.meters["m"] = MeterStatus("m", "mqtt", "t")
    writer = ReadingWriter(ledger, ManualClock(), status, flush_s=3600)
    # A backfilled value from before the first reading: its upper neighbour is a day later.
    await writer.submit(Reading("m", T0 + 10_000, 99_990))
    await writer.flush()
    after = await _all(ledger)
    await ledger.close()
    assert after == before, "no actual interval is replaced by a straight line across the pruned day"
    assert {i.quality for i in after} == {"A"}
    assert credits == len(before), "no correction credits"
    assert _db(tmp_path, "SELECT COUNT(*) FROM credits") == [(credits,)]
    assert status.meters["m"].rejected["before_retention"] == 1, "counted (and logged) as refused"
    assert _db(tmp_path, f"SELECT disposition, virtual_wh FROM readings WHERE t_ms={T0 + 10_000}") == \
        [("before_retention", None)], "kept as a refused reading, never a neighbour for the next late one"


async def test_low_disk_pruning_keeps_the_newest_reading_by_time_not_the_last_one_inserted(tmp_path: Path) -> None:
    ledger = await _ledger(tmp_path)
    readings = _hourly_pattern(241)  # four hours on the minute
    late = readings.pop(30)
    await ledger.commit_readings(readings, now_ms=1)
    await ledger.commit_readings([late], now_ms=2)  # inserted last, but old
    await _sent(ledger)
    before = await _all(ledger)
    await ledger.prune_readings(older_than_ms=T0 + 10**9, keep_latest=True)
    assert _db(tmp_path, "SELECT t_ms FROM readings") == [(T0 + 240 * 60_000,)]
    await ledger.commit_readings([Reading("m", T0 + 241 * 60_000, readings[-1].register_wh + 1)], now_ms=3)
    # Minute 31.5 falls in the pruned span: its neighbours' readings are gone.
    result = await ledger.commit_readings([Reading("m", T0 + 31 * 60_000 + 30_000, 100_305)], now_ms=4)
    after = await _all(ledger)
    await ledger.close()
    assert [d for _, d in result.dispositions] == ["before_retention"]
    assert result.corrections == 0
    assert after == before
    assert {i.quality for i in after} == {"A"}


async def test_a_late_reading_after_the_kept_reading_still_revises_only_its_own_interval(tmp_path: Path) -> None:
    ledger = await _ledger(tmp_path)
    readings = _hourly_pattern(241)
    late = readings.pop(30)
    await ledger.commit_readings(readings, now_ms=1)
    await ledger.commit_readings([late], now_ms=2)
    await ledger.prune_readings(older_than_ms=T0 + 10**9, keep_latest=True)
    wh = readings[-1].register_wh  # at minute 240
    await ledger.commit_readings([Reading("m", T0 + 270 * 60_000, wh + 60)], now_ms=3)  # half an hour silent
    await _sent(ledger)
    before = await _all(ledger)
    # The missing minute 255 arrives: both its neighbours (240, kept, and 270) are still stored.
    result = await ledger.commit_readings([Reading("m", T0 + 255 * 60_000, wh + 15)], now_ms=4)
    after = await _all(ledger)
    await ledger.close()
    assert [d for _, d in result.dispositions] == ["late"]
    changed = [(b.start, b.wh, b.quality) for a, b in zip(before, after, strict=True) if a != b]
    assert changed == [((T0 + 240 * 60_000) // 1000, 15, "A"), ((T0 + 255 * 60_000) // 1000, 45, "A")]
    assert result.corrections == 2
    assert after[:16] == before[:16], "the hours whose readings were pruned are untouched"


async def test_a_late_reading_across_a_gap_an_older_version_pruned_is_refused(tmp_path: Path) -> None:
    ledger = await _ledger(tmp_path)
    readings = _hourly_pattern(241)
    await ledger.commit_readings(readings, now_ms=1)
    await _sent(ledger)
    before = await _all(ledger)
    # What the old low-disk pruning left when its "newest" row was an old late reading: minute 30,
    # then nothing up to the readings that came after it.
    with contextlib.closing(sqlite3.connect(tmp_path / DB_FILE)) as db:
        db.execute("DELETE FROM readings WHERE t_ms > ? AND t_ms < ?", (T0 + 30 * 60_000, T0 + 240 * 60_000))
        db.commit()
    result = await ledger.commit_readings([Reading("m", T0 + 31 * 60_000 + 30_000, 100_305)], now_ms=2)
    after = await _all(ledger)
    await ledger.close()
    assert [d for _, d in result.dispositions] == ["before_retention"]
    assert (result.corrections, result.revised) == (0, 0)
    assert after == before


def _store_every_reading(path: Path, readings: list[Reading]) -> None:
    """Store the readings inside intervals too, as earlier versions did (today only those
    next to a boundary are): the bulk that pruning gives back on a ledger such a version left."""
    with contextlib.closing(sqlite3.connect(path / DB_FILE)) as db:
        stored = set(db.execute("SELECT meter, t_ms FROM readings"))
        db.executemany("INSERT INTO readings (meter, t_ms, register_wh, source, disposition, virtual_wh) "
                       "VALUES (?,?,?,'modbus','accepted',?)",
                       [(r.meter, r.t_ms, r.register_wh, r.register_wh) for r in readings
                        if (r.meter, r.t_ms) not in stored])
        db.commit()


async def test_prune_and_release_free_pages_shrink_the_file(tmp_path: Path) -> None:
    ledger = await _ledger(tmp_path)
    readings = sorted((Reading(f"m{j}", T0 + k * 60_000, 1000 + k) for k in range(2000) for j in range(5)),
                      key=lambda r: r.t_ms)
    for i in range(0, len(readings), 2000):
        await ledger.commit_readings(readings[i:i + 2000], now_ms=1)
    await ledger.close()  # checkpointed: the file holds everything
    _store_every_reading(tmp_path, readings)
    ledger = await _ledger(tmp_path)
    size_before = (tmp_path / DB_FILE).stat().st_size
    assert await ledger.prune_readings(older_than_ms=T0 + 10**12, keep_latest=True) == 5 * 1999
    free_pages = _pragma(tmp_path, "freelist_count")
    released = await ledger.release_free_pages()
    size_after = (tmp_path / DB_FILE).stat().st_size
    auto_vacuum = _pragma(tmp_path, "auto_vacuum")
    left = _pragma(tmp_path, "freelist_count")
    page_size = _pragma(tmp_path, "page_size")
    credits = await ledger.credit_count()
    await ledger.close()
    assert auto_vacuum == 2, "a new ledger is created with incremental auto-vacuum"
    assert page_size == PAGE_SIZE == 1024, "and small pages: each commit writes its pages whole"
    assert free_pages > 50
    assert released == free_pages
    assert left == 0, "every free page is released, not one per call"
    # Every released page leaves the file (not "half of it": what is free depends on the schema's own pages).
    assert size_after <= size_before - released * page_size
    assert credits == 5 * 133, "billing data is untouched"


def _old_ledger(path: Path) -> None:
    """A ledger as the previous version created it: WAL switched on first, so auto-vacuum stayed off."""
    with contextlib.closing(sqlite3.connect(path / DB_FILE, isolation_level=None)) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # too late: ignored
        for version, name in ((1, "0001_initial.sql"), (2, "0002_interval_quality.sql")):
            db.executescript((resources.files("gateway.ledger") / "migrations" / name).read_text())
            db.execute(f"PRAGMA user_version={version}")
        assert db.execute("PRAGMA auto_vacuum").fetchone() == (0,)


async def test_an_older_ledger_is_switched_to_auto_vacuum_once_the_disk_allows_and_then_shrinks(
        tmp_path: Path) -> None:
    _old_ledger(tmp_path)
    ledger = await _ledger(tmp_path)
    readings = [Reading(m, T0 + k * 60_000, 1000 + k) for k in range(3 * 1440) for m in ("a", "b")]
    for i in range(0, len(readings), 2000):
        await ledger.commit_readings(readings[i:i + 2000], now_ms=1)
    _store_every_reading(tmp_path, readings)
    credits = await ledger.credit_count()
    clock = ManualClock(start=(T0 + 3 * DAY_MS) / 1000)
    status = GatewayStatus("gw", "G", clock.now())
    cfg = LedgerConfig(readings_retention_days=30, min_free_mb=100)

    size_mb = sum(f.stat().st_size for f in tmp_path.glob(f"{DB_FILE}*")) / 1_048_576  # with its WAL
    assert size_mb > 0.5
    # Not low, but the rewrite (about twice the file) would take it below the alarm threshold.
    await maintain_once(ledger, clock, tmp_path, cfg, status, free=cfg.min_free_mb + size_mb)
    assert not status.alarms
    assert _pragma(tmp_path, "auto_vacuum") == 0
    await maintain_once(ledger, clock, tmp_path, cfg, status, free=10_000)
    assert _pragma(tmp_path, "auto_vacuum") == 2, "switched by a one-off VACUUM"
    assert await ledger.credit_count() == credits

    size_before = (tmp_path / DB_FILE).stat().st_size
    await maintain_once(ledger, clock, tmp_path, cfg, status, free=50)  # low disk
    size_after = (tmp_path / DB_FILE).stat().st_size
    assert "disk_low" in status.alarms
    assert _pragma(tmp_path, "freelist_count") == 0
    assert size_after < size_before * 0.6, "low-disk pruning gives the space back"
    assert await ledger.credit_count() == credits
    await ledger.close()
