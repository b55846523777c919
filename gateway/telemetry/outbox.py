"""Closed intervals for telemetry, read from the ledger behind a cursor the ledger keeps.

The outbox (``credits``) is append-only with ids that only grow, so "published up to id N" is all the
state telemetry needs: a broker outage, or a restart of the gateway, resumes at N + 1. The cursor is its
own table (``telemetry_cursor``, migration 0003), not an uplink's: what telemetry has sent is not billing
and must not stop a late reading from revising a credit that no billing uplink has taken yet.
"""

from __future__ import annotations

import sqlite3

from gateway.ledger.connection import rows
from gateway.ledger.faults import translate
from gateway.ledger.store import Ledger
from gateway.telemetry.model import IntervalMessage, interval_message


async def cursor(ledger: Ledger, sink: str, *, now_ms: int) -> int:
    """Where ``sink`` stands; a new sink starts at the newest credit (it publishes from now on, not the
    ledger's whole history), recorded at once so an outage from the first minute loses nothing after it."""
    found = await rows(ledger._r, "SELECT published_id FROM telemetry_cursor WHERE sink=?", (sink,))
    if found:
        return int(found[0][0])
    start = ledger.max_credit_id
    await save(ledger, sink, start, now_ms=now_ms)
    return start


async def save(ledger: Ledger, sink: str, published_id: int, *, now_ms: int) -> None:
    try:
        async with ledger._transaction() as db:
            await db.execute(
                "INSERT INTO telemetry_cursor (sink, published_id, updated_ms) VALUES (?,?,?) "
                "ON CONFLICT (sink) DO UPDATE SET published_id=MAX(published_id, excluded.published_id), "
                "updated_ms=excluded.updated_ms", (sink, published_id, now_ms))
    except sqlite3.Error as exc:
        raise translate(exc, ledger.path, f"record how far telemetry {sink} has published") from None


async def after(ledger: Ledger, published_id: int, limit: int) -> list[IntervalMessage]:
    """The next closed intervals (and corrections) after ``published_id``, in outbox order."""
    found = await rows(ledger._r, "SELECT id, wire FROM credits WHERE id > ? ORDER BY id LIMIT ?",
                       (published_id, limit))
    return [interval_message(int(i), str(w)) for i, w in found]
