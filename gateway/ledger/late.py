"""Late readings in an ingest transaction: placed between their stored neighbours, and what they change.

A reading older than its series' newest is placed between the stored readings either side of
it; the intervals it changes are revised in place while their credit has not left the box (the
credit is re-signed and the series' chain re-linked from there, once per batch), or answered
with a correction credit once it has. Nothing that left the box is ever changed. A meter-stamped
reading older than the meter's last is a redelivery or a clock gone back, never placed.

A mixin of :class:`~gateway.ledger.ingest.IngestBatch` (the batch's state and its new-interval
writer are there), apart so that each module stays readable on its own.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeAlias

import aiosqlite

from cloud_sync.credit import GENESIS_HASH, CreditBody, sign
from gateway.channels import Channel
from gateway.credits import Tip
from gateway.intervals import Disposition, Interval, MeterState, Quality, Reading
from gateway.intervals.engine import (
    INTERVAL_MS,
    INTERVAL_S,
    BoundaryValue,
    Grade,
    interpolate,
    reinterpolate,
    segment_grade,
)
from gateway.intervals.revision import Change, plan_changes
from gateway.ledger.connection import rows as _rows
from gateway.ledger.credit_rows import INSERT_CREDIT, UPDATE_CREDIT, credit_columns

if TYPE_CHECKING:
    from collections.abc import Sequence

    from gateway.ledger.store import CommitResult, Ledger

SeriesKey: TypeAlias = tuple[str, Channel]
"""(meter, channel): one series of readings, intervals and credits."""


class LatePlacement:
    """The late-reading half of :class:`~gateway.ledger.ingest.IngestBatch`."""

    ledger: Ledger
    states: dict[SeriesKey, MeterState]
    tips: dict[SeriesKey, Tip]
    now_ms: int
    result: CommitResult
    _touched: set[SeriesKey]
    _credits_written: bool
    _rechain: dict[SeriesKey, tuple[int, int]]

    async def _insert_new(self, db: aiosqlite.Connection, intervals: Sequence[Interval]) -> None:
        raise NotImplementedError  # IngestBatch's: sign and write new intervals

    async def _refuse(self, db: aiosqlite.Connection, reading: Reading, why: str) -> None:
        self.result.dispositions.append((reading, why))
        await db.execute(
            "INSERT INTO readings (meter, t_ms, register_wh, source, disposition, channel) VALUES (?,?,?,?,?,?) "
            "ON CONFLICT DO NOTHING",
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

        Readings inside an interval are not stored (see :meth:`~gateway.ledger.ingest.IngestBatch.plan`), so a broker's
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
                         "VALUES (?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                         (meter, t, raw, reading.source, "late", virtual, channel.value))
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
        await db.execute(INSERT_CREDIT, credit_columns(interval.meter, channel, tip.seq, interval.start, delta,
                                                       signed.hash, self.now_ms, signed.wire_json()))
        self._credits_written = True
        self.result.corrections += 1

    async def _revise_unsent(self, db: aiosqlite.Connection, interval: Interval, seq: int, credit_id: int) -> None:
        """Put an unsent credit's new values in place; it and its successors are re-signed once, at the end."""
        key = (interval.meter, interval.channel)
        (meter, channel, credit_seq, start, digest, created_ms, wire) = (await _rows(
            db, "SELECT meter, channel, seq, start, hash, created_ms, wire FROM credits WHERE id=?", (credit_id,)))[0]
        item = json.loads(wire)
        item["credit"].update(wh=interval.wh, quality=interval.quality.value,
                              register_start_wh=interval.register_start_wh, register_end_wh=interval.register_end_wh)
        # Not signed again yet (the hash and signature are stale until _rewrite_chain, in this transaction).
        columns = credit_columns(meter, channel, credit_seq, start, interval.wh, digest, created_ms,
                                 json.dumps(item, separators=(",", ":")))
        await db.execute(UPDATE_CREDIT, (*columns[4:], credit_id))
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
        rows = await _rows(db, "SELECT id, seq, start, wh, created_ms, wire FROM credits WHERE id>=? AND meter=? "
                               "AND channel=? ORDER BY id", (credit_id, meter, channel))
        last_seq = seq
        for row_id, credit_seq, start, wh, created_ms, wire in rows:
            body = json.loads(wire)["credit"]
            body["prev_hash"] = prev_hash
            signed = sign(CreditBody(**body), self.ledger._keypair)
            columns = credit_columns(meter, channel, credit_seq, start, wh, signed.hash, created_ms,
                                     signed.wire_json())
            await db.execute(UPDATE_CREDIT, (*columns[4:], row_id))
            prev_hash, last_seq = signed.hash, credit_seq
        self.tips[key] = Tip(last_seq, prev_hash)
        self._touched.add(key)


def _stored_interval(meter: str, channel: Channel, row: tuple[Any, ...]) -> Interval:
    start, end, wh, quality, reg_start, reg_end, method, reason, start_grade, end_grade = row
    return Interval(meter, int(start), int(end), int(wh), Quality(quality), int(reg_start), int(reg_end),
                    method, reason, Grade.decode(start_grade), Grade.decode(end_grade), channel)


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
