"""One ingest transaction: readings in, intervals, credits, revisions and corrections out.

Runs inside the ledger's write transaction (see :meth:`Ledger.commit_readings`).
In-order readings go through the pure engine; late readings are placed
between their stored neighbours and the intervals they change are either
revised in place — while their credit has not left the box: the credit is
re-signed and the meter's chain re-linked from there — or, once it has,
answered with a correction credit that references the credit it corrects.
Nothing that left the box is ever changed.

Every series is a (meter, channel) (:data:`SeriesKey`): a reading of the export register moves
only the export channel's state, closes only export intervals and extends only the export
chain, and a late export reading is placed between stored export readings only. The statements
stay batched: the channel is one more column of the same rows and one more term of the same keys.

Two limits keep one reading from hurting the box or the bill:

* every reading is judged against a power ceiling; one that comes without
  (a source that forgot) gets :data:`DEFAULT_MAX_POWER_W`, so no reading can
  credit more than that over its elapsed time;
* the intervals a long gap closes are written in slices of
  :data:`MAX_INTERVALS_PER_STEP`, the loop running other tasks in between, so a
  month's outage filled at once neither stalls the event loop nor grows memory.

A reading stamped by the meter's own clock that is older than the meter's last
one is refused (``out_of_order``), never placed: a meter clock that went back
is not a late reading (the gateway's own late readings are placed as above).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias

import aiosqlite

from cloud_sync.credit import GENESIS_HASH, CreditBody, sign
from gateway.channels import Channel
from gateway.credits import Tip
from gateway.intervals import Disposition, Interval, MeterState, Quality, Reading, feed
from gateway.intervals.engine import (
    INTERVAL_MS,
    INTERVAL_S,
    BoundaryValue,
    Event,
    Grade,
    Run,
    interpolate,
    reinterpolate,
    segment_grade,
)
from gateway.intervals.plausibility import DEFAULT_MAX_POWER_W, plausible_rise
from gateway.intervals.revision import Change, plan_changes

if TYPE_CHECKING:
    from gateway.ledger.store import CommitResult, Ledger

SeriesKey: TypeAlias = tuple[str, Channel]
"""(meter, channel): one series of readings, intervals and credits."""

KEPT_INTERVALS = 1000
"""How many new intervals a batch's result lists (see :attr:`CommitResult.intervals`); the rest are counted."""

MAX_INTERVALS_PER_STEP = 100
"""Intervals signed and written per slice (a day of one meter; about 30 ms on a loaded x86 core, so
some 100 ms on a Pi): between slices the event loop serves the sources, the web and the uplinks."""


async def _rows(db: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in await db.execute_fetchall(sql, params)]


def _stored_interval(meter: str, channel: Channel, row: tuple[Any, ...]) -> Interval:
    start, end, wh, quality, reg_start, reg_end, method, reason, start_grade, end_grade = row
    return Interval(meter, int(start), int(end), int(wh), Quality(quality), int(reg_start), int(reg_end),
                    method, reason, Grade.decode(start_grade), Grade.decode(end_grade), channel)


