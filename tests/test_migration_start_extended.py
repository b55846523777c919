"""A ledger migration keeps asking systemd for more start time, and stops asking when it is done.

Without it, systemd's start timeout (90 s unless configured) kills a daemon whose migration of a
big ledger on an SD card is still running: the migration rolls back, the next start begins it
again, and after ``StartLimitBurst`` tries the unit gives up. Here the real migrations run on a
real SQLite file, followed by one made slow on purpose, with NOTIFY_SOCKET pointing at a unix
datagram socket this test reads, as systemd's end of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import aiosqlite
import pytest

from gateway import sdnotify
from gateway.ledger import connection

EXTEND = f"EXTEND_TIMEOUT_USEC={int(sdnotify.START_EXTENSION_S * 1_000_000)}"
SLOW_SQL = ("CREATE TABLE slow_step AS WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
            "WHERE x < 4000000) SELECT SUM(x) AS s FROM c;")
"""A migration step of about a second on this box: long enough for several renewals 50 ms apart."""


@pytest.fixture
def systemd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify"
    sock.bind(str(path))
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.setattr(sdnotify, "EXTEND_EVERY_S", 0.05)
    with contextlib.closing(sock):
        yield sock


def _received(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


async def _migrate(path: Path) -> int:
    async with aiosqlite.connect(path) as db:
        await connection.migrate(db, path)
        (version,) = await (await db.execute("PRAGMA user_version")).fetchone()  # type: ignore[misc]
    return int(version)


async def test_a_long_migration_renews_the_start_timeout_until_it_ends(
        systemd: socket.socket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = connection.migrations()
    slow_version = real[-1][0] + 1
    monkeypatch.setattr(connection, "migrations", lambda: [*real, (slow_version, SLOW_SQL)])
    assert await _migrate(tmp_path / "ledger.sqlite") == slow_version
    during = _received(systemd)
    assert during.count(EXTEND) >= 3, f"renewed only {during.count(EXTEND)} times during the migration"
    await asyncio.sleep(0.3)  # six renewal periods
    assert _received(systemd) == [], "the renewals went on after the migration ended"


async def test_an_up_to_date_ledger_asks_for_nothing(systemd: socket.socket, tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    await _migrate(path)
    _received(systemd)
    assert await _migrate(path) == connection.SCHEMA_VERSION
    assert _received(systemd) == []


async def test_outside_systemd_a_migration_just_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert await _migrate(tmp_path / "ledger.sqlite") == connection.SCHEMA_VERSION
