"""One ingest transaction: readings in, intervals, credits, revisions and corrections out.

Runs inside the ledger's write transaction (see :meth:`Ledger.commit_readings`).
In-order readings go through the pure engine; late readings are placed
between their stored neighbours and the intervals they change are either
revised in place — while their credit has not left the box: the credit is
re-signed and the meter's chain re-linked from there — or, once it has,
answered with a correction credit that references the credit it corrects.
Nothing that left the box is ever changed (late readings: :mod:`gateway.ledger.late`).

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
import sqlite3
from collections.abc import Awaitable, Sequence
from dataclasses import fields
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import aiosqlite
import structlog

from gateway.channels import Channel
from gateway.credits import IntervalSigner, Tip
from gateway.intervals import Disposition, Interval, MeterState, Reading, feed
from gateway.intervals.engine import (
    INTERVAL_MS,
    Event,
    Run,
)
from gateway.intervals.plausibility import DEFAULT_MAX_POWER_W, MS_PER_HOUR, ROUNDING_SLACK_WH
from gateway.ledger.credit_rows import INSERT_CREDIT, compact_columns
from gateway.ledger.late import LatePlacement, SeriesKey

if TYPE_CHECKING:
    from gateway.ledger.store import CommitResult, Ledger

log = structlog.get_logger("gateway.ledger")

KEPT_INTERVALS = 1000
"""How many new intervals a batch's result lists (see :attr:`CommitResult.intervals`); the rest are counted."""

MAX_INTERVALS_PER_STEP = 100
"""Intervals signed and written per slice (a day of one meter; about 30 ms on a loaded x86 core, so
some 100 ms on a Pi): between slices the event loop serves the sources, the web and the uplinks."""

MAX_ONE_STEP_INTERVALS = 2000
"""A batch closing more intervals than this (an outage being filled) is written slice by slice, as it is
signed, so its rows are never all held at once; below it, its rows are built first and written in one step
on the connection's thread (:meth:`IngestBatch.write_one_step`): about 2 MB of rows at most."""

_GENESIS_TIP = Tip()


async def _rows(db: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in await db.execute_fetchall(sql, params)]




