"""Ledger durability and the billing API uplink against the real reference receiver over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from stellar_sdk import Keypair

from cloud_sync.billing_api import NAME, BillingApiUplink
from cloud_sync.receiver import ReceiverStore, create_app
from gateway.clock import SystemClock
from gateway.config import BillingApiConfig
from gateway.errors import LedgerIntegrityError
from gateway.intervals import Reading
from gateway.ledger.store import DB_FILE, Ledger
from gateway.web.server import free_port, serving

T0 = 1_767_225_600_000  # a quarter-hour boundary, ms
GW = "gw-test"
KEY = Keypair.random()


def _readings(meter: str, n_intervals: int, start_wh: int = 10_000) -> list[Reading]:
    # One reading a minute, 7 Wh a minute: 105 Wh per interval.
    return [Reading(meter, T0 + k * 60_000, start_wh + 7 * k) for k in range(n_intervals * 15 + 1)]


async def _ledger(path: Path) -> Ledger:
    return await Ledger.open(path, gateway_id=GW, keypair=KEY)


async def test_credits_commit_with_intervals_and_survive_reopen(tmp_path: Path) -> None:
    ledger = await _ledger(tmp_path)
    result = await ledger.commit_readings(_readings("m1", 4)[:31], now_ms=1)
    assert [i.wh for i in result.intervals] == [105, 105]
    await ledger.close()
    # Reopen: the engine continues from its persisted state, the chain from its tip.
    ledger = await _ledger(tmp_path)
    result = await ledger.commit_readings(_readings("m1", 4)[31:], now_ms=2)
    assert [i.wh for i in result.intervals] == [105, 105]
    await ledger.close()
    with contextlib.closing(sqlite3.connect(tmp_path / DB_FILE)) as db:
        seqs = [row[0] for row in db.execute("SELECT seq FROM credits WHERE meter='m1' ORDER BY id")]
        (version,) = db.execute("PRAGMA user_version").fetchone()
        (mode,) = db.execute("PRAGMA journal_mode").fetchone()
    assert seqs == [1, 2, 3, 4]
    assert version >= 1
    assert mode == "wal"


async def test_a_damaged_ledger_is_refused_with_advice(tmp_path: Path) -> None:
    ledger = await _ledger(tmp_path)
    await ledger.commit_readings(_readings("m1", 30), now_ms=1)
    await ledger.close()
    data = bytearray((tmp_path / DB_FILE).read_bytes())
    for offset in range(4096 * 2, len(data) - 4096, 4096):  # scribble over every page header but the first
        data[offset:offset + 16] = b"\xff" * 16
    (tmp_path / DB_FILE).write_bytes(bytes(data))
    with pytest.raises(LedgerIntegrityError, match=r"move ledger.db .* aside"):
        await _ledger(tmp_path)


@contextlib.asynccontextmanager
async def _receiver(tmp_path: Path, port: int, token: str = "secret") -> AsyncIterator[ReceiverStore]:
    store = ReceiverStore(tmp_path / "receiver.db", {GW: KEY.public_key})
    try:
        async with serving(create_app(store, token), port=port):
            yield store
    finally:
        store.close()


def _uplink(ledger: Ledger, port: int, token: str = "secret", batch_size: int = 50) -> BillingApiUplink:
    cfg = BillingApiConfig(url=f"http://127.0.0.1:{port}", batch_size=batch_size, max_batch_age_s=0,
                           timeout_s=2, backoff_max_s=1)
    return BillingApiUplink(cfg, ledger, SystemClock(), gateway_id=GW, token=token, wakeup=asyncio.Event)


async def _until(predicate: object, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not await predicate():  # type: ignore[operator]
            await asyncio.sleep(0.05)


async def test_uplink_delivers_every_credit_exactly_once(tmp_path: Path) -> None:
    port = free_port()
    ledger = await _ledger(tmp_path)
    await ledger.commit_readings(_readings("m1", 40) + _readings("m2", 40), now_ms=1)
    async with _receiver(tmp_path, port) as store:
        uplink = _uplink(ledger, port)
        task = asyncio.create_task(uplink.run())

        async def drained() -> bool:
            return (await ledger.pending_count(NAME))[0] == 0
        await _until(drained)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert [c["credit"]["seq"] for c in store.credits(GW, "m1")] == list(range(1, 41))
        assert sum(c["credit"]["wh"] for c in store.credits(GW, "m2")) == 40 * 105
        # A resend of an already-delivered batch (ack lost) changes nothing.
        with contextlib.closing(sqlite3.connect(tmp_path / DB_FILE)) as db:
            wire = [json.loads(w) for (w,) in db.execute("SELECT wire FROM credits ORDER BY id LIMIT 10")]
        async with httpx.AsyncClient() as http:
            response = await http.post(f"http://127.0.0.1:{port}/v1/batches",
                                       json={"gateway": GW, "batch": "resend", "credits": wire},
                                       headers={"Idempotency-Key": "resend", "Authorization": "Bearer secret"})
        assert response.json()["duplicate"] == 10
        assert len(store.credits(GW, "m1")) == 40
    await ledger.close()


async def test_api_down_then_up_nothing_lost(tmp_path: Path) -> None:
    port = free_port()
    ledger = await _ledger(tmp_path)
    await ledger.commit_readings(_readings("m1", 20), now_ms=1)
    uplink = _uplink(ledger, port, batch_size=7)
    task = asyncio.create_task(uplink.run())

    async def failed_once() -> bool:
        return (await ledger.uplink_summary(NAME)).last_error is not None
    await _until(failed_once)
    summary = await ledger.uplink_summary(NAME)
    assert summary.backlog == 20
    assert "ConnectError" in (summary.last_error or "")
    # More credits arrive while the API is down: they queue behind.
    await ledger.commit_readings(_readings("m1", 30)[301:], now_ms=2)
    async with _receiver(tmp_path, port) as store:
        async def drained() -> bool:
            return (await ledger.pending_count(NAME))[0] == 0
        await _until(drained)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert [c["credit"]["seq"] for c in store.credits(GW, "m1")] == list(range(1, 31))
    await ledger.close()


async def test_refused_credentials_keep_credits_queued(tmp_path: Path) -> None:
    port = free_port()
    ledger = await _ledger(tmp_path)
    await ledger.commit_readings(_readings("m1", 3), now_ms=1)
    async with _receiver(tmp_path, port):
        uplink = _uplink(ledger, port)
        uplink._gateway_id = "not-enrolled"  # the receiver answers 403 for an unknown gateway
        uplink._headers = {}                 # and 401 without a token: both must not lose data
        task = asyncio.create_task(uplink.run())

        async def erred() -> bool:
            return (await ledger.uplink_summary(NAME)).last_error is not None
        await _until(erred)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        summary = await ledger.uplink_summary(NAME)
        assert "credentials" in (summary.last_error or "")
        assert summary.backlog == 3, "an auth failure keeps the credits queued"
    await ledger.close()


async def test_refused_batch_blocks_the_outbox_until_accepted_and_nothing_skips_it(tmp_path: Path) -> None:
    """A 4xx dead-letters the batch (shown in status) but never lets later credits overtake it:
    they continue the same meter chains and would all be refused as a gap."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    seen: list[str] = []

    async def refuse_first(request: Request) -> Response:
        seen.append(request.headers["idempotency-key"])
        if len(seen) == 1:
            return JSONResponse({"error": "schema mismatch"}, status_code=422)
        doc = await request.json()
        return JSONResponse({"results": [{"meter": c["credit"]["meter"], "seq": c["credit"]["seq"],
                                          "status": "accepted"} for c in doc["credits"]]})

    port = free_port()
    app = Starlette(routes=[Route("/v1/batches", refuse_first, methods=["POST"])])
    async with serving(app, port=port):
        await _refused_then_accepted(tmp_path, port, seen)


