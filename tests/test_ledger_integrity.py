"""A damaged or truncated ledger is refused with advice at every start, never run on, never a traceback.

Reproductions of the review: with ``ledger.clean`` present the check was skipped, so a file damaged
mid-way ran on and was marked clean again; a zeroed header or a truncated file gave a raw
``DatabaseError`` traceback (``PRAGMA page_count`` outside the check's ``try``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from stellar_sdk import Keypair

from gateway import identity
from gateway.clock import SystemClock
from gateway.config import parse_config
from gateway.daemon import run_daemon
from gateway.errors import LedgerIntegrityError
from gateway.intervals import Reading
from gateway.ledger import integrity
from gateway.ledger.connection import PAGE_SIZE
from gateway.ledger.store import DB_FILE, Ledger

T0 = 1_767_225_600_000
PAGE = PAGE_SIZE


async def _filled(data: Path, keypair: Keypair) -> int:
    """A ledger of a few hundred pages, closed; returns its page count."""
    ledger = await Ledger.open(data, gateway_id="gw", keypair=keypair)
    # Two readings per interval: each is next to a boundary, so every one is stored (the readings
    # inside an interval are not), and the readings table spans many pages.
    readings = [Reading(f"m{m}", T0 + k * 450_000, 1000 + 7 * k) for k in range(6 * 60) for m in range(10)]
    for i in range(0, len(readings), 1000):
        await ledger.commit_readings(readings[i:i + 1000], now_ms=1)
    await ledger.close()
    return (data / DB_FILE).stat().st_size // PAGE


def _table_pages(path: Path, table: str) -> list[int]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return [int(p) for (p,) in db.execute("SELECT pageno FROM dbstat WHERE name=? AND pagetype='leaf'", (table,))]


def _scribble(path: Path, page: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek((page - 1) * PAGE)
        fh.write(b"\xa5" * PAGE)


def _advice(message: str) -> None:
    assert "recover-chains" in message
    assert "identity --new-key" in message
    assert "move ledger.db" in message


@pytest.mark.parametrize("damage", ["zeroed_header", "truncated_half", "truncated_to_40_bytes",
                                    "page_mid_way_with_clean_marker"])
async def test_a_damaged_ledger_is_refused_with_advice_at_every_start(tmp_path: Path, damage: str) -> None:
    keypair = Keypair.random()
    pages = await _filled(tmp_path, keypair)
    path = tmp_path / DB_FILE
    _damage(path, damage, pages)
    with pytest.raises(LedgerIntegrityError) as refused:
        await Ledger.open(tmp_path, gateway_id="gw", keypair=keypair)
    _advice(str(refused.value))
    # Refused for good: the next start refuses at once, and nothing has been written into the file.
    size = path.stat().st_size
    with pytest.raises(LedgerIntegrityError, match=r"(is|found) damaged"):
        await Ledger.open(tmp_path, gateway_id="gw", keypair=keypair)
    assert path.stat().st_size == size


def _damage(path: Path, damage: str, pages: int) -> None:
    if damage == "zeroed_header":
        with open(path, "r+b") as fh:
            fh.write(b"\0" * 100)
    elif damage == "truncated_half":
        os.truncate(path, (pages // 2) * PAGE)
    elif damage == "truncated_to_40_bytes":
        os.truncate(path, 40)
    else:
        readings_pages = _table_pages(path, "readings")
        _scribble(path, readings_pages[len(readings_pages) // 2])
        path.with_name("ledger.clean").touch()  # as an older version left it after a clean stop


def test_the_daemon_refuses_a_damaged_ledger_with_one_line_not_a_traceback(tmp_path: Path) -> None:
    keypair = identity.load_or_create(tmp_path / "data")
    asyncio.run(_filled(tmp_path / "data", keypair))
    _damage(tmp_path / "data" / DB_FILE, "zeroed_header", 0)
    config = tmp_path / "gateway.toml"
    config.write_text(f'gateway_id = "gw"\ndata_dir = "{tmp_path / "data"}"\n[web]\nenabled = false\n')
    done = subprocess.run([sys.executable, "-m", "gateway", "run", "--config", str(config)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert "is damaged" in errors[0]
    _advice(errors[0])


async def test_a_big_ledger_is_checked_in_full_in_the_background_and_damage_stops_the_daemon(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # "Big": every file gets the bounded check at start, and the full one after.
    monkeypatch.setattr(integrity, "FULL_CHECK_AT_START_BYTES", 0)
    data = tmp_path / "data"
    keypair = identity.load_or_create(data)
    await _filled(data, keypair)
    readings_pages = _table_pages(data / DB_FILE, "readings")
    _scribble(data / DB_FILE, readings_pages[0])  # the oldest readings: the bounded check does not read them
    ledger = await Ledger.open(data, gateway_id="gw", keypair=keypair)
    assert not ledger.fully_checked, "the bounded check let it start"
    await ledger.close()

    cfg = parse_config(f'gateway_id = "gw"\ndata_dir = "{data}"\n[time]\ntrust = "always"\n[web]\nenabled = false\n')
    stop = asyncio.Event()
    with pytest.raises(LedgerIntegrityError) as stopped:
        await asyncio.wait_for(run_daemon(cfg, SystemClock(), stop), 30)
    assert stop.is_set(), "the daemon took its orderly way out"
    _advice(str(stopped.value))
    with pytest.raises(LedgerIntegrityError, match="found damaged"):
        await Ledger.open(data, gateway_id="gw", keypair=keypair)


async def test_an_intact_big_ledger_passes_the_background_check(tmp_path: Path) -> None:
    keypair = Keypair.random()
    await _filled(tmp_path, keypair)
    ledger = await Ledger.open(tmp_path, gateway_id="gw", keypair=keypair, full_check_at_start_bytes=0)
    try:
        assert not ledger.fully_checked
        await ledger.background_check()
        assert ledger.fully_checked
    finally:
        await ledger.close()
    assert not (tmp_path / integrity.DAMAGED_MARKER).exists()


def _tear_a_page_on(path: Path) -> None:
    with open(path, "ab") as fh:
        fh.write(b"\xa5" * (PAGE - 512))


async def test_a_last_page_torn_while_a_checkpoint_copied_the_wal_back_is_recovered_not_refused(
        tmp_path: Path) -> None:
    """A power cut in the middle of a checkpoint that grows the file leaves its length mid-page.

    The torn page is still in the WAL (reset only after the copy was synced), so SQLite reads it from
    there: refusing such a file as truncated would stop a box after an ordinary power cut.
    """
    keypair = Keypair.random()
    live = tmp_path / "live"
    ledger = await Ledger.open(live, gateway_id="gw", keypair=keypair)
    try:
        await ledger.commit_readings([Reading("m1", T0 + k * 450_000, 1000 + 7 * k) for k in range(200)], now_ms=1)
        (credits,) = await ledger.read_rows("SELECT COUNT(*) FROM credits")
        # What a power cut leaves on the card: both files as they are now (the WAL not yet copied back)...
        cut = tmp_path / "cut"
        cut.mkdir()
        for name in (DB_FILE, DB_FILE + "-wal"):
            (cut / name).write_bytes((live / name).read_bytes())
    finally:
        await ledger.close()
    assert (cut / (DB_FILE + "-wal")).stat().st_size > 0, "the test needs frames in the WAL"
    _tear_a_page_on(cut / DB_FILE)  # ... and seven of the eight sectors of a page the checkpoint appended
    recovered = await Ledger.open(cut, gateway_id="gw", keypair=keypair)
    try:
        assert await recovered.read_rows("SELECT COUNT(*) FROM credits") == [credits]
    finally:
        await recovered.close()
    assert (cut / DB_FILE).stat().st_size % PAGE == 0, "the next checkpoint set the length right again"


async def test_a_torn_length_without_a_wal_is_still_refused(tmp_path: Path) -> None:
    keypair = Keypair.random()
    await _filled(tmp_path, keypair)
    _tear_a_page_on(tmp_path / DB_FILE)
    with pytest.raises(LedgerIntegrityError, match="not a whole number"):
        await Ledger.open(tmp_path, gateway_id="gw", keypair=keypair)
