"""The Soroban uplink: every delivery record sent to the contract as one ``deliver_energy``, exactly once.

One task, one envelope in flight. Each step does the most urgent thing:

1. a stored envelope still pending (after a restart, a timeout, TRY_AGAIN_LATER) is resolved
   first, and always by asking ``getTransaction`` before anything is sent: SUCCESS → the record
   is delivered (the contract's transaction id kept); FAILED → the contract's error name
   dead-letters the record (an auth failure too: retrying cannot fix a key that is not the
   provider account's signer); NOT_FOUND → the *same bytes* are sent again;
2. otherwise the oldest unsent record is built (:mod:`.invocation`), its envelope stored with its
   hash *before* the first send, then resolved as in 1. A simulation the contract refuses
   (expired agreement, over-delivery, unregistered prosumer) dead-letters the record with the
   error's name without sending anything.

An envelope is given up (``void``) only once it is proved never to be included: the gateway
account's sequence number is read *first*, then ``getTransaction`` still says NOT_FOUND, and the
sequence is already at or past the envelope's (another transaction used it: the Stellar uplink
shares the account) or the network's time is past the envelope's upper time bound. Then the
record gets a new envelope — after the contract's own history (``get_transaction_history``, read by
simulation) shows it does not hold this delivery already (RPC forgets old transactions; the contract
does not). So whatever fails, and whenever the box loses power, the contract
records each delivery once.

Unclear answers (HTTP 5xx, timeouts, resets, JSON-RPC errors) and TRY_AGAIN_LATER are retried
with a backoff (:data:`BACKOFF_BASE_S` doubling to ``[soroban] backoff_max_s``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

import structlog
from stellar_sdk import Keypair, xdr
from stellar_sdk.exceptions import (
    AccountNotFoundException,
    BaseRequestError,
    PrepareTransactionException,
    SorobanRpcErrorResponse,
)
from stellar_sdk.exceptions import ConnectionError as SdkConnectionError
from stellar_sdk.soroban_rpc import GetTransactionStatus, SendTransactionStatus
from stellar_sdk.soroban_server_async import SorobanServerAsync

from cloud_sync.backoff import Backoff
from cloud_sync.horizon_http import ThreadedRequestsClient
from cloud_sync.keys import Keypair as GatewayKeypair
from cloud_sync.soroban.errors import from_events
from cloud_sync.soroban.invocation import Delivery, Envelope, SimulationRefused, build, recorded
from gateway.clock import Clock
from gateway.config import GatewayConfig
from gateway.config.p2p import SorobanConfig
from gateway.p2p.store import (
    TX_APPLIED,
    TX_FAILED,
    TX_VOID,
    UPLINK,
    LedgerFile,
    P2PStore,
    RecordRow,
    StoredEnvelope,
)
from gateway.status import GatewayStatus, UplinkProgress

log = structlog.get_logger("cloud_sync.soroban")

NAME: Final = UPLINK
BACKOFF_BASE_S: Final = 1.0
"""First retry delay after an unclear answer or TRY_AGAIN_LATER; doubles up to backoff_max_s."""
CONFIRM_POLL_S: Final = 1.0
"""Clock seconds between getTransaction polls after PENDING (a ledger closes every ~5 s)."""
IDLE_RECHECK_S: Final = 30.0
"""Clock seconds between looks at the records when nothing wakes the uplink."""
ALARM: Final = "soroban"


class Unavailable(Exception):
    """No clear answer from the RPC server (timeout, 5xx, reset, JSON-RPC error): try again later."""


_TRANSIENT = (SdkConnectionError, BaseRequestError, SorobanRpcErrorResponse, PrepareTransactionException,
              asyncio.TimeoutError, ValueError)


class SorobanUplink:
    def __init__(self, cfg: SorobanConfig, db: LedgerFile, clock: Clock, keypair: Keypair, *,
                 alarms: dict[str, str] | None = None, wakeup: Callable[[], asyncio.Event] | None = None,
                 progress: UplinkProgress | None = None) -> None:
        self.cfg = cfg
        self.store = P2PStore(db)
        self._clock = clock
        self._keypair = keypair
        self.gateway = keypair.public_key
        self.alarms = alarms if alarms is not None else {}
        self._wakeup = wakeup
        self.progress = progress or UplinkProgress()
        self.backoff = Backoff(base_s=BACKOFF_BASE_S, max_s=cfg.backoff_max_s)
        self._server: SorobanServerAsync | None = None
        self._stalled: set[int] = set()
        """Records whose simulation failed for a reason other than a contract error (retried after a wait)."""

    def _open(self) -> SorobanServerAsync:
        client = ThreadedRequestsClient(get_timeout_s=self.cfg.timeout_s, post_timeout_s=self.cfg.timeout_s)
        return SorobanServerAsync(self.cfg.rpc_url, client=client)

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[SorobanUplink]:
        """The RPC client open for :meth:`step` (``run`` and ``drain`` open their own)."""
        self._server = self._open()
        try:
            yield self
        finally:
            await self._server.close()

    async def run(self) -> None:
        async with self.session():
            while True:
                event = self._wakeup() if self._wakeup else None
                if await self.step():
                    continue
                await self._idle(event)

    async def drain(self, deadline_s: float) -> int:
        """Send what is pending until nothing is left or ``deadline_s`` host seconds pass (shutdown)."""
        sent = self.progress.delivered
        try:
            async with asyncio.timeout(deadline_s), self.session():
                while await self.step():
                    pass
        except TimeoutError:
            log.info("soroban_drain_incomplete", delivered=self.progress.delivered - sent)
        return self.progress.delivered - sent

    @property
    def _rpc(self) -> SorobanServerAsync:
        assert self._server is not None, "open the RPC client first (run or drain)"
        return self._server

    def _now_ms(self) -> int:
        return int(self._clock.now() * 1000)

    # ---- one step --------------------------------------------------------------------------

    async def step(self) -> bool:
        """Do the most urgent piece of work; False when there is nothing to do right now."""
        try:
            pending = await self.store.pending_envelope()
            if pending is not None:
                await self._resolve(pending)
                return True
            record = await self.store.next_unsent(skip=sorted(self._stalled))
            if record is None:
                self._stalled.clear()
                return False
            await self._deliver(record)
            return True
        except _TRANSIENT as exc:
            await self._retry_later(None, f"{type(exc).__name__}: {exc}")
            return True

    async def _retry_later(self, tx: StoredEnvelope | None, error: str) -> None:
        delay = self.backoff.next_delay()
        (log.warning if self.backoff.attempts <= 1 else log.debug)(
            "soroban_retry", tx=tx.hash if tx else None, error=error[:200], retry_in_s=round(delay, 1))
        if tx is not None:
            await self.store.note_attempt(tx.hash, error=error[:500], now_ms=self._now_ms())
        await self._clock.sleep(delay)

    async def _deliver(self, record: RecordRow) -> None:
        delivery = Delivery(record.agreement_id, record.kwh, record.meter_reading, record.provider)
        if any(e.state == TX_VOID for e in await self.store.envelopes(record.agreement_id)):
            found = await recorded(self._rpc, gateway=self._keypair, passphrase=self.cfg.network_passphrase,
                                   contract_id=self.cfg.contract_id, delivery=delivery)
            if found is not None:
                await self.store.found_delivered(record.agreement_id, found, now_ms=self._now_ms())
                log.info("p2p_delivery_found", agreement=record.agreement_id, contract_tx=found)
                return
        try:
            env: Envelope = await build(self._rpc, gateway=self._keypair, passphrase=self.cfg.network_passphrase,
                                        contract_id=self.cfg.contract_id, delivery=delivery,
                                        timeout_s=self.cfg.tx_timeout_s)
        except SimulationRefused as refused:
            if refused.contract_error is None:
                self._stalled.add(record.agreement_id)
                self.alarms[ALARM] = (f"Soroban: agreement {record.agreement_id}'s delivery cannot be simulated "
                                      f"({refused.error[:200]}); check [soroban] contract_id and rpc_url.")
                await self._retry_later(None, refused.error)
                return
            await self.store.dead_letter(record.agreement_id, refused.contract_error, refused.error,
                                         now_ms=self._now_ms())
            log.error("p2p_delivery_refused", agreement=record.agreement_id, error=refused.contract_error,
                      stage="simulate")
            return
        stored = await self.store.store_envelope(record.agreement_id, env.hash, env.xdr, env.seq, env.max_time,
                                                 now_ms=self._now_ms())
        log.debug("soroban_envelope_stored", agreement=record.agreement_id, tx=env.hash, seq=env.seq)
        await self._resolve(stored)

    async def _resolve(self, tx: StoredEnvelope) -> None:
        """Until the envelope's fate is certain: getTransaction first, then the same bytes again."""
        while True:
            try:
                if await self._attempt(tx):
                    self.backoff.reset()
                    return
            except _TRANSIENT as exc:
                await self._retry_later(tx, f"{type(exc).__name__}: {exc}")

    async def _attempt(self, tx: StoredEnvelope) -> bool:
        got = await self._rpc.get_transaction(tx.hash)
        if got.status != GetTransactionStatus.NOT_FOUND:
            return await self._settle_found(tx, got)
        # Not (yet) in the history. The sequence first, then the history again: if the account is at
        # or past ours and the hash is still unknown, ours can never be included.
        sequence = await self._sequence()
        again = await self._rpc.get_transaction(tx.hash)
        if again.status != GetTransactionStatus.NOT_FOUND:
            return await self._settle_found(tx, again)
        close_time = int(again.latest_ledger_close_time or 0)
        if (sequence is not None and sequence >= tx.seq) or close_time > tx.max_time:
            reason = (f"sequence {tx.seq} used by another transaction (account at {sequence})"
                      if sequence is not None and sequence >= tx.seq else "past its time bound, never included")
            await self.store.settle(tx, TX_VOID, result={"reason": reason}, now_ms=self._now_ms())
            log.info("soroban_envelope_void", agreement=tx.agreement_id, tx=tx.hash, reason=reason)
            return True
        sent = await self._rpc.send_transaction(tx.envelope)
        if sent.status in (SendTransactionStatus.PENDING, SendTransactionStatus.DUPLICATE):
            got = await self._rpc.get_transaction(tx.hash)
            if got.status != GetTransactionStatus.NOT_FOUND:
                return await self._settle_found(tx, got)
            await self._clock.sleep(CONFIRM_POLL_S)
            return False
        if sent.status == SendTransactionStatus.TRY_AGAIN_LATER:
            await self._retry_later(tx, "TRY_AGAIN_LATER")
            return False
        code = _result_code(sent.error_result_xdr)
        self.alarms[ALARM] = (f"Soroban: the delivery for agreement {tx.agreement_id} is refused ({code}); it is "
                              "resent until it is accepted or proved void")
        await self._retry_later(tx, f"ERROR {code}")
        return False

    async def _sequence(self) -> int | None:
        try:
            account = await self._rpc.load_account(self.gateway)
        except AccountNotFoundException:
            return None
        return int(account.sequence)

    async def _settle_found(self, tx: StoredEnvelope, got: Any) -> bool:
        if got.status == GetTransactionStatus.SUCCESS:
            contract_tx = _return_u64(got.result_meta_xdr)
            await self.store.settle(tx, TX_APPLIED, result={"ledger": got.ledger, "contract_tx_id": contract_tx},
                                    now_ms=self._now_ms(), contract_tx_id=contract_tx)
            self.progress.record(1, self._clock.monotonic())
            self.alarms.pop(ALARM, None)
            log.info("p2p_delivery_recorded", agreement=tx.agreement_id, tx=tx.hash, contract_tx=contract_tx,
                     ledger=got.ledger)
            return True
        name, detail = from_events(got.diagnostic_events_xdr)
        await self.store.settle(tx, TX_FAILED, result={"ledger": got.ledger, "error": name, "detail": detail},
                                now_ms=self._now_ms(), error_name=name)
        log.error("p2p_delivery_refused", agreement=tx.agreement_id, tx=tx.hash, error=name, detail=detail,
                  stage="apply")
        return True

    async def _idle(self, event: asyncio.Event | None) -> None:
        if event is None:
            await self._clock.sleep(IDLE_RECHECK_S)
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._clock.host_seconds(IDLE_RECHECK_S) + 0.001):
                await event.wait()


def _return_u64(meta_xdr: str | None) -> int | None:
    if not meta_xdr:
        return None
    meta = xdr.TransactionMeta.from_xdr(meta_xdr)
    body = getattr(meta, f"v{meta.v}", None)
    soroban = getattr(body, "soroban_meta", None)
    value = getattr(soroban, "return_value", None)
    if value is None or value.u64 is None:
        return None
    return int(value.u64.uint64)


def _result_code(result_xdr: str | None) -> str:
    if not result_xdr:
        return "unknown"
    try:
        return str(xdr.TransactionResult.from_xdr(result_xdr).result.code.name)
    except (ValueError, TypeError, IndexError):
        return "unreadable"


def for_daemon(cfg: GatewayConfig, db: LedgerFile, clock: Clock, keypair: GatewayKeypair, status: GatewayStatus,
               wakeup: Callable[[], asyncio.Event] | None) -> SorobanUplink:
    """The uplink as the daemon runs it: woken by the planner whenever it made records."""
    assert cfg.soroban is not None
    return SorobanUplink(cfg.soroban, db, clock, keypair.to_sdk(), alarms=status.alarms, wakeup=wakeup,
                         progress=status.uplinks.setdefault(NAME, UplinkProgress()))