class IngestBatch(LatePlacement):
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
        self._rechain = {}
        """Per (meter, channel), the lowest (seq, credit id) revised in place: its chain is re-signed from there
        once."""
        # What plan() found, and the rows prepare_one_step() builds.
        self._late_readings: list[Reading] = []
        self._backwards: list[Reading] = []
        self._reading_rows: list[tuple[Any, ...]] = []
        self._event_rows: list[tuple[Any, ...]] = []
        self._runs: list[Run] = []
        self._interval_rows: list[tuple[Any, ...]] = []
        """Interval rows without their last column, the credit id: known only once the credits are in."""
        self._credit_rows_out: list[tuple[Any, ...]] = []
        self._state_rows_out: list[tuple[Any, ...]] = []
        self._signer: IntervalSigner | None = None

    def plan(self, readings: Sequence[Reading]) -> None:
        """The engine's pass over the batch (CPU only, no database): rows, runs, and the late ones.

        Most readings take the fast path: the plain next reading of its series inside the same
        15-minute interval. :func:`~gateway.intervals.feed` would only move the last reading
        forward: no boundary is crossed (so no interval closes and the anchor stays), nothing is
        held as suspect, no former series or wrap is in play, and the rise is within the meter's
        ceiling. Checked inline, without rebuilding the frozen state for every reading; the state
        is caught up once, when a reading of the series needs the engine or at the end of the
        batch (``tests/test_ledger_rows.py`` holds the result equal to ``feed``'s, by hypothesis).

        Such a reading is not stored either unless it is its series' newest in the batch: no boundary
        value depends on it (a boundary is valued from the readings either side of it, and those are
        stored), and the register holds its energy if the process dies before the commit.
        """
        late, backwards = self._late_readings, self._backwards
        reading_rows, event_rows, runs = self._reading_rows, self._event_rows, self._runs
        states = self.states
        dispositions = self.result.dispositions
        touched = self._touched
        quick: dict[SeriesKey, _Quick] = {}
        """Per series, its newest reading taken on the fast path (state not yet caught up)."""
        estimate_gap_ms = self.ledger.estimate_gap_ms
        accepted = ACCEPTED
        for reading in readings:
            key = (reading.meter, reading.channel)
            q = quick.get(key)
            t, raw = reading.t_ms, reading.register_wh
            if q is not None:
                last_t, last_raw, last_v, offset, _ = q
                fast = True
            else:
                known = states.get(key)
                state = known if known is not None else MeterState(reading.meter, channel=reading.channel)
                if known is None:
                    states[key] = state
                offset = state.offset_wh
                if (state.pending or state.formers or state.last_t_ms is None or state.last_raw_wh is None
                        or state.last_wh is None):
                    last_t = last_raw = last_v = 0
                    fast = False
                else:
                    last_t, last_raw, last_v = state.last_t_ms, state.last_raw_wh, state.last_wh
                    fast = True
            # The fast path's test (see above), with the ceiling as plausible_rise computes it: for every reading.
            if (fast and last_t < t and t // INTERVAL_MS == last_t // INTERVAL_MS and last_raw <= raw
                    and last_v <= raw + offset):
                max_power_w = reading.max_power_w
                if raw - last_raw <= ((DEFAULT_MAX_POWER_W if max_power_w is None else max_power_w)
                                      * (t - last_t) / MS_PER_HOUR + ROUNDING_SLACK_WH):
                    quick[key] = (t, raw, raw + offset, offset, reading)  # a _Quick, built as a plain tuple
                    dispositions.append((reading, accepted))
                    continue
            meter, channel = key
            if q is not None:  # the slow path needs the state as it stands, and the row before it
                del quick[key]
                state = states[key] = _caught_up(states[key], q)
                reading_rows.append(_quick_row(q))
            if reading.max_power_w is None:
                reading = _with_default_ceiling(reading)
            step = feed(state, reading, estimate_gap_ms=estimate_gap_ms)
            if step.disposition is Disposition.LATE:
                (backwards if reading.meter_clock else late).append(reading)
                continue
            dispositions.append((reading, step.disposition.value))
            reading_rows.append((meter, t, raw, reading.source, step.disposition.value, step.virtual_wh, channel))
            for event in step.events:
                event = _of_channel(event, channel)
                event_rows.append((self.now_ms, meter, event.kind, event.detail))
                self.result.events.append((meter, event))
            if step.disposition in (Disposition.ACCEPTED, Disposition.SUSPECT):
                states[key] = step.state
                touched.add(key)
            runs.extend(step.runs)
        for key, q in quick.items():
            states[key] = _caught_up(states[key], q)
            reading_rows.append(_quick_row(q))
            touched.add(key)

    @property
    def in_one_step(self) -> bool:
        """Can the planned batch be written in one step, without reading the database first?

        Yes unless a reading is late (placing it reads its stored neighbours) or the batch closes
        more intervals than :data:`MAX_ONE_STEP_INTERVALS` (a long outage: written in slices, so
        memory stays flat).
        """
        if self._late_readings or self._backwards:
            return False
        total = 0
        for run in self._runs:
            total += len(run)
            if total > MAX_ONE_STEP_INTERVALS:
                return False
        return True

    async def prepare_one_step(self) -> None:
        """Sign the planned batch's credits and build every row, yielding to the loop between slices."""
        pending: list[Interval] = []
        for run in self._runs:
            for interval in run.intervals():
                pending.append(interval)
                if len(pending) == MAX_INTERVALS_PER_STEP:
                    self._credit_rows(pending, self._interval_rows, self._credit_rows_out)
                    pending = []
                    await asyncio.sleep(0)
        self._credit_rows(pending, self._interval_rows, self._credit_rows_out)
        self._state_rows_out = self._state_rows()

    def write_one_step(self, conn: sqlite3.Connection) -> None:
        """The whole transaction, run on the write connection's own thread: one hop, not one per statement.

        BEGIN IMMEDIATE, every row, COMMIT (fsynced: WAL with ``synchronous=FULL``), so nothing here
        is visible to an uplink before it is durable; on any failure (COMMIT's included) it rolls back.
        """
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                "INSERT INTO readings (meter, t_ms, register_wh, source, disposition, virtual_wh, channel) "
                "VALUES (?,?,?,?,?,?,?) ON CONFLICT DO NOTHING", self._reading_rows)
            if self._event_rows:
                conn.executemany("INSERT INTO events (t_ms, meter, kind, detail) VALUES (?,?,?,?)", self._event_rows)
            if self._credit_rows_out:
                conn.executemany(INSERT_CREDIT, self._credit_rows_out)
                (last_id,) = conn.execute("SELECT last_insert_rowid()").fetchone()
                conn.executemany(_INSERT_INTERVALS, _with_credit_ids(self._interval_rows, int(last_id)))
            conn.executemany(_UPSERT_METERS, self._state_rows_out)
            if self._credit_rows_out:
                (max_id,) = conn.execute("SELECT MAX(id) FROM credits").fetchone()
                self.max_id = int(max_id)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error as exc:
                    log.error("ledger_rollback_failed", error=str(exc))
            raise

    async def commit_one_step(self, db: aiosqlite.Connection) -> None:
        """:meth:`write_one_step` on the write connection's own worker thread, as one queued call.

        aiosqlite runs every statement as a call queued to that thread (``Connection._execute``);
        queuing the whole transaction as one call saves a thread hop per statement. The call runs
        to its end once queued (the caller shields it), like every statement does.
        """
        await cast(Awaitable[None], db._execute(lambda: self.write_one_step(db._conn)))  # type: ignore[no-untyped-call]

    async def run(self, db: aiosqlite.Connection) -> None:
        """The planned batch inside a transaction already begun, statement by statement.

        For the batches :attr:`in_one_step` refuses: late readings are placed between their
        stored neighbours (read here, after the batch's own readings are in), and a long outage's
        intervals are written in slices.
        """
        await db.executemany(
            "INSERT INTO readings (meter, t_ms, register_wh, source, disposition, virtual_wh, channel) "
            "VALUES (?,?,?,?,?,?,?) ON CONFLICT DO NOTHING", self._reading_rows)
        if self._event_rows:
            await db.executemany("INSERT INTO events (t_ms, meter, kind, detail) VALUES (?,?,?,?)", self._event_rows)
        await self._insert_runs(db, self._runs)
        for reading in self._backwards:
            await self._meter_clock_back(db, reading)
        for reading in sorted(self._late_readings, key=lambda r: r.t_ms):
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

    def _credit_rows(self, intervals: Sequence[Interval], interval_rows: list[tuple[Any, ...]],
                     credit_rows: list[tuple[Any, ...]]) -> None:
        """Sign the next credit of each interval's chain; append its interval and credit rows."""
        tips, touched, result, now_ms = self.tips, self._touched, self.result, self.now_ms
        if self._signer is None:
            ledger = self.ledger
            self._signer = IntervalSigner(gateway_id=ledger._gateway_id, keypair=ledger._keypair,
                                          public_key=ledger._public_key)
        sign_interval = self._signer.sign
        gateway, gateway_key = self.ledger._gateway_id, self.ledger._public_key
        for interval in intervals:
            key = (interval.meter, interval.channel)
            prev = tips.get(key, _GENESIS_TIP)
            digest, wire, tip = sign_interval(interval, prev, now_ms)
            tips[key] = tip
            touched.add(key)
            interval_rows.append(_interval_row(interval, tip.seq))
            # The wire ends with "signature":"<88 characters>"} (a mismatch is caught: stored whole).
            credit_rows.append(compact_columns(
                interval.meter, interval.channel.value, tip.seq, interval.start, interval.wh, digest, now_ms,
                gateway, gateway_key, None, interval.quality.value, interval.register_start_wh,
                interval.register_end_wh, prev.hash, wire[-90:-2], wire))
            result.intervals_closed += 1
            if len(result.intervals) < KEPT_INTERVALS:
                result.intervals.append(interval)
        self._credits_written = self._credits_written or bool(credit_rows)

    async def _insert_new(self, db: aiosqlite.Connection, intervals: Sequence[Interval]) -> None:
        interval_rows: list[tuple[Any, ...]] = []
        credit_rows: list[tuple[Any, ...]] = []
        self._credit_rows(intervals, interval_rows, credit_rows)
        if not credit_rows:
            return
        await db.executemany(INSERT_CREDIT, credit_rows)
        (last_id,) = (await _rows(db, "SELECT last_insert_rowid()"))[0]
        await db.executemany(_INSERT_INTERVALS, _with_credit_ids(interval_rows, int(last_id)))

    # ---- state ----------------------------------------------------------------

    def _state_rows(self) -> list[tuple[Any, ...]]:
        """The meters rows of every series the batch moved: engine state and chain tip."""
        rows = []
        for key in self._touched:
            meter, channel = key
            s, tip = self.states.get(key) or MeterState(meter, channel=channel), self.tips.get(key, _GENESIS_TIP)
            grade = s.anchor_grade
            rows.append((meter, channel, s.last_t_ms, s.last_wh, s.anchor_s, s.anchor_wh,
                         grade.quality, tip.seq, tip.hash, grade.encode(), s.offset_wh,
                         s.last_raw_wh, json.dumps([list(p) for p in s.pending]) if s.pending else "[]"))
        return rows  # the enums (channel, quality) bind as their text

    async def _save_states(self, db: aiosqlite.Connection) -> None:
        await db.executemany(_UPSERT_METERS, self._state_rows())


