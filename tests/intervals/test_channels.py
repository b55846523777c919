"""Channels through the real ledger: each (meter, channel) is a billing-grade series of its own.

Import and export readings of several meters arrive interleaved in any way, in batches of any
size, some late (placed between stored readings of their own series) and some twice, while an
"uplink" marks credits as sent at random moments (so late readings give corrections, not only
in-place revisions). Through the ledger's commit path, into a real file:

* per (meter, channel), the intervals are those of the pure engine fed that series alone, in
  order; they are contiguous and their Wh add up exactly to that channel's register delta; the
  credits of that channel form one chain (seq 1, 2, ... linked by hash, each signature valid),
  sign their channel, and net to exactly those intervals;
* the channels never mix: with the same readings of one channel, the intervals and credits of
  that channel are the same whatever the other channel's readings are, and however the two
  are interleaved and batched.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import sqlite3
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stellar_sdk import Keypair

from cloud_sync.credit import ChainTip, channel_of, verify
from gateway.channels import CHANNELS, Channel
from gateway.intervals import MeterState, Reading, feed_many
from gateway.intervals.engine import INTERVAL_MS
from gateway.ledger.store import DB_FILE, Ledger

T0 = 1_767_225_600_000  # a quarter-hour boundary, ms
KEY = Keypair.random()
METERS = ("m1", "m2")
POWER_W = 20_000
"""The simulated loads and panels stay below this (well under the ledger's default ceiling)."""

Series = tuple[str, Channel]
Arrival = list[Reading]


@st.composite
def series_readings(draw: st.DrawFn, meter: str, channel: Channel) -> list[Reading]:
    """One register's readings in time order, the first and the last on a quarter-hour boundary."""
    n = draw(st.integers(1, 14))
    t = T0 + draw(st.integers(0, 4)) * INTERVAL_MS
    wh = draw(st.integers(0, 10**6))
    out = [Reading(meter, t, wh, channel=channel)]
    for _ in range(n):
        gap = draw(st.sampled_from([1_000, 20_000, 60_000, 240_000, 900_000, 1_500_000, 4_000_000]))
        t += gap
        wh += draw(st.integers(0, POWER_W * gap // 3_600_000))
        out.append(Reading(meter, t, wh, channel=channel))
    last_t = (out[-1].t_ms // INTERVAL_MS + 1) * INTERVAL_MS
    out.append(Reading(meter, last_t, wh + draw(st.integers(0, POWER_W * (last_t - t) // 3_600_000)),
                       channel=channel))
    return out


@st.composite
def arrival_order(draw: st.DrawFn, readings: list[Reading]) -> Arrival:
    """The series as it arrives: the first and the last in place, some in between late, some twice."""
    inner = list(readings[1:-1])
    for _ in range(draw(st.integers(0, 3))):
        if len(inner) < 2:
            break
        i = draw(st.integers(0, len(inner) - 2))
        j = draw(st.integers(i + 1, len(inner) - 1))
        inner.insert(j, inner.pop(i))  # reading i arrives after the ones up to j: late
    dupes = draw(st.lists(st.sampled_from(readings), max_size=2))
    return [readings[0], *inner, *dupes, readings[-1]]


@st.composite
def delivery(draw: st.DrawFn, arrivals: dict[Series, Arrival],
             sends: bool) -> tuple[list[list[Reading]], list[bool]]:
    """All series' arrivals interleaved at random (each in its own order), cut into batches; with
    ``sends``, an uplink takes everything so far after some of them."""
    queues = {key: list(values) for key, values in arrivals.items()}
    tags = [key for key, values in queues.items() for _ in values]
    merged = [queues[key].pop(0) for key in draw(st.permutations(tags))]
    cuts = sorted(draw(st.sets(st.integers(1, len(merged) - 1), max_size=5)))
    batches = [merged[a:b] for a, b in zip([0, *cuts], [*cuts, len(merged)], strict=True)]
    sent = draw(st.lists(st.booleans() if sends else st.just(False), min_size=len(batches), max_size=len(batches)))
    return batches, sent


@st.composite
def scenario(draw: st.DrawFn) -> dict[str, Any]:
    """Readings of every (meter, channel), and for each channel a second, different version of the other."""
    readings = {(m, c): draw(series_readings(m, c)) for m in METERS for c in CHANNELS}
    others = {(m, c): draw(series_readings(m, c)) for m in METERS for c in CHANNELS}
    arrivals = {key: draw(arrival_order(values)) for key, values in readings.items()}
    other_arrivals = {key: draw(arrival_order(values)) for key, values in others.items()}
    sends = draw(st.booleans())
    runs = [draw(delivery(arrivals, sends))]
    for kept in CHANNELS:  # the same readings of `kept`, other readings of the other channel
        mixed = {key: arrivals[key] if key[1] is kept else other_arrivals[key] for key in arrivals}
        runs.append(draw(delivery(mixed, sends)))
    return {"readings": readings, "others": others, "runs": runs, "sends": sends}


async def _ingest(path: Path, batches: Sequence[list[Reading]], sent: Sequence[bool]) -> None:
    ledger = await Ledger.open(path, gateway_id="gw", keypair=KEY)
    try:
        for n, (batch, mark_sent) in enumerate(zip(batches, sent, strict=True)):
            await ledger.commit_readings(batch, now_ms=n)
            if mark_sent:  # an uplink took everything so far: late readings now give corrections
                with contextlib.closing(sqlite3.connect(path / DB_FILE)) as db:
                    db.execute("INSERT OR IGNORE INTO uplink_cursor (uplink) VALUES ('test')")
                    db.execute("UPDATE uplink_cursor SET delivered_id=(SELECT COALESCE(MAX(id),0) FROM credits)")
                    db.commit()
        # The ledger's own queries, per channel, agree with the table.
        for meter in METERS:
            for channel in CHANNELS:
                got = await ledger.stored_intervals(meter, 0, 2**40, channel=channel)
                assert {iv.channel for iv in got} <= {channel}
                assert [(iv.start, iv.wh) for iv in got] == [
                    (a, w) for a, _, w, _ in await ledger.intervals(meter, 0, 2**40, channel=channel)]
    finally:
        await ledger.close()


def _series_rows(path: Path) -> tuple[dict[Series, list[tuple[Any, ...]]], dict[Series, list[dict[str, Any]]]]:
    intervals: dict[Series, list[tuple[Any, ...]]] = defaultdict(list)
    credits: dict[Series, list[dict[str, Any]]] = defaultdict(list)
    with contextlib.closing(sqlite3.connect(path / DB_FILE)) as db:
        for meter, channel, *row in db.execute(
                'SELECT meter, channel, start, "end", wh, quality, register_start_wh, register_end_wh, method, '
                "reason, start_grade, end_grade FROM intervals ORDER BY meter, channel, start"):
            intervals[meter, Channel(channel)].append(tuple(row))
        for meter, channel, wire in db.execute("SELECT meter, channel, wire FROM credits ORDER BY id"):
            credits[meter, Channel(channel)].append(json.loads(wire))
    return intervals, credits


def _check_series(key: Series, readings: list[Reading], intervals: list[tuple[Any, ...]],
                  credits: list[dict[str, Any]]) -> None:
    starts = [row[0] for row in intervals]
    assert starts == list(range(readings[0].t_ms // 1000, readings[-1].t_ms // 1000, 900)), key
    assert all(row[1] - row[0] == 900 for row in intervals)
    assert sum(row[2] for row in intervals) == readings[-1].register_wh - readings[0].register_wh, \
        f"{key}: the intervals add up exactly to the register delta"
    assert all(a[5] == b[4] for a, b in itertools.pairwise(intervals)), "the register telescopes"
    _, in_order = feed_many(MeterState(key[0], channel=key[1]), readings)
    assert [row[:4] for row in intervals] == [
        (i.start, i.end, i.wh, i.quality.value) for i in in_order], f"{key}: as if read in order, alone"

    net: dict[int, int] = defaultdict(int)
    tip: ChainTip | None = None
    for item in credits:  # in id order: the outbox order, which is each chain's order
        body, digest = verify(item, expected_key=KEY.public_key, tip=tip)
        assert (body["meter"], channel_of(body), body["v"]) == (key[0], key[1].value, 2)
        tip = ChainTip(body["seq"], digest)
        net[body["start"]] += body["wh"]
    assert dict(net) == {row[0]: row[2] for row in intervals}, f"{key}: the credits net to the intervals"


def _content(credits: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """What a credit says about its energy, less what depends on when it was made (time, hashes)."""
    return [tuple(c["credit"][f] for f in ("seq", "kind", "corrects", "start", "wh", "quality",
                                            "register_start_wh", "register_end_wh", "channel")) for c in credits]


@given(scenario())
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
def test_each_channel_conserves_its_register_and_never_mixes_with_the_other(case: dict[str, Any]) -> None:
    readings, others = case["readings"], case["others"]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n, (batches, sent) in enumerate(case["runs"]):
            path = Path(tmp) / f"run{n}"
            asyncio.run(_ingest(path, batches, sent))
            results.append(_series_rows(path))
    for n, (intervals, credits) in enumerate(results):
        for key in readings:
            kept = CHANNELS[n - 1] if n else None
            source = readings if n == 0 or key[1] is kept else others
            _check_series(key, source[key], intervals[key], credits[key])
    base_intervals, base_credits = results[0]
    for kept, (intervals, credits) in zip(CHANNELS, results[1:], strict=True):
        for key in readings:
            if key[1] is not kept:
                continue
            assert intervals[key] == base_intervals[key], \
                f"{key}: the {kept} intervals changed when only the other channel's readings did"
            if not case["sends"]:
                # Nothing sent: every late change was a revision in place, so the chain's content is fixed by
                # the channel's own readings (with sends, corrections depend on when each send happened).
                assert _content(credits[key]) == _content(base_credits[key]), \
                    f"{key}: the {kept} credits changed when only the other channel's readings did"
