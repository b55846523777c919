"""Late readings through the real ledger: arrival order does not change the result.

Readings of one meter arrive in any order, in batches of any size, with
duplicates, while an "uplink" marks credits as sent at random moments. After
all have arrived, the ledger's intervals equal those of an in-order run; the
credits — interval credits plus correction credits for anything already sent —
net to exactly those intervals; every chain link and signature verifies; and no
credit that was sent was ever changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import tempfile
from collections import defaultdict
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stellar_sdk import Keypair

from cloud_sync.credit import ChainTip, verify
from gateway.intervals import MeterState, Reading, feed_many
from gateway.intervals.plausibility import DEFAULT_MAX_POWER_W
from gateway.ledger.store import DB_FILE, Ledger

T0 = 1_767_225_600_000
KEY = Keypair.random()


@st.composite
def scenario(draw: st.DrawFn) -> tuple[list[Reading], list[list[Reading]], list[bool]]:
    n = draw(st.integers(2, 25))
    gaps = draw(st.lists(st.integers(1, 2 * 3_600_000), min_size=n - 1, max_size=n - 1))
    steps = draw(st.lists(st.integers(0, 3_000), min_size=n - 1, max_size=n - 1))
    t, wh = T0 + draw(st.integers(0, 900_000)), 50_000
    readings = [Reading("m", t, wh)]
    for gap, step in zip(gaps, steps, strict=True):
        # A real meter: no faster than the ledger's default ceiling (a faster rise is held as a misread).
        t, wh = t + gap, wh + min(step, int(DEFAULT_MAX_POWER_W * gap // 3_600_000))
        readings.append(Reading("m", t, wh))
    arrivals = draw(st.permutations(readings))
    dupes = draw(st.lists(st.sampled_from(readings), max_size=3))
    arrivals = [*arrivals, *dupes]
    cuts = sorted(draw(st.sets(st.integers(1, len(arrivals) - 1), max_size=4))) if len(arrivals) > 1 else []
    batches = [arrivals[a:b] for a, b in zip([0, *cuts], [*cuts, len(arrivals)], strict=True)]
    sent = draw(st.lists(st.booleans(), min_size=len(batches), max_size=len(batches)))
    return readings, batches, sent


async def _run(path: Path, batches: list[list[Reading]], sent: list[bool]) -> list[tuple[int, int, str]]:
    ledger = await Ledger.open(path, gateway_id="gw", keypair=KEY)
    sent_hashes: dict[int, str] = {}
    try:
        for batch, mark_sent in zip(batches, sent, strict=True):
            await ledger.commit_readings(batch, now_ms=1)
            if mark_sent:  # an uplink delivered everything so far
                with contextlib.closing(sqlite3.connect(path / DB_FILE)) as db:
                    db.execute("INSERT OR IGNORE INTO uplink_cursor (uplink) VALUES ('test')")
                    db.execute("UPDATE uplink_cursor SET delivered_id=(SELECT COALESCE(MAX(id),0) FROM credits)")
                    db.commit()
                    sent_hashes.update(dict(db.execute("SELECT id, hash FROM credits")))
        rows = await ledger.stored_intervals("m", 0, 2**40)
    finally:
        await ledger.close()
    with contextlib.closing(sqlite3.connect(path / DB_FILE)) as db:
        now = dict(db.execute("SELECT id, hash FROM credits"))
    assert all(now[i] == h for i, h in sent_hashes.items()), "a sent credit was changed"
    return [(r.start, r.wh, r.quality) for r in rows]


def _credits(path: Path) -> list[dict[str, object]]:
    with contextlib.closing(sqlite3.connect(path / DB_FILE)) as db:
        return [json.loads(w) for (w,) in db.execute("SELECT wire FROM credits ORDER BY seq")]


@given(scenario())
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_arrival_order_gives_the_in_order_intervals(case: tuple[list[Reading], list[list[Reading]],
                                                                    list[bool]]) -> None:
    readings, batches, sent = case
    _, expected = feed_many(MeterState("m"), readings)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp)
        got = asyncio.run(_run(path, batches, sent))
        assert got == [(i.start, i.wh, i.quality.value) for i in expected]

        net: dict[int, int] = defaultdict(int)
        tip: ChainTip | None = None
        for item in _credits(path):
            body, digest = verify(item, expected_key=KEY.public_key, tip=tip)
            tip = ChainTip(body["seq"], digest)
            net[body["start"]] += body["wh"]
            assert body["kind"] == ("correction" if body["corrects"] is not None else "interval")
        assert dict(net) == {i.start: i.wh for i in expected}, "credits net to the intervals"
        assert sum(net.values()) == sum(i.wh for i in expected)
