"""Uplink to the central billing API (contract: ``cloud_sync/openapi.yaml``).

Delivery is at-least-once with idempotent receivers, which gives
exactly-once effect: a batch is fixed in the ledger (its credits and its
Idempotency-Key) before the first attempt, every retry resends the same
bytes, and the ledger marks it delivered only after a clear success (in
memory at once, on disk with the next batch's claim: a crash before that
only resends the same bytes under the same key).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import sqlite3
from collections.abc import Callable
from typing import Any

import httpx
import structlog

from cloud_sync.backoff import Backoff
from cloud_sync.tls import client_context
from gateway.clock import Clock
from gateway.config import BillingApiConfig
from gateway.errors import UplinkRejected, UplinkRetryable
from gateway.ledger.store import Ledger, PendingBatch
from gateway.status import UplinkProgress

log = structlog.get_logger("cloud_sync.billing_api")

NAME = "billing_api"
IDLE_RECHECK_S = 30.0
"""Clock seconds between looks at the outbox when nothing wakes the uplink."""
AUTH_STATUSES = (401,)
"""Retried at the longest backoff (a token may be fixed). A 403 (revoked, not enrolled, another gateway's
token) is dead-lettered with the receiver's reason, like the other 4xx: the status page shows it."""


def _retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date); None if unusable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - now)
    except (ValueError, TypeError, OverflowError):
        return None


def classify(response: httpx.Response, now: float, expected: int) -> dict[str, Any]:
    """Turn an HTTP answer into a result, or raise the error that says what to do next."""
    status = response.status_code
    if status in (200, 201):
        try:
            body = response.json()
        except json.JSONDecodeError:
            raise UplinkRetryable(f"HTTP {status} with a body that is not JSON") from None
        results = body.get("results") if isinstance(body, dict) else None
        if not isinstance(results, list) or not all(isinstance(r, dict) for r in results) \
                or len(results) != expected:
            raise UplinkRetryable(f"HTTP {status} without one result object per credit")
        return {"results": results, **{k: v for k, v in body.items() if k != "results"}}
    if status == 429 or status == 408 or status >= 500:
        raise UplinkRetryable(f"HTTP {status}", _retry_after(response.headers.get("Retry-After"), now))
    if status in AUTH_STATUSES:
        raise UplinkRetryable(f"HTTP {status}: the billing API refused our credentials; check token_file")
    raise UplinkRejected(f"HTTP {status}: {response.text[:300]}", status)


def batch_body(gateway_id: str, batch: PendingBatch) -> bytes:
    """The request body: the stored credits spliced in as they are, so every retry is byte-identical."""
    head = json.dumps({"gateway": gateway_id, "batch": batch.batch_key}, separators=(",", ":"))[:-1]
    return f'{head},"credits":[{",".join(batch.wire)}]}}'.encode()


def _unbind(response: httpx.Response) -> None:
    """Let a read response be freed as soon as it is dropped, with the request body it holds.

    httpx leaves every response in a reference cycle (its stream refers back to it, to note the
    elapsed time at close), so the response, its request and the request's body (about 300 KB for
    500 credits) wait for a full garbage collection, which a process with many long-lived objects
    runs rarely: draining a 500k backlog kept a dozen or more bodies at a time, and the heap grew
    with the backlog. The response is closed and read here, so its stream has nothing left to give.
    """
    response.stream = httpx.ByteStream(b"")


