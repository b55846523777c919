"""The one task that feeds readings into the ledger.

Sources hand readings to :meth:`ReadingWriter.submit`; the writer gathers them
and commits them in one transaction: :data:`CLOSE_GATHER_S` after the first
reading that closes an interval (the boundary's reading, whose credit is due),
otherwise after ``flush_s`` (``[ledger] commit_every_s``, or ``max_batch``
readings). With grid-aligned polls that is one commit per quarter-hour instead
of one per poll cycle: each commit rewrites whole pages (the meters' state,
the tails of the tables and indexes), so the SD card's write volume follows the
number of commits, not the readings. The queue is bounded, so a stalled disk
slows the sources down instead of growing memory.
A reading held in memory and lost in a crash or power cut costs nothing: it
closes no interval (a boundary's reading is committed within seconds), the
meter's cumulative register still holds its energy, and the next reading
recovers it. Credits only exist once committed, so no uplink ever sees one
that is not on disk.
When the storage fails (disk full, I/O error) the readings are kept and retried
with a backoff while the sources go on reading (see :mod:`gateway.ledger.outage`);
only a damaged ledger file ends the writer.

Each reading is queued with the wall-minus-monotonic offset of the moment it
was taken. While time is untrusted (see :mod:`gateway.timetrust`) readings are
held, not committed; once trusted, any reading taken under a different offset
is moved by the difference, so a clock step never misplaces energy.

Once time is trusted, each reading is also judged against it before the ledger
sees it: one older than the ledger's horizon (readings retention) or, when the
meter stamped it, one whose stamp is far from the moment the gateway received
it (see :func:`gateway.timetrust.meter_clock_problem`) is refused and counted,
and the meter is shown with its clock wrong. A meter booted without NTP that
stamps 1970 thus never starts a timeline in 1970. A battery clock is compared
with the ledger's newest reading before it is trusted at all.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass, replace

import structlog

from gateway.clock import Clock
from gateway.errors import LedgerError, LedgerIntegrityError, LedgerStorageError
from gateway.intervals import Disposition, Reading
from gateway.intervals.engine import INTERVAL_MS
from gateway.ledger.outage import StorageOutage
from gateway.ledger.store import CommitResult, Ledger
from gateway.liveness import WRITER_STALL_S, Progress
from gateway.rejections import RejectionLog
from gateway.status import GatewayStatus
from gateway.timetrust import AlwaysSynced, TimeTrust, meter_clock_problem

log = structlog.get_logger("gateway.writer")

QUEUE_LIMIT = 10_000
"""Readings waiting for a commit; about an hour of 100 meters polled every 30 s."""
HOLD_LIMIT = 200_000
"""Readings held while time is untrusted: two days of 70 meters read every minute.
Past that the oldest go; their energy is still in the registers."""
CLOSE_GATHER_S = 5.0
"""Gathering window once a reading that closes an interval has come: a line's poll cycle reads its
other meters within it, so their boundary readings share the commit (and the credits their uplink
sends together)."""
DEFAULT_HORIZON_S = 35 * 86_400.0
"""The ledger's horizon when the daemon gives none: the default readings retention."""


@dataclass(frozen=True, slots=True)
class _Taken:
    reading: Reading
    offset_s: float
    """Wall minus monotonic time when the reading was taken."""
    received_s: float
    """The gateway's wall time when the reading was handed over (for a meter's own timestamp: when
    the gateway received it, to judge that stamp by)."""

    def placed(self, offset_now_ms: int, max_step_ms: float) -> tuple[Reading, int]:
        """The reading and its receipt time (ms), moved onto today's trusted timeline if the clock
        stepped since. A meter's own timestamp does not move; when it was received does."""
        shift = offset_now_ms - round(self.offset_s * 1000)
        if abs(shift) <= max_step_ms:
            shift = 0
        received_ms = round(self.received_s * 1000) + shift
        if self.reading.meter_clock or not shift:
            return self.reading, received_ms
        return replace(self.reading, t_ms=self.reading.t_ms + shift), received_ms


_USED = (Disposition.ACCEPTED.value, Disposition.LATE.value, Disposition.DUPLICATE.value)