_INSERT_INTERVALS = (
    'INSERT INTO intervals (meter, start, "end", wh, quality, register_start_wh, register_end_wh, '
    "credit_seq, method, reason, start_grade, end_grade, channel, credit_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)")
_UPSERT_METERS = (
    "INSERT INTO meters (meter, channel, last_t_ms, last_wh, anchor_s, anchor_wh, anchor_quality, last_seq, "
    "last_hash, anchor_grade, register_offset_wh, last_raw_wh, pending) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) "
    "ON CONFLICT(meter, channel) DO UPDATE SET last_t_ms=excluded.last_t_ms, last_wh=excluded.last_wh, "
    "anchor_s=excluded.anchor_s, anchor_wh=excluded.anchor_wh, anchor_quality=excluded.anchor_quality, "
    "last_seq=excluded.last_seq, last_hash=excluded.last_hash, anchor_grade=excluded.anchor_grade, "
    "register_offset_wh=excluded.register_offset_wh, last_raw_wh=excluded.last_raw_wh, "
    "pending=excluded.pending")


ACCEPTED = Disposition.ACCEPTED.value


_Quick: TypeAlias = tuple[int, int, int, int, Reading]
"""A series' newest reading taken on the fast path, and where the series stands after it: (t_ms, raw Wh,
virtual Wh, register offset, the reading). A plain tuple: one is built for nearly every reading."""


