"""Records decided from the ledger's export intervals, inside the transaction that stores them."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cloud_sync.keys import Keypair
from gateway.channels import Channel
from gateway.intervals import Reading
from gateway.ledger.store import Ledger
from gateway.p2p.planner import Terms
from gateway.p2p.store import NOTHING, PENDING, Agreement, P2PStore

T0 = 1_767_225_600
STEP = 900
PROVIDER = "G" + "A" * 55
METER = "solar-1"


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[Ledger]:
    led = await Ledger.open(tmp_path, gateway_id="gw", keypair=Keypair.random())
    columns = [r[1] for r in await led.read_rows("PRAGMA table_info(intervals)")]
    if "channel" not in columns:
        await led.close()
        pytest.skip("this ledger has no export intervals yet (intervals.channel lands with the channels work)")
    try:
        yield led
    finally:
        await led.close()


async def feed(ledger: Ledger, channel: Channel, first: int, last: int, wh_per_interval: int, base: int) -> None:
    """Readings at every interval boundary ``first..last`` (index k → T0 + k·900, register base + k·wh)."""
    readings = [Reading(METER, (T0 + k * STEP) * 1000, base + k * wh_per_interval, channel=channel)
                for k in range(first, last + 1)]
    await ledger.commit_readings(readings, now_ms=(T0 + last * STEP) * 1000 + 1000)


async def test_records_follow_the_export_intervals_and_carry_the_remainder(ledger: Ledger) -> None:
    key = Keypair.random()
    store = P2PStore(ledger)
    window = (T0, T0 + 96 * STEP)
    a1 = Agreement(Terms(11, 2, *window), METER, PROVIDER)
    a2 = Agreement(Terms(12, 3, *window), METER, PROVIDER)
    await feed(ledger, Channel.IMPORT, 0, 40, 5000, 9_000_000)  # import never counts as delivered
    await feed(ledger, Channel.EXPORT, 0, 6, 350, 2_000_000)     # 6 intervals × 350 Wh = 2100 Wh
    made = await store.decide([a1, a2], gateway="gw", keypair=key, now=T0 + 7 * STEP)
    assert [r.body["agreement_id"] for r in made] == [11]
    body = made[0].body
    assert (body["energy_delivered_kwh"], body["covered_wh"], body["carry_out_wh"]) == (2, 2100, 100)
    assert body["meter_reading"] == 2_000_000 + 6 * 350
    credits = await ledger.read_rows("SELECT seq, hash FROM credits WHERE meter=? AND channel='export' "
                                     "ORDER BY seq", (METER,))
    assert (body["first_seq"], body["last_seq"]) == (credits[0][0], credits[5][0])
    assert body["covers"] == hashlib.sha256(",".join(h for _, h in credits[:6]).encode()).hexdigest()
    # Deciding again makes nothing: one record per agreement.
    assert await store.decide([a1, a2], gateway="gw", keypair=key, now=T0 + 7 * STEP) == []
    await feed(ledger, Channel.EXPORT, 7, 14, 350, 2_000_000)    # 100 carried + 8 × 350 = 2900 Wh < 3 kWh
    assert await store.decide([a1, a2], gateway="gw", keypair=key, now=T0 + 15 * STEP) == []
    made = await store.decide([a1, a2], gateway="gw", keypair=key, now=window[1])  # the deadline passed
    assert [(r.body["agreement_id"], r.body["energy_delivered_kwh"], r.body["carry_in_wh"], r.body["carry_out_wh"],
             r.body["reason"]) for r in made] == [(12, 2, 100, 900, "deadline")]
    assert [r.state for r in await store.records()] == [PENDING, PENDING]


async def test_nothing_exported_gives_a_record_that_is_never_sent(ledger: Ledger) -> None:
    store = P2PStore(ledger)
    a = Agreement(Terms(5, 1, T0, T0 + 4 * STEP), METER, PROVIDER)
    await feed(ledger, Channel.EXPORT, 0, 4, 100, 10)
    made = await store.decide([a], gateway="gw", keypair=Keypair.random(), now=T0 + 4 * STEP)
    assert [(r.body["energy_delivered_kwh"], r.body["carry_out_wh"]) for r in made] == [(0, 400)]
    assert [r.state for r in await store.records()] == [NOTHING]