async def _refused_then_accepted(tmp_path: Path, port: int, seen: list[str]) -> None:
    ledger = await _ledger(tmp_path)
    await ledger.commit_readings(_readings("m1", 10), now_ms=1)
    uplink = _uplink(ledger, port, batch_size=4)
    task = asyncio.create_task(uplink.run())

    async def refused() -> bool:
        return (await ledger.uplink_summary(NAME)).dead_batches == 1
    await _until(refused)
    summary = await ledger.uplink_summary(NAME)
    assert (summary.dead_credits, summary.backlog) == (4, 10), "refused, shown, and nothing skipped"
    assert "422" in (summary.last_error or "")
    assert len(seen) == 1

    async def drained() -> bool:
        return (await ledger.pending_count(NAME))[0] == 0
    await _until(drained)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    summary = await ledger.uplink_summary(NAME)
    assert summary.dead_batches == 0, "once accepted it is delivered like any other"
    assert seen == [seen[0], seen[0], *seen[2:]], "the refused batch went again first, same key"
    assert len(seen) == 4
    assert uplink.progress.delivered == 10
    await ledger.close()


async def test_cancelled_mid_commit_memory_follows_disk_and_the_next_commit_works(tmp_path: Path) -> None:
    ledger = await _ledger(tmp_path)
    task = asyncio.create_task(ledger.commit_readings(_readings("m1", 3), now_ms=1))
    await asyncio.sleep(0)  # the transaction has started
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    with contextlib.closing(sqlite3.connect(tmp_path / DB_FILE)) as db:
        (on_disk,) = db.execute("SELECT COUNT(*) FROM credits").fetchone()
    assert ledger.max_credit_id == on_disk
    more = await ledger.commit_readings(_readings("m1", 6)[46:], now_ms=2)
    assert more.intervals, "the next commit continues, no UNIQUE clash"
    await ledger.close()