class BillingApiUplink:
    def __init__(self, cfg: BillingApiConfig, ledger: Ledger, clock: Clock, *, gateway_id: str,
                 token: str | None, wakeup: Callable[[], asyncio.Event],
                 progress: UplinkProgress | None = None) -> None:
        self.cfg = cfg
        self._ledger = ledger
        self._clock = clock
        self._gateway_id = gateway_id
        self._wakeup = wakeup
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._backoff = Backoff(base_s=1.0, max_s=cfg.backoff_max_s)
        self.progress = progress or UplinkProgress()

    async def run(self) -> None:
        await self._ledger.register_uplink(NAME)
        async with httpx.AsyncClient(base_url=self.cfg.url, timeout=self.cfg.timeout_s,
                                     headers=self._headers, verify=client_context()) as http:
            batch = await self._ready_batch()
            while True:
                # A backlog: the next full batch is fixed in the ledger while this one travels, so the
                # POSTs never wait for an fsync. A delivered batch is settled in memory at once; its
                # record goes to disk with the next claim (or at close).
                ahead = None
                if self._ledger.max_credit_id - batch.last_id >= self.cfg.batch_size and not batch.refused:
                    ahead = asyncio.create_task(self._ledger.next_batch(
                        NAME, self.cfg.batch_size, now_ms=self._now_ms(), after_id=batch.last_id))
                try:
                    delivered = await self._deliver(http, batch)
                    following = await ahead if ahead is not None else None
                    if not delivered or following is None:
                        following = await self._ready_batch()
                except BaseException:
                    if ahead is not None:  # recorded or not, it is sent in its turn after a restart
                        ahead.cancel()
                        await asyncio.gather(ahead, return_exceptions=True)
                    raise
                batch = following

    async def drain(self, deadline_s: float) -> int:
        """Send whatever is pending until nothing is left or ``deadline_s`` host seconds pass.

        Used at shutdown to give the last closed intervals a chance to leave the
        box; anything left stays queued for the next start.
        """
        await self._ledger.register_uplink(NAME)
        sent = 0
        try:
            async with asyncio.timeout(deadline_s), httpx.AsyncClient(
                base_url=self.cfg.url, timeout=self.cfg.timeout_s, headers=self._headers, verify=client_context()
            ) as http:
                while batch := await self._ledger.next_batch(NAME, self.cfg.batch_size,
                                                             now_ms=self._now_ms()):
                    if not await self._deliver(http, batch):
                        break
                    sent += len(batch.wire)
        except TimeoutError:
            log.info("drain_incomplete", sent=sent)
        try:
            await self._ledger.save_settles()  # the last settle has no next claim to go with
        except sqlite3.Error as exc:  # close() tries again; failing that, the batch is only resent
            log.warning("settle_not_saved", error=str(exc))
        return sent

    def _now_ms(self) -> int:
        return int(self._clock.now() * 1000)

    async def _ready_batch(self) -> PendingBatch:
        """Wait until a batch is due: full, or its oldest credit is max_batch_age_s old."""
        while True:
            event = self._wakeup()
            count, oldest_ms = await self._ledger.pending_count(NAME)
            if count:
                age = self._clock.now() - (oldest_ms or 0) / 1000
                if count >= self.cfg.batch_size or age >= self.cfg.max_batch_age_s:
                    batch = await self._ledger.next_batch(NAME, self.cfg.batch_size, now_ms=self._now_ms())
                    if batch:
                        return batch
                wait = max(0.0, self.cfg.max_batch_age_s - age)
            else:
                wait = IDLE_RECHECK_S
            try:
                async with asyncio.timeout(self._clock.host_seconds(wait) + 0.001):
                    await event.wait()
            except TimeoutError:
                pass

    async def _refused(self, batch: PendingBatch, detail: str, ctx: dict[str, object]) -> None:
        """Dead-letter: keep the batch first in line and offer it again only at the slowest pace.

        Skipping it would not help: every later credit of its meters follows it in
        the meter's chain, and the receiver would refuse them all as a gap.
        """
        log.error("batch_refused", error=detail, retry_in_s=self.cfg.backoff_max_s, **ctx)
        await self._ledger.mark_refused(batch, now_ms=self._now_ms(), detail=detail)
        await self._clock.sleep(self._backoff.give_up_to_max())

    def _settled(self, batch: PendingBatch) -> None:
        self._ledger.settle_batch_later(batch, now_ms=self._now_ms())
        self._backoff.reset()
        self.progress.record(len(batch.wire), self._clock.monotonic())
        log.info("batch_delivered", uplink=NAME, batch=batch.batch_key, credits=len(batch.wire))

    async def _deliver(self, http: httpx.AsyncClient, batch: PendingBatch) -> bool:
        """One attempt. True when the batch was delivered (and settled: in memory, see :meth:`_settled`)."""
        ctx = {"uplink": NAME, "batch": batch.batch_key, "credits": len(batch.wire)}
        try:
            try:
                response = await http.post("/v1/batches", content=batch_body(self._gateway_id, batch),
                                           headers={"Idempotency-Key": batch.batch_key,
                                                    "Content-Type": "application/json"})
            except httpx.TransportError as exc:
                raise UplinkRetryable(f"{type(exc).__name__}: {exc}") from exc
            try:
                body = classify(response, self._clock.now(), len(batch.wire))
            finally:
                _unbind(response)
        except UplinkRetryable as exc:
            auth = "credentials" in str(exc)
            delay = self._backoff.give_up_to_max() if auth else self._backoff.next_delay(exc.retry_after)
            first = self._backoff.attempts <= 1
            (log.warning if first or auth else log.debug)("batch_retry", error=str(exc), retry_in_s=round(delay, 1),
                                                          **ctx)
            await self._ledger.note_attempt_failed(batch, now_ms=self._now_ms(), error=str(exc))
            await self._clock.sleep(delay)
            return False
        except UplinkRejected as exc:
            await self._refused(batch, str(exc), ctx)
            return False
        rejected = [r for r in body["results"] if r.get("status") not in ("accepted", "duplicate")]
        if rejected:
            detail = "; ".join(f"{r.get('meter')}#{r.get('seq')}: {r.get('reason')}" for r in rejected[:5])
            await self._refused(batch, f"{len(rejected)} credit(s) rejected: {detail}", ctx)
            return False
        self._settled(batch)
        return True
