"""Every credit the real engine and ledger produce passes the receiver's rules, whatever the readings do.

The receiver's domain rules (``cloud_sync.credit``) must never refuse an honest credit: a refused
batch is dead-lettered on the gateway and blocks its meters' chains. So this drives the real
interval engine and SQLite ledger with arbitrary readings of two meters — out of order, duplicated,
with register resets and counter rollovers, late readings that revise unsent credits or produce
corrections for sent ones — and delivers the outbox to the real receiver store the way the uplink
does (fixed batches, lost acknowledgements resent). Every credit must be accepted or answered as a
duplicate, and the receiver's net energy per meter must equal the ledger's intervals.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from receiver_kit import GW, KEY, batch_bytes

from cloud_sync.receiver import CreditStore, open_store
from gateway.intervals import Reading
from gateway.ledger.store import Ledger

T0_MS = 1_767_225_600_000
_EXAMPLES = itertools.count()
MODULUS = 1_000_000
"""m2's register wraps here (a 6-digit counter), so rollovers are exercised."""


@st.composite
def readings_of(draw: st.DrawFn, meter: str, modulus: int | None) -> list[Reading]:
    n = draw(st.integers(2, 18))
    t = T0_MS + draw(st.integers(0, 900_000))
    raw = draw(st.integers(0, MODULUS - 1))
    out = [Reading(meter, t, raw, register_modulus_wh=modulus)]
    for _ in range(n - 1):
        t += draw(st.integers(1, 2 * 3_600_000))
        fall = draw(st.integers(0, 9)) == 0  # now and then the register goes down (reset, glitch)
        step = draw(st.integers(-80_000, -1) if fall else st.integers(0, 3_000))
        raw = raw + step if modulus is None else (raw + step) % modulus
        out.append(Reading(meter, t, max(0, raw), register_modulus_wh=modulus))
    return out


@st.composite
def scenario(draw: st.DrawFn) -> tuple[list[list[Reading]], list[tuple[bool, bool, int]]]:
    readings = draw(readings_of("m1", None)) + draw(readings_of("m2", MODULUS))
    # Mostly in order, with some readings held back to arrive late (as after a broker outage).
    late = draw(st.sets(st.sampled_from(readings), max_size=len(readings) // 2))
    arrivals = [r for r in readings if r not in late] + draw(st.permutations(sorted(late, key=lambda r: r.t_ms)))
    arrivals += draw(st.lists(st.sampled_from(readings), max_size=3))
    cuts = sorted(draw(st.sets(st.integers(1, len(arrivals) - 1), min_size=1, max_size=10)))
    commits = [arrivals[a:b] for a, b in zip([0, *cuts], [*cuts, len(arrivals)], strict=True)]
    # After each commit: deliver now?, lose the acknowledgement of the first batch?, batch size.
    sends = draw(st.lists(st.tuples(st.integers(0, 3).map(bool), st.booleans(), st.integers(1, 40)),
                          min_size=len(commits), max_size=len(commits)))
    return commits, sends


async def _deliver(ledger: Ledger, store: CreditStore, gateway: str, batch_size: int, lose_first_ack: bool) -> int:
    delivered = 0
    while batch := await ledger.next_batch("billing_api", batch_size, now_ms=1):
        credits = [json.loads(w) for w in batch.wire]
        raw = batch_bytes(credits, batch.batch_key, gateway)
        answer = await store.ingest(gateway, batch.batch_key, raw, credits)
        if lose_first_ack:  # the answer never reached the gateway: it resends the same bytes
            lose_first_ack = False
            answer = await store.ingest(gateway, batch.batch_key, raw, credits)
        kinds = {c["credit"]["kind"] for c in credits}
        event(f"delivered {'corrections' if 'correction' in kinds else 'intervals only'}")
        refused = [r for r in answer["results"] if r["status"] not in ("accepted", "duplicate")]
        assert not refused, f"an honest credit was refused: {refused}"
        await ledger.settle_batch(batch, now_ms=1)
        delivered += len(credits)
    return delivered


async def _run(path: Path, db: str, gateway: str, commits: list[list[Reading]],
               sends: list[tuple[bool, bool, int]]) -> None:
    ledger = await Ledger.open(path / "gw", gateway_id=gateway, keypair=KEY)
    store = await open_store(db)
    try:
        await store.ensure_enrolled(gateway, KEY.public_key, 0)
        await ledger.register_uplink("billing_api")
        for readings, (send, lose_ack, size) in zip(commits, sends, strict=True):
            await ledger.commit_readings(readings, now_ms=1)
            if send:
                await _deliver(ledger, store, gateway, size, lose_ack)
        await _deliver(ledger, store, gateway, 500, False)
        net = {row["meter"]: row["wh"] for row in await store.summary(gateway)}
        for meter in ("m1", "m2"):
            intervals = await ledger.stored_intervals(meter, 0, 2**40)
            assert net.get(meter, 0) == sum(i.wh for i in intervals), f"{meter}: credits net to the intervals"
    finally:
        await store.close()
        await ledger.close()


@given(case=scenario())
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
def test_every_credit_the_engine_and_ledger_produce_is_accepted(
        db_url: str, case: tuple[list[list[Reading]], list[tuple[bool, bool, int]]]) -> None:
    """Against each store; every example is a gateway of its own in the test's one store."""
    commits, sends = case
    gateway = f"{GW}-{next(_EXAMPLES)}"
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(_run(Path(tmp), db_url, gateway, commits, sends))