class ReadingWriter:
    def __init__(self, ledger: Ledger, clock: Clock, status: GatewayStatus, *,
                 flush_s: float = 5.0, max_batch: int = 1000, trust: TimeTrust | None = None,
                 horizon_s: float = DEFAULT_HORIZON_S) -> None:
        self._ledger = ledger
        self._clock = clock
        self._status = status
        self._flush_s = flush_s
        self._close_s = min(flush_s, CLOSE_GATHER_S)
        self._last_t: dict[str, int] = {}
        """Per meter, the newest reading time gathered: a reading in another interval closes one."""
        self._max_batch = max_batch
        self._trust = trust or TimeTrust(clock, AlwaysSynced())
        self._horizon_ms = round(horizon_s * 1000)
        self._known_loaded = False
        self._rejections = RejectionLog(log, "reading_not_used", clock)
        self._queue: asyncio.Queue[_Taken] = asyncio.Queue(QUEUE_LIMIT)
        self._held: deque[_Taken] = deque(maxlen=HOLD_LIMIT)
        self._gathering: list[_Taken] = []
        self.outage = StorageOutage(clock, status)
        """Set while the ledger cannot write: the readings kept for the retry, the alarm, ``make_room``."""
        self._last_storage_error: LedgerStorageError | None = None
        self.credits_committed = asyncio.Event()
        """Set after every commit that created credits; uplinks wait on it."""
        self.progress = Progress("ledger-writer", WRITER_STALL_S)
        """Each commit is a step: the daemon's watchdog stops when one never ends."""

    async def submit(self, reading: Reading) -> None:
        await self._queue.put(_Taken(reading, self._trust.offset(), self._clock.now()))

    @property
    def held(self) -> int:
        return len(self._held)

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    async def run(self) -> None:
        """Commit batches until cancelled; on cancellation, commit what is queued, then stop."""
        try:
            while True:
                # Gathered on self, not in a local: a cancellation while gathering must
                # not lose what was already taken off the queue (flush commits it).
                first = await self._next_or_retry()
                if first is None:  # nothing came in, but readings kept from a failed commit are due
                    await self._commit([])
                    continue
                self._gathering.append(first)
                now = self._clock.monotonic()
                deadline = now + (self._close_s if self._closes(first.reading) else self._flush_s)
                while len(self._gathering) < self._max_batch:
                    remaining = deadline - self._clock.monotonic()
                    if remaining <= 0:
                        break
                    try:
                        async with asyncio.timeout(self._clock.host_seconds(remaining)):
                            taken = await self._queue.get()
                    except TimeoutError:
                        break
                    self._gathering.append(taken)
                    if self._closes(taken.reading):
                        deadline = min(deadline, self._clock.monotonic() + self._close_s)
                batch, self._gathering = self._gathering, []
                await self._commit(batch)
        except asyncio.CancelledError:
            await asyncio.shield(self.flush())
            raise

    def _closes(self, reading: Reading) -> bool:
        """Does the reading (probably) close an interval, so its commit should not wait?

        A meter's first reading, one in a later quarter-hour than the meter's last, and a late one
        (it may revise a credit) do; the readings inside an interval can wait.
        """
        last = self._last_t.get(reading.meter)
        self._last_t[reading.meter] = reading.t_ms if last is None else max(last, reading.t_ms)
        return last is None or reading.t_ms // INTERVAL_MS != last // INTERVAL_MS or reading.t_ms < last

    async def _next_or_retry(self) -> _Taken | None:
        """The next queued reading; None when the kept readings' retry is due before one comes."""
        if not self.outage.backlog:
            return await self._queue.get()
        try:
            async with asyncio.timeout(self.outage.retry_in_s()):
                return await self._queue.get()
        except TimeoutError:
            return None

    async def flush(self) -> None:
        """Commit everything gathered and queued now (used at shutdown).

        One attempt, whatever the backoff says; if the storage still fails, what could not be
        committed is logged and let go (its energy is in the registers): a stop never hangs on it.
        """
        batch, self._gathering = self._gathering, []
        with contextlib.suppress(asyncio.QueueEmpty):
            while True:
                batch.append(self._queue.get_nowait())
        if batch or self.outage.backlog:
            await self._commit(batch, final=True)

    async def _commit(self, taken: list[_Taken], *, final: bool = False) -> None:
        if not self._known_loaded:
            await self._load_known_time()
        if not self._trust.check():
            if len(self._held) + len(taken) > HOLD_LIMIT:
                self._status.readings_dropped_untrusted += len(self._held) + len(taken) - HOLD_LIMIT
            self._held.extend(taken)
            self._status.time_trusted = False
            self._status.time_trust_reason = self._trust.reason
            self._status.readings_held = len(self._held)
            return
        self._status.time_trusted = True
        self._status.time_trust_reason = self._trust.reason
        if self._held:
            taken = [*self._held, *taken]
            self._held.clear()
            self._status.readings_held = 0
        offset_ms = round(self._trust.offset() * 1000)
        max_step_ms = self._trust.max_step_s * 1000
        now_ms = int(self._clock.now() * 1000)
        batch = self._judged([t.placed(offset_ms, max_step_ms) for t in taken], now_ms)
        batch.sort(key=lambda r: r.t_ms)
        await self._commit_placed(batch, final=final)

    async def _commit_placed(self, placed: list[Reading], *, final: bool) -> None:
        """Commit readings already on the trusted timeline, with those a failed commit left to retry.

        A long backlog goes in commits of ``max_batch`` readings, oldest first: each transaction
        stays small (its WAL must fit on a disk that was just full), and each one that succeeds
        is kept even if a later one fails.
        """
        if self.outage.retry_in_s() > 0 and not final:
            self.outage.keep(placed)  # the storage failed a moment ago: wait for the backoff
            return
        pending = self.outage.take(placed)
        for start in range(0, len(pending), self._max_batch):
            if not await self._commit_chunk(pending[start:start + self._max_batch]):
                self.outage.keep(pending[start + self._max_batch:])
                if final:
                    self._let_go()
                return

    async def _commit_chunk(self, batch: list[Reading]) -> bool:
        """One commit; False if the storage failed (the readings are then kept for the retry)."""
        if not batch:
            return True
        now_ms = int(self._clock.now() * 1000)
        try:
            result = await self.progress.step(self._ledger.commit_readings(batch, now_ms=now_ms))
        except LedgerIntegrityError:
            self._status.commit_errors += 1
            raise  # a damaged file: writing on would spread the damage; the daemon stops with advice
        except LedgerStorageError as exc:
            self._status.commit_errors += 1
            self._last_storage_error = exc
            self.outage.keep(batch)
            self.outage.failed(exc)
            return False
        except LedgerError as exc:
            self._status.commit_errors += 1
            if len(batch) == 1:
                self._refused(batch[0], exc)
                return True
            # One poisonous reading must not stop the daemon nor take the others with it:
            # commit them one by one and set aside only what the ledger still refuses.
            log.error("batch_commit_failed", error=str(exc), readings=len(batch))
            return await self._commit_one_by_one(batch, now_ms)
        self.outage.recovered()
        self._report(batch, result)
        return True

    async def _load_known_time(self) -> None:
        """The ledger's newest reading is a time known to be real: a battery clock must not read before it."""
        self._known_loaded = True
        newest = [t for state in self._ledger.series_states() if (t := state.last_t_ms) is not None]
        if newest:
            self._trust.remember(max(newest) / 1000)

    def _judged(self, placed: list[tuple[Reading, int]], now_ms: int) -> list[Reading]:
        """The readings whose time can be real on the trusted clock; the others are refused and counted."""
        kept: list[Reading] = []
        horizon_ms = now_ms - self._horizon_ms
        for reading, received_ms in placed:
            problem = meter_clock_problem(reading.t_ms, received_ms) if reading.meter_clock else None
            if problem is None and reading.t_ms < horizon_ms:
                problem = "before_horizon", (f"taken {(now_ms - reading.t_ms) / 86_400_000:.1f} days ago, before "
                                             f"the ledger's horizon ({self._horizon_ms / 86_400_000:.0f} days of "
                                             "readings are kept)")
            meter_status = self._status.meters.get(reading.meter)
            if problem is None:
                if meter_status and reading.meter_clock and meter_status.clock_wrong:
                    meter_status.clock_wrong = None
                    log.info("meter_clock_plausible_again", meter=reading.meter, t_ms=reading.t_ms)
                kept.append(reading)
                continue
            reason, detail = problem
            if meter_status:
                meter_status.rejected[reason] += 1
                if reason.startswith("meter_clock"):
                    meter_status.clock_wrong = detail
            self._rejections.rejected(reading.meter, reason, detail=detail, t_ms=reading.t_ms,
                                      register_wh=reading.register_wh)
        return kept

    def _let_go(self) -> None:
        """At shutdown on a still failing storage: what is kept cannot be committed; say so and stop."""
        log.error("readings_not_committed", n=len(self.outage.backlog), error=str(self._last_storage_error),
                  detail="the storage still fails at shutdown; their energy is in the meters' registers")
        self.outage.backlog.clear()

    async def _commit_one_by_one(self, batch: list[Reading], now_ms: int) -> bool:
        for i, reading in enumerate(batch):
            try:
                result = await self.progress.step(self._ledger.commit_readings([reading], now_ms=now_ms))
            except LedgerStorageError as exc:
                # Not this reading's fault after all: it and the rest are kept and retried.
                self._last_storage_error = exc
                self.outage.keep(batch[i:])
                self.outage.failed(exc)
                return False
            except LedgerError as exc:
                self._refused(reading, exc)
                continue
            self._report([reading], result)
        return True

    def _refused(self, reading: Reading, exc: LedgerError) -> None:
        """A reading the ledger cannot take (its content, not the disk): count it, log it, go on."""
        meter_status = self._status.meters.get(reading.meter)
        if meter_status:
            meter_status.rejected["ledger_refused"] += 1
        log.error("reading_refused_by_ledger", meter=reading.meter, t_ms=reading.t_ms,
                  register_wh=reading.register_wh, error=str(exc))

    def _report(self, batch: list[Reading], result: CommitResult) -> None:
        self._status.readings_committed += len(batch)
        self._status.credits_created += result.credits_created
        for reading, disposition in result.dispositions:
            if disposition not in _USED:
                meter_status = self._status.meters.get(reading.meter)
                if meter_status:
                    meter_status.rejected[disposition] += 1
                self._rejections.rejected(reading.meter, disposition, t_ms=reading.t_ms,
                                          register_wh=reading.register_wh)
            elif disposition == Disposition.ACCEPTED.value:
                self._rejections.accepted(reading.meter)
        for meter_id, event in result.events:
            log.warning(event.kind, meter=meter_id, detail=event.detail)
        if result.credits_created or result.revised:
            self.credits_committed.set()
            self.credits_committed = asyncio.Event()
            log.debug("credits_committed", n=result.credits_created, readings=len(batch))
