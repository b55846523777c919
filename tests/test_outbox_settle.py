"""A delivered batch is settled in memory and recorded with the next claim (issue 11: the SD card).

One fsynced transaction per batch: the claim, which must be on disk before the POST. The settle
goes to disk with the next claim, or at close; a crash before that sends the same batch again,
same key and same bytes (the receiver answers those from its record). A crash is a copy of the
ledger's folder taken while it is open: the database file and its WAL as the kernel holds them,
which is what a SIGKILL leaves.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from stellar_sdk import Keypair

from gateway.intervals import Reading
from gateway.ledger.store import Ledger, PendingBatch

KEY = Keypair.random()
T0 = 1_767_225_600_000  # a quarter-hour boundary, ms
UPLINK = "billing_api"


async def _ledger_with_credits(folder: Path, n: int = 30) -> Ledger:
    ledger = await Ledger.open(folder, gateway_id="gw", keypair=KEY)
    await ledger.commit_readings([Reading("m", T0 + k * 900_000, 1000 + k) for k in range(n + 1)], now_ms=1)
    await ledger.register_uplink(UPLINK)
    return ledger


def _killed(folder: Path, into: Path) -> Path:
    """The folder as a SIGKILL would leave it now (committed transactions in the WAL, nothing else)."""
    return Path(shutil.copytree(folder, into))


async def _claim(ledger: Ledger, n: int, now_ms: int) -> PendingBatch:
    batch = await ledger.next_batch(UPLINK, n, now_ms=now_ms)
    assert batch is not None
    return batch


async def test_a_settle_in_memory_moves_backlog_and_status_at_once(tmp_path: Path) -> None:
    ledger = await _ledger_with_credits(tmp_path / "ledger")
    try:
        first = await _claim(ledger, 10, 2)
        ledger.settle_batch_later(first, now_ms=3)
        backlog, _ = await ledger.pending_count(UPLINK)
        assert backlog == 20
        summary = await ledger.uplink_summary(UPLINK)
        assert (summary.delivered_id, summary.backlog, summary.last_success_ms) == (first.last_id, 20, 3)
        second = await _claim(ledger, 10, 4)
        assert second.first_id == first.last_id + 1, "the next claim starts past the batch settled in memory"
    finally:
        await ledger.close()


async def test_a_settle_lost_in_a_crash_sends_the_same_batch_again(tmp_path: Path) -> None:
    ledger = await _ledger_with_credits(tmp_path / "ledger")
    try:
        first = await _claim(ledger, 10, 2)
        ledger.settle_batch_later(first, now_ms=3)
        crashed = _killed(tmp_path / "ledger", tmp_path / "crashed")
    finally:
        await ledger.close()
    after = await Ledger.open(crashed, gateway_id="gw", keypair=KEY)
    try:
        again = await _claim(after, 10, 5)
        assert (again.batch_key, again.wire) == (first.batch_key, first.wire), "same key, same bytes"
        assert (await after.pending_count(UPLINK))[0] == 30
    finally:
        await after.close()


async def test_a_settle_goes_to_disk_with_the_next_claim(tmp_path: Path) -> None:
    ledger = await _ledger_with_credits(tmp_path / "ledger")
    try:
        first = await _claim(ledger, 10, 2)
        ledger.settle_batch_later(first, now_ms=3)
        second = await _claim(ledger, 10, 4)
        crashed = _killed(tmp_path / "ledger", tmp_path / "crashed")
    finally:
        await ledger.close()
    after = await Ledger.open(crashed, gateway_id="gw", keypair=KEY)
    try:
        summary = await after.uplink_summary(UPLINK)
        assert (summary.delivered_id, summary.last_success_ms) == (first.last_id, 3)
        resent = await _claim(after, 10, 5)
        assert (resent.batch_key, resent.wire) == (second.batch_key, second.wire), \
            "the claim in flight, not the settled one"
    finally:
        await after.close()


async def test_close_and_save_settles_write_what_waits(tmp_path: Path) -> None:
    ledger = await _ledger_with_credits(tmp_path / "ledger")
    first = await _claim(ledger, 10, 2)
    ledger.settle_batch_later(first, now_ms=3)
    await ledger.close()
    ledger = await Ledger.open(tmp_path / "ledger", gateway_id="gw", keypair=KEY)
    try:
        assert (await ledger.uplink_summary(UPLINK)).delivered_id == first.last_id
        second = await _claim(ledger, 10, 4)
        assert second.first_id == first.last_id + 1
        ledger.settle_batch_later(second, now_ms=5)
        await ledger.save_settles()
        crashed = _killed(tmp_path / "ledger", tmp_path / "crashed")
    finally:
        await ledger.close()
    after = await Ledger.open(crashed, gateway_id="gw", keypair=KEY)
    try:
        assert (await after.uplink_summary(UPLINK)).delivered_id == second.last_id
    finally:
        await after.close()


async def test_a_dead_batch_settled_in_memory_is_no_longer_counted_dead(tmp_path: Path) -> None:
    ledger = await _ledger_with_credits(tmp_path / "ledger")
    try:
        first = await _claim(ledger, 10, 2)
        await ledger.mark_refused(first, now_ms=3, detail="HTTP 422")
        assert (await ledger.uplink_summary(UPLINK)).dead_batches == 1
        refused = await _claim(ledger, 10, 4)
        assert refused.refused
        assert refused.batch_key == first.batch_key
        ledger.settle_batch_later(refused, now_ms=5)
        summary = await ledger.uplink_summary(UPLINK)
        assert (summary.dead_batches, summary.dead_credits, summary.delivered_id) == (0, 0, first.last_id)
    finally:
        await ledger.close()


async def test_a_settle_still_listed_after_its_commit_is_recorded_once(tmp_path: Path) -> None:
    """A claim cancelled while its COMMIT is awaited has written the settles but not unlisted them."""
    ledger = await _ledger_with_credits(tmp_path / "ledger")
    try:
        first = await _claim(ledger, 10, 2)
        ledger.settle_batch_later(first, now_ms=3)
        await _claim(ledger, 10, 4)  # writes the settle
        ledger.settle_batch_later(first, now_ms=3)  # as the cancelled COMMIT would leave it listed
        await _claim(ledger, 10, 5)
        async with ledger._transaction() as db:
            rows = await (await db.execute("SELECT state, attempts FROM uplink_batches WHERE uplink=? AND batch_key=?",
                                           (UPLINK, first.batch_key))).fetchall()
        assert [tuple(r) for r in rows] == [("delivered", 1)]
    finally:
        await ledger.close()