def _quick_row(quick: _Quick) -> tuple[Any, ...]:
    t_ms, raw_wh, virtual_wh, _, r = quick
    return (r.meter, t_ms, raw_wh, r.source, ACCEPTED, virtual_wh, r.channel)


_READING_FIELDS = ("meter", "t_ms", "register_wh", "source", "meter_clock", "register_modulus_wh", "max_power_w",
                   "channel")
if tuple(f.name for f in fields(Reading)) != _READING_FIELDS:  # pragma: no cover - keep _with_default_ceiling whole
    raise RuntimeError("Reading's fields changed: update _with_default_ceiling")


def _with_default_ceiling(r: Reading) -> Reading:
    """``replace(r, max_power_w=DEFAULT_MAX_POWER_W)``, built directly (``replace`` costs twice as much)."""
    return Reading(r.meter, r.t_ms, r.register_wh, r.source, r.meter_clock, r.register_modulus_wh,
                   DEFAULT_MAX_POWER_W, r.channel)


def _caught_up(state: MeterState, quick: _Quick) -> MeterState:
    """The state :func:`feed` would have reached through the fast-path readings."""
    t_ms, raw_wh, virtual_wh, _, _ = quick
    return MeterState(state.meter, t_ms, virtual_wh, state.anchor_s, state.anchor_wh,
                      state.anchor_grade, state.offset_wh, raw_wh, (), (), state.channel)


def _interval_row(interval: Interval, seq: int) -> tuple[Any, ...]:
    """An interval's row but its credit id, which :func:`_with_credit_ids` appends once the credits are in."""
    return (interval.meter, interval.start, interval.end, interval.wh, interval.quality.value,
            interval.register_start_wh, interval.register_end_wh, seq, interval.method, interval.reason,
            interval.start_grade.encode(), interval.end_grade.encode(), interval.channel)


def _with_credit_ids(interval_rows: Sequence[tuple[Any, ...]], last_id: int) -> list[tuple[Any, ...]]:
    """Each interval row with its credit's id (schema 7), the credits having been inserted in the same order.

    One executemany on the one write connection gives the credit rows consecutive ids ending at
    ``last_insert_rowid()``: AUTOINCREMENT takes one past the largest id ever used, row after row.
    """
    first_id = last_id - len(interval_rows) + 1
    return [(*row, first_id + k) for k, row in enumerate(interval_rows)]




def _of_channel(event: Event, channel: Channel) -> Event:
    """An export series' event says so (the events table keys by meter only; import reads as before)."""
    if channel is Channel.IMPORT:
        return event
    return Event(event.kind, f"{channel} channel: {event.detail}")





