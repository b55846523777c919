"""The one task that feeds readings into the ledger.

Sources hand readings to :meth:`ReadingWriter.submit`; the writer gathers them
for up to ``flush_s`` (or ``max_batch`` readings) and commits them in one
transaction. Batching spares the SD card one fsync per reading; the queue is
bounded, so a stalled disk slows the sources down instead of growing memory.
A reading lost from the queue in a power cut costs nothing: the meter's
cumulative register still holds that energy and the next reading recovers it.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from gateway.clock import Clock
from gateway.intervals import Disposition, Reading
from gateway.ledger.store import Ledger
from gateway.status import GatewayStatus

log = structlog.get_logger("gateway.writer")

QUEUE_LIMIT = 10_000
"""Readings waiting for a commit; about an hour of 100 meters polled every 30 s."""


class ReadingWriter:
    def __init__(self, ledger: Ledger, clock: Clock, status: GatewayStatus, *,
                 flush_s: float = 5.0, max_batch: int = 1000) -> None:
        self._ledger = ledger
        self._clock = clock
        self._status = status
        self._flush_s = flush_s
        self._max_batch = max_batch
        self._queue: asyncio.Queue[Reading] = asyncio.Queue(QUEUE_LIMIT)
        self.credits_committed = asyncio.Event()
        """Set after every commit that created credits; uplinks wait on it."""

    async def submit(self, reading: Reading) -> None:
        await self._queue.put(reading)

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    async def run(self) -> None:
        """Commit batches until cancelled; on cancellation, commit what is queued, then stop."""
        try:
            while True:
                batch = [await self._queue.get()]
                deadline = self._clock.monotonic() + self._flush_s
                while len(batch) < self._max_batch:
                    remaining = deadline - self._clock.monotonic()
                    if remaining <= 0:
                        break
                    try:
                        async with asyncio.timeout(self._clock.host_seconds(remaining)):
                            batch.append(await self._queue.get())
                    except TimeoutError:
                        break
                await self._commit(batch)
        except asyncio.CancelledError:
            await asyncio.shield(self.flush())
            raise

    async def flush(self) -> None:
        """Commit everything queued now (used at shutdown)."""
        batch: list[Reading] = []
        with contextlib.suppress(asyncio.QueueEmpty):
            while True:
                batch.append(self._queue.get_nowait())
        if batch:
            await self._commit(batch)

    async def _commit(self, batch: list[Reading]) -> None:
        result = await self._ledger.commit_readings(batch, now_ms=int(self._clock.now() * 1000))
        self._status.readings_committed += len(batch)
        self._status.credits_created += result.credits_created
        for reading, disposition in result.dispositions:
            if disposition is not Disposition.ACCEPTED:
                meter = self._status.meters.get(reading.meter)
                if meter:
                    meter.rejected[disposition.value] += 1
                log.warning("reading_not_used", meter=reading.meter, reason=disposition.value,
                            t_ms=reading.t_ms, register_wh=reading.register_wh)
        if result.credits_created:
            self.credits_committed.set()
            self.credits_committed = asyncio.Event()
            log.debug("credits_committed", n=result.credits_created, readings=len(batch))