class IngestBatch:
    def __init__(self, ledger: Ledger, states: dict[SeriesKey, MeterState], tips: dict[SeriesKey, Tip],
                 now_ms: int) -> None:
        from gateway.ledger.store import CommitResult

        self.ledger = ledger
        self.states = states
        self.tips = tips
        self.now_ms = now_ms
        self.result: CommitResult = CommitResult()
        self.max_id: int | None = None
        self._touched: set[SeriesKey] = set()
        self._credits_written = False
        self._rechain: dict[SeriesKey, tuple[int, int]] = {}
        """Per (meter, channel), the lowest (seq, credit id) revised in place: its chain is re-signed from there
        once."""

    async def run(self, db: aiosqlite.Connection, readings: Sequence[Reading]) -> None:
        late: list[Reading] = []
        backwards: list[Reading] = []
        reading_rows: list[tuple[Any, ...]] = []
        event_rows: list[tuple[Any, ...]] = []
        runs: list[Run] = []
        states = self.states
        dispositions = self.result.dispositions
        quick: dict[SeriesKey, _Quick] = {}
        """Per series, its newest reading taken on the fast path (state not yet rebuilt) and its row."""
        estimate_gap_ms = self.ledger.estimate_gap_ms
        for reading in readings:
            meter, channel = reading.meter, reading.channel
            key = (meter, channel)
            state = states.get(key)
            if state is None:
                state = states[key] = MeterState(meter, channel=channel)
            q = quick.get(key)
            if _continues(state, q, reading):
                virtual = reading.register_wh + state.offset_wh
                quick[key] = _Quick(reading.t_ms, reading.register_wh, virtual,
                                    (meter, reading.t_ms, reading.register_wh, reading.source, ACCEPTED, virtual,
                                     channel))  # a StrEnum binds as its text
                dispositions.append((reading, ACCEPTED))
                continue
            if q is not None:  # the slow path needs the state as it stands, and the row before it
                del quick[key]
                state = states[key] = _caught_up(state, q)
                reading_rows.append(q.row)
            if reading.max_power_w is None:
                reading = replace(reading, max_power_w=DEFAULT_MAX_POWER_W)
            step = feed(state, reading, estimate_gap_ms=estimate_gap_ms)
            if step.disposition is Disposition.LATE:
                (backwards if reading.meter_clock else late).append(reading)
                continue
            dispositions.append((reading, step.disposition.value))
            reading_rows.append((meter, reading.t_ms, reading.register_wh, reading.source,
                                 step.disposition.value, step.virtual_wh, channel))
            for event in step.events:
                event = _of_channel(event, channel)
                event_rows.append((self.now_ms, meter, event.kind, event.detail))
                self.result.events.append((meter, event))
            if step.disposition in (Disposition.ACCEPTED, Disposition.SUSPECT):
                states[key] = step.state
                self._touched.add(key)
            runs.extend(step.runs)
        for key, q in quick.items():
            states[key] = _caught_up(states[key], q)
            reading_rows.append(q.row)
            self._touched.add(key)
        await db.executemany(
            "INSERT INTO readings (meter, t_ms, register_wh, source, disposition, virtual_wh, channel) "
            "VALUES (?,?,?,?,?,?,?)", reading_rows)
        if event_rows:
            await db.executemany("INSERT INTO events (t_ms, meter, kind, detail) VALUES (?,?,?,?)", event_rows)
        await self._insert_runs(db, runs)
        for reading in backwards:
            await self._meter_clock_back(db, reading)
        for reading in sorted(late, key=lambda r: r.t_ms):
            await self._late(db, reading)
        await self._rechain_all(db)
        await self._save_states(db)
        if self._credits_written:
            (max_id,) = (await _rows(db, "SELECT MAX(id) FROM credits"))[0]
            self.max_id = int(max_id)

    # ---- new intervals --------------------------------------------------------

    async def _insert_runs(self, db: aiosqlite.Connection, runs: Sequence[Run]) -> None:
        """Write the runs' intervals in slices; a long outage yields to the loop between them."""
        pending: list[Interval] = []
        for run in runs:
            for interval in run.intervals():
                pending.append(interval)
                if len(pending) == MAX_INTERVALS_PER_STEP:
                    await self._insert_new(db, pending)
                    pending = []
                    await asyncio.sleep(0)
        await self._insert_new(db, pending)

    async def _insert_new(self, db: aiosqlite.Connection, intervals: Sequence[Interval]) -> None:
        """Sign and write new intervals; each interval row carries its credit's id (schema 7: a credit is
        found by id, the outbox needs no per-series index that every commit would dirty per meter)."""
        seqs: list[int] = []
        credit_rows = []
        for interval in intervals:
            key = (interval.meter, interval.channel)
            signed, tip = self.ledger._sign(interval, self.tips.get(key, Tip()), self.now_ms)
            self.tips[key] = tip
            self._touched.add(key)
            seqs.append(tip.seq)
            credit_rows.append((interval.meter, interval.channel, tip.seq, interval.start, interval.wh,
                                signed.hash, signed.wire_json(), self.now_ms))
            self.result.intervals_closed += 1
            if len(self.result.intervals) < KEPT_INTERVALS:
                self.result.intervals.append(interval)
        if not credit_rows:
            return
        await db.executemany(
            "INSERT INTO credits (meter, channel, seq, start, wh, hash, wire, created_ms) VALUES (?,?,?,?,?,?,?,?)",
            credit_rows)
        # One statement, one writer: AUTOINCREMENT gave the rows consecutive ids ending at the last one.
        (last_id,) = (await _rows(db, "SELECT last_insert_rowid()"))[0]
        first_id = int(last_id) - len(credit_rows) + 1
        await db.executemany(
            'INSERT INTO intervals (meter, start, "end", wh, quality, register_start_wh, register_end_wh, '
            "credit_seq, method, reason, start_grade, end_grade, channel, credit_id) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [_interval_row(interval, seq, first_id + k) for k, (interval, seq) in enumerate(zip(intervals, seqs,
                                                                                               strict=True))])
        self._credits_written = True

    # ---- late readings --------------------------------------------------------

    async def _refuse(self, db: aiosqlite.Connection, reading: Reading, why: str) -> None:
        self.result.dispositions.append((reading, why))
        await db.execute(
            "INSERT INTO readings (meter, t_ms, register_wh, source, disposition, channel) VALUES (?,?,?,?,?,?)",
            (reading.meter, reading.t_ms, reading.register_wh, reading.source, why, reading.channel.value))

    async def _meter_clock_back(self, db: aiosqlite.Connection, reading: Reading) -> None:
        """A meter-stamped reading at or before the meter's last: a redelivery, or its clock went back.

        Neither is stored (a meter whose clock went back would otherwise fill the table with
        refusals): a broker's redelivery of a stored reading is a duplicate, anything else is refused.
        """
        same = await _rows(db, "SELECT 1 FROM readings WHERE meter=? AND channel=? AND t_ms=? AND register_wh=? "
                               "AND virtual_wh IS NOT NULL",
                           (reading.meter, reading.channel.value, reading.t_ms, reading.register_wh))
        duplicate = bool(same) or await self._bracketed(db, reading)
        self.result.dispositions.append((reading, Disposition.DUPLICATE.value if duplicate else "out_of_order"))

    async def _bracketed(self, db: aiosqlite.Connection, reading: Reading) -> bool:
        """Does the reading fit between two stored readings of its series, one interval apart at most?

        Readings inside an interval are not stored (see :func:`_continues`), so a broker's
        redelivery of one finds no row of its own; it still lies on the line between the stored
        readings around it. A meter whose clock went back does not: its register has gone on
        counting, above the reading stored after that time.
        """
        t, raw = reading.t_ms, reading.register_wh
        before, after = await _neighbours(db, reading)
        if not before or not after:
            return False
        (b_t, b_raw, b_v), (a_t, a_raw, a_v) = before[0], after[0]
        return bool(a_t - b_t <= INTERVAL_MS and b_v - b_raw == a_v - a_raw and b_raw <= raw <= a_raw
                and t // INTERVAL_MS == b_t // INTERVAL_MS)

    async def _late(self, db: aiosqlite.Connection, reading: Reading) -> None:
        meter, t, raw, channel = reading.meter, reading.t_ms, reading.register_wh, reading.channel
        key = (meter, channel)
        same = await _rows(db, "SELECT register_wh FROM readings WHERE meter=? AND channel=? AND t_ms=? "
                               "AND virtual_wh IS NOT NULL", (meter, channel.value, t))
        if same:
            await self._refuse(db, reading, "duplicate" if same[0][0] == raw else "conflict")
            return
        before, after = await _neighbours(db, reading)
        if not after:
            await self._refuse(db, reading, "too_late")
            return
        a_t, a_raw, a_v = after[0]
        offset = a_v - a_raw
        prior = before[0] if before else None
        if prior is None and await self._covered(db, key, a_t):
            # Its lower neighbour was pruned (retention or low disk): the intervals up to the reading
            # it would be interpolated to were built from readings no longer here; re-deriving them
            # from one side would overwrite measured values with a straight line.
            await self._refuse(db, reading, "before_retention")
            return
        if prior is not None and prior[2] - prior[1] != offset:
            await self._refuse(db, reading, "late_across_epoch")
            return
        virtual = raw + offset
        if (prior is not None and virtual < prior[2]) or virtual > a_v:
            await self._refuse(db, reading, "late_inconsistent")
            return
        values = reinterpolate((prior[0], prior[2]) if prior else None, (t, virtual), (a_t, a_v),
                               estimate_gap_ms=self.ledger.estimate_gap_ms)
        state = self.states[key]
        lo = (values[0].t_s if values else t // 1000) - INTERVAL_S
        hi = (values[-1].t_s if values else t // 1000) + INTERVAL_S
        rows = await _rows(db, 'SELECT start, "end", wh, quality, register_start_wh, register_end_wh, method, '
                               "reason, start_grade, end_grade, credit_seq, credit_id FROM intervals "
                               "WHERE meter=? AND channel=? AND start BETWEEN ? AND ?", (meter, channel.value, lo, hi))
        stored = {int(r[0]): _stored_interval(meter, channel, r[:10]) for r in rows}
        seqs = {int(r[0]): (int(r[10]), int(r[11])) for r in rows}
        known: dict[int, BoundaryValue] = {}
        for interval in stored.values():
            known[interval.start] = BoundaryValue(interval.start, interval.register_start_wh, interval.start_grade)
            known[interval.end] = BoundaryValue(interval.end, interval.register_end_wh, interval.end_grade)
        if state.anchor_s is not None and state.anchor_wh is not None:
            known[state.anchor_s] = BoundaryValue(state.anchor_s, state.anchor_wh, state.anchor_grade)
        if prior is not None and not _bridged_by((prior[0], prior[2]), (a_t, a_v), known,
                                                 self.ledger.estimate_gap_ms):
            # Readings between its two stored neighbours were pruned (by an older gateway version's
            # low-disk pruning): the boundaries there are not what the neighbours alone imply, so
            # re-deriving them from the neighbours would overwrite values built from lost readings.
            await self._refuse(db, reading, "before_retention")
            return
        changes, anchor = plan_changes(meter, values, known, stored, state.anchor_s, channel=channel)
        if any(change.interval.wh < 0 for change in changes):
            await self._refuse(db, reading, "late_inconsistent")
            return
        self.result.dispositions.append((reading, "late"))
        await db.execute("INSERT INTO readings (meter, t_ms, register_wh, source, disposition, virtual_wh, channel) "
                         "VALUES (?,?,?,?,?,?,?)", (meter, t, raw, reading.source, "late", virtual, channel.value))
        for change in changes:
            await self._apply(db, change, seqs)
        merged = {**known, **{v.t_s: v for v in values}}
        if anchor is not None and anchor in merged:
            fixed = merged[anchor]
            self.states[key] = replace(state, anchor_s=anchor, anchor_wh=fixed.wh, anchor_grade=fixed.grade)
            self._touched.add(key)

    async def _covered(self, db: aiosqlite.Connection, key: SeriesKey, after_ms: int) -> bool:
        """Does the series have a fixed boundary before ``after_ms``, its oldest stored reading?

        Such a boundary can only have come from a reading older than every stored one, i.e. a
        pruned one; a boundary on ``after_ms`` itself is that reading's own value.
        """
        # Time-ordered key (start, meter, channel): the scan from the oldest start stops at the series' first.
        (first,) = await _rows(db, "SELECT start FROM intervals WHERE meter=? AND channel=? ORDER BY start LIMIT 1",
                               (key[0], key[1].value)) or [(None,)]
        anchor = self.states[key].anchor_s
        fixed = [int(x) for x in (first[0], anchor) if x is not None]
        return bool(fixed) and min(fixed) * 1000 < after_ms

    async def _apply(self, db: aiosqlite.Connection, change: Change, seqs: dict[int, tuple[int, int]]) -> None:
        interval = change.interval
        if change.previous is None:
            await self._insert_new(db, [interval])
            return
        seq, credit_id = seqs[interval.start]
        key, channel = (interval.meter, interval.channel), interval.channel.value
        await db.execute(
            'UPDATE intervals SET wh=?, quality=?, register_start_wh=?, register_end_wh=?, method=?, reason=?, '
            "start_grade=?, end_grade=? WHERE meter=? AND channel=? AND start=?",
            (interval.wh, interval.quality.value, interval.register_start_wh, interval.register_end_wh,
             interval.method, interval.reason, interval.start_grade.encode(), interval.end_grade.encode(),
             interval.meter, channel, interval.start))
        if credit_id > await _sent_horizon(db):
            await self._revise_unsent(db, interval, seq, credit_id)
            self.result.revised += 1
            return
        delta = interval.wh - change.previous.wh
        signed, tip = self.ledger._sign(interval, self.tips[key], self.now_ms, corrects=seq, wh=delta)
        self.tips[key] = tip
        self._touched.add(key)
        await db.execute(
            "INSERT INTO credits (meter, channel, seq, start, wh, hash, wire, created_ms) VALUES (?,?,?,?,?,?,?,?)",
            (interval.meter, channel, tip.seq, interval.start, delta, signed.hash,
             signed.wire_json(), self.now_ms))
        self._credits_written = True
        self.result.corrections += 1

    async def _revise_unsent(self, db: aiosqlite.Connection, interval: Interval, seq: int, credit_id: int) -> None:
        """Put an unsent credit's new values in place; it and its successors are re-signed once, at the end."""
        key = (interval.meter, interval.channel)
        (wire,) = (await _rows(db, "SELECT wire FROM credits WHERE id=?", (credit_id,)))[0]
        item = json.loads(wire)
        item["credit"].update(wh=interval.wh, quality=interval.quality.value,
                              register_start_wh=interval.register_start_wh, register_end_wh=interval.register_end_wh)
        await db.execute("UPDATE credits SET wire=?, wh=? WHERE id=?",
                         (json.dumps(item, separators=(",", ":")), interval.wh, credit_id))
        self._rechain[key] = min((seq, credit_id), self._rechain.get(key, (seq, credit_id)))

    async def _rechain_all(self, db: aiosqlite.Connection) -> None:
        for key, (seq, credit_id) in self._rechain.items():
            await self._rewrite_chain(db, key, seq, credit_id)

    async def _rewrite_chain(self, db: aiosqlite.Connection, key: SeriesKey, seq: int, credit_id: int) -> None:
        """Re-sign a series' credits from ``seq`` on and re-link their chain.

        Everything from ``seq`` on is unsent (an uplink sends a series' credits in
        order, and nothing past the sent horizon has left), so no credit that left
        the box is touched. Done once per series per batch, however many intervals moved.
        A credit keeps its encoding version (a v1 import credit is re-signed as v1).

        Found by id (``credit_id`` is the credit of ``seq``): within a series ids grow with seqs, so
        its successors are the series' rows after that id (read from the unsent tail of the outbox)
        and its predecessor the series' row just before it (normally one commit back).
        """
        meter, channel = key[0], key[1].value
        prev = await _rows(db, "SELECT hash FROM credits WHERE id<? AND meter=? AND channel=? AND seq=? "
                               "ORDER BY id DESC LIMIT 1", (credit_id, meter, channel, seq - 1)) if seq > 1 else []
        prev_hash = prev[0][0] if prev else GENESIS_HASH
        rows = await _rows(db, "SELECT id, seq, wire FROM credits WHERE id>=? AND meter=? AND channel=? ORDER BY id",
                           (credit_id, meter, channel))
        last_seq = seq
        for row_id, credit_seq, wire in rows:
            body = json.loads(wire)["credit"]
            body["prev_hash"] = prev_hash
            signed = sign(CreditBody(**body), self.ledger._keypair)
            await db.execute("UPDATE credits SET hash=?, wire=? WHERE id=?",
                             (signed.hash, signed.wire_json(), row_id))
            prev_hash, last_seq = signed.hash, credit_seq
        self.tips[key] = Tip(last_seq, prev_hash)
        self._touched.add(key)

    # ---- state ----------------------------------------------------------------

    async def _save_states(self, db: aiosqlite.Connection) -> None:
        rows = []
        for key in self._touched:
            meter, channel = key
            s, tip = self.states.get(key) or MeterState(meter, channel=channel), self.tips.get(key, Tip())
            rows.append((meter, channel.value, s.last_t_ms, s.last_wh, s.anchor_s, s.anchor_wh,
                         s.anchor_grade.quality.value,
                         tip.seq, tip.hash, s.anchor_grade.encode(), s.offset_wh, s.last_raw_wh,
                         json.dumps([list(p) for p in s.pending]) if s.pending else "[]"))
        await db.executemany(
            "INSERT INTO meters (meter, channel, last_t_ms, last_wh, anchor_s, anchor_wh, anchor_quality, last_seq, "
            "last_hash, anchor_grade, register_offset_wh, last_raw_wh, pending) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT(meter, channel) DO UPDATE SET last_t_ms=excluded.last_t_ms, last_wh=excluded.last_wh, "
            "anchor_s=excluded.anchor_s, anchor_wh=excluded.anchor_wh, anchor_quality=excluded.anchor_quality, "
            "last_seq=excluded.last_seq, last_hash=excluded.last_hash, anchor_grade=excluded.anchor_grade, "
            "register_offset_wh=excluded.register_offset_wh, last_raw_wh=excluded.last_raw_wh, "
            "pending=excluded.pending", rows)


ACCEPTED = Disposition.ACCEPTED.value


class _Quick(NamedTuple):
    t_ms: int
    raw_wh: int
    virtual_wh: int
    row: tuple[Any, ...]


def _continues(state: MeterState, quick: _Quick | None, reading: Reading) -> bool:
    """Is ``reading`` the plain next reading of its meter inside the same 15-minute interval?

    Then :func:`~gateway.intervals.feed` would only move the last reading forward: no boundary is
    crossed (so no interval closes and the anchor stays), nothing is held as suspect, no former
    series or wrap is in play, and the rise is within the meter's ceiling. Checked here without
    rebuilding the frozen state for every reading; the hypothesis test holds it equal to ``feed``.

    Such a reading is not stored either unless it is its meter's newest in the batch: no boundary
    value depends on it (a boundary is valued from the readings either side of it, and those are
    stored), and the register holds its energy if the process dies before the commit.
    """
    if state.pending or state.formers:
        return False
    if quick is not None:
        last_t, last_raw, last_v = quick.t_ms, quick.raw_wh, quick.virtual_wh
    else:
        if state.last_t_ms is None or state.last_raw_wh is None or state.last_wh is None:
            return False
        last_t, last_raw, last_v = state.last_t_ms, state.last_raw_wh, state.last_wh
    t, raw = reading.t_ms, reading.register_wh
    if t <= last_t or t // INTERVAL_MS != last_t // INTERVAL_MS or raw < last_raw:
        return False
    if raw + state.offset_wh < last_v:
        return False
    max_power_w = reading.max_power_w if reading.max_power_w is not None else DEFAULT_MAX_POWER_W
    return plausible_rise(last_t, last_raw, t, raw, max_power_w)


def _caught_up(state: MeterState, quick: _Quick) -> MeterState:
    """The state :func:`feed` would have reached through the fast-path readings."""
    return MeterState(state.meter, quick.t_ms, quick.virtual_wh, state.anchor_s, state.anchor_wh,
                      state.anchor_grade, state.offset_wh, quick.raw_wh, (), (), state.channel)


def _interval_row(interval: Interval, seq: int, credit_id: int) -> tuple[Any, ...]:
    return (interval.meter, interval.start, interval.end, interval.wh, interval.quality.value,
            interval.register_start_wh, interval.register_end_wh, seq, interval.method, interval.reason,
            interval.start_grade.encode(), interval.end_grade.encode(), interval.channel, credit_id)


def _bridged_by(before: tuple[int, int], after: tuple[int, int], known: dict[int, BoundaryValue],
               estimate_gap_ms: int) -> bool:
    """Were the stored boundaries strictly between two readings derived from those two alone?

    Arguments are (t_ms, virtual Wh). True when no reading between them was used, or all such
    readings are still stored (then they would be the neighbours instead). False when any
    stored boundary there is not the straight line between the two, or is actual although the
    two are more than an interval apart: readings between them built it and are gone.
    Estimated and substituted grades may differ (``estimate_gap_ms`` is configuration).
    """
    bt, bv = before
    at, av = after
    expected = segment_grade(at - bt, estimate_gap_ms)
    for b_s, value in known.items():
        b_ms = b_s * 1000
        if not bt < b_ms < at:
            continue
        if value.wh != interpolate(bt, bv, at, av, b_ms):
            return False
        if (value.grade.quality is Quality.ACTUAL) != (expected.quality is Quality.ACTUAL):
            return False
    return True


def _of_channel(event: Event, channel: Channel) -> Event:
    """An export series' event says so (the events table keys by meter only; import reads as before)."""
    if channel is Channel.IMPORT:
        return event
    return Event(event.kind, f"{channel} channel: {event.detail}")


async def _neighbours(db: aiosqlite.Connection,
                      reading: Reading) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The stored readings of the reading's series just before and just after it (used ones only)."""
    params = (reading.meter, reading.channel.value, reading.t_ms)
    before = await _rows(db, "SELECT t_ms, register_wh, virtual_wh FROM readings WHERE meter=? AND channel=? "
                             "AND t_ms<? AND virtual_wh IS NOT NULL ORDER BY t_ms DESC LIMIT 1", params)
    after = await _rows(db, "SELECT t_ms, register_wh, virtual_wh FROM readings WHERE meter=? AND channel=? "
                            "AND t_ms>? AND virtual_wh IS NOT NULL ORDER BY t_ms LIMIT 1", params)
    return before, after


async def _sent_horizon(db: aiosqlite.Connection) -> int:
    """The highest credit id that has left the box or may have: delivered, in a batch, or pulled."""
    (row,) = await _rows(db, "SELECT MAX(x) FROM (SELECT MAX(delivered_id) AS x FROM uplink_cursor "
                             "UNION ALL SELECT MAX(last_id) FROM uplink_batches)")
    return int(row[0] or 0)