async def test_writer_cancelled_while_gathering_commits_what_it_took(tmp_path: Path) -> None:
    from gateway.clock import ManualClock
    from gateway.ledger.writer import ReadingWriter
    from gateway.status import GatewayStatus

    ledger = await _ledger(tmp_path)
    status = GatewayStatus("gw", "G", 0)
    writer = ReadingWriter(ledger, ManualClock(), status, flush_s=3600)
    task = asyncio.create_task(writer.run())
    readings = _readings("m1", 2)
    for reading in readings:
        await writer.submit(reading)
    await asyncio.sleep(0.05)  # the writer has taken them off the queue and waits for more
    assert writer.queued == 0
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert status.readings_committed == len(readings) == 31, "SIGTERM while gathering loses nothing"
    with contextlib.closing(sqlite3.connect(tmp_path / DB_FILE)) as db:
        (last_t,) = db.execute("SELECT last_t_ms FROM meters WHERE meter='m1'").fetchone()
        (newest,) = db.execute("SELECT MAX(t_ms) FROM readings").fetchone()
    assert last_t == newest == readings[-1].t_ms, "the newest reading is on disk with the state it made"
    await ledger.close()


async def test_a_late_reading_whose_neighbour_was_pruned_is_refused_not_guessed(tmp_path: Path) -> None:
    ledger = await _ledger(tmp_path)
    await ledger.commit_readings(_readings("m1", 4)[::5], now_ms=1)  # every 5 minutes
    before = await ledger.stored_intervals("m1", 0, 2**40)
    await ledger.prune_readings(older_than_ms=T0 + 3_000_000)
    result = await ledger.commit_readings([Reading("m1", T0 + 420_000, 10_000 + 7 * 7)], now_ms=2)
    assert [d for _, d in result.dispositions] == ["before_retention"]
    assert await ledger.stored_intervals("m1", 0, 2**40) == before
    await ledger.close()


async def test_one_reading_the_ledger_refuses_does_not_stop_the_writer_or_the_others(tmp_path: Path) -> None:
    from gateway.clock import ManualClock
    from gateway.ledger.writer import ReadingWriter
    from gateway.status import GatewayStatus, MeterStatus

    ledger = await _ledger(tmp_path)
    status = GatewayStatus("gw", "G", 0)
    status.meters["bad"] = MeterStatus("bad", "mqtt", "t")
    writer = ReadingWriter(ledger, ManualClock(), status, flush_s=3600)
    for reading in [*_readings("m1", 2), Reading("bad", T0, 2**70)]:  # no 64-bit integer holds it
        await writer.submit(reading)
    await writer.flush()
    assert status.meters["bad"].rejected["ledger_refused"] == 1
    assert status.readings_committed == 31
    assert [i.wh for i in await ledger.stored_intervals("m1", 0, 2**40)] == [105, 105]
    await ledger.close()


async def test_a_lone_reading_the_ledger_refuses_is_set_aside_not_raised(tmp_path: Path) -> None:
    # A site with one meter flushes one reading at a time: refusing it must not end the writer (and the daemon).
    from gateway.clock import ManualClock
    from gateway.ledger.writer import ReadingWriter
    from gateway.status import GatewayStatus, MeterStatus

    ledger = await _ledger(tmp_path)
    status = GatewayStatus("gw", "G", 0)
    status.meters["m1"] = MeterStatus("m1", "mqtt", "t")
    writer = ReadingWriter(ledger, ManualClock(), status, flush_s=3600)
    await writer.submit(Reading("m1", T0, 2**70))  # no 64-bit integer holds it
    await writer.flush()
    assert status.meters["m1"].rejected["ledger_refused"] == 1
    for reading in _readings("m1", 1):
        await writer.submit(reading)
    await writer.flush()
    assert status.readings_committed == 16
    await ledger.close()
