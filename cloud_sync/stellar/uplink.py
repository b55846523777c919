"""The Stellar uplink: every outbox credit paid to its meter's custodial account, exactly once.

One task, one transaction in flight (the gateway account's sequence numbers are used in order).
Each step does the most urgent thing:

1. a stored envelope still pending (after a restart, a timeout, a refusal) is resolved first —
   :mod:`.submitter` resends the same bytes until its fate is certain;
2. a configured meter without an account gets one (:mod:`.provision`);
3. the next batch of credits (up to 100 payments) is built, stored and submitted.

Delivery state is its own (cursor and batches under ``uplink='stellar'``): the billing API
being down does not hold Stellar back, nor the other way round. A batch waits only for its
meters' accounts. A failure that needs an operator (an exhausted allowance, a missing
trustline) dead-letters the batch with an alarm saying what to do; it stays first in line and
is retried at the slowest pace, so the balances never skip a credit.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Final

import structlog
from stellar_sdk import Keypair

from cloud_sync.stellar.advice import Parties, explain
from cloud_sync.stellar.amounts import format_amount, rate_stroops
from cloud_sync.stellar.horizon import HorizonClient, HorizonError, HorizonUnavailable, balance_of
from cloud_sync.stellar.provision import MeterSerials, Provisioner, RegisterReader, SerialUnavailable
from cloud_sync.stellar.store import (
    APPLIED,
    CREDIT,
    FAILED,
    PENDING,
    UPLINK,
    AccountRow,
    Batch,
    LedgerFile,
    StellarStore,
    StoredTx,
)
from cloud_sync.stellar.submitter import Resolution, Submitter
from cloud_sync.stellar.txbuild import Bounds, CreditLine, asset_of, batch_memo, credit_payments, credit_transaction
from gateway.clock import Clock
from gateway.config import GatewayConfig, StellarConfig
from gateway.errors import ConfigError
from gateway.profiles import Profile
from gateway.status import GatewayStatus, StellarAccountStatus, StellarStatus, UplinkProgress

log = structlog.get_logger("cloud_sync.stellar")

NAME: Final = UPLINK
IDLE_RECHECK_S: Final = 30.0
"""Clock seconds between looks at the outbox when nothing wakes the uplink."""
BALANCES_PER_IDLE: Final = 20
"""Balance reads per idle moment: a status page does not need them all at once."""
KEEP_SETTLED_MS: Final = 7 * 86_400_000
"""Settled envelopes are kept a week for audits, then pruned."""
PRUNE_EVERY_S: Final = 3600.0
ALARM: Final = "stellar"
PROVISION_ATTEMPTS: Final = 3
"""Attempts per meter in one ``provision`` run: a void envelope (never included) is followed by a new one."""

SerialSource = Callable[[str], Awaitable[str]]


def account_alarm(meter: str) -> str:
    return f"stellar_account:{meter}"


class StellarUplink:
    def __init__(self, cfg: StellarConfig, db: LedgerFile, clock: Clock, keypair: Keypair, *,
                 meters: Sequence[str], serials: SerialSource, status: StellarStatus | None = None,
                 alarms: dict[str, str] | None = None, wakeup: Callable[[], asyncio.Event] | None = None,
                 progress: UplinkProgress | None = None) -> None:
        if cfg.gateway_account is not None and cfg.gateway_account != keypair.public_key:
            raise ConfigError(f"[stellar] gateway_account {cfg.gateway_account} is not this box's key "
                              f"{keypair.public_key} (meter-gateway identity): correct it or leave it out")
        self.cfg = cfg
        self.store = StellarStore(db)
        self._clock = clock
        self._keypair = keypair
        self.gateway = keypair.public_key
        self._meters = list(meters)
        self._serials = serials
        self.status = status or StellarStatus(cfg.horizon_url, self.gateway, f"{cfg.asset_code}:{cfg.asset_issuer}",
                                              cfg.rate)
        for meter in self._meters:
            self.status.accounts.setdefault(meter, StellarAccountStatus(meter, "waiting"))
        self.alarms = alarms if alarms is not None else {}
        self._wakeup = wakeup
        self.progress = progress or UplinkProgress()
        self._per_wh = rate_stroops(cfg.rate)
        self._asset = asset_of(cfg.asset_code, cfg.asset_issuer)
        self._retry_at: dict[str, float] = {}
        self._dead_until = 0.0
        self._dirty: set[str] = set()
        self._last_full_refresh = -math.inf
        self._last_prune = -math.inf
        self._horizon: HorizonClient | None = None
        self._submitter: Submitter | None = None
        self._next_seq: int | None = None
        """The gateway account's next sequence number, once an included transaction has shown it."""

    # ---- lifecycle -------------------------------------------------------------------------

    def _client(self) -> HorizonClient:
        return HorizonClient(self.cfg.horizon_url, post_timeout_s=self.cfg.timeout_s)

    def _bind(self, horizon: HorizonClient) -> None:
        self._horizon = horizon
        self._submitter = Submitter(horizon, self.store, self._clock, self.gateway,
                                    backoff_max_s=self.cfg.backoff_max_s, on_problem=self._problem)

    async def run(self) -> None:
        async with self._client() as horizon:
            self._bind(horizon)
            await self.store.set_meta({"horizon_url": self.cfg.horizon_url, "asset_code": self.cfg.asset_code,
                                       "asset_issuer": self.cfg.asset_issuer, "rate": self.cfg.rate,
                                       "network_passphrase": self.cfg.network_passphrase,
                                       "gateway_account": self.gateway})
            self._show_accounts(await self.store.accounts())
            while True:
                event = self._wakeup() if self._wakeup else None
                if await self.step():
                    continue
                await self._idle(event)

    async def drain(self, deadline_s: float) -> int:
        """Pay what is pending until nothing is left or ``deadline_s`` host seconds pass (shutdown)."""
        paid = self.progress.delivered
        try:
            async with asyncio.timeout(deadline_s), self._client() as horizon:
                self._bind(horizon)
                while await self.step():
                    pass
        except TimeoutError:
            log.info("stellar_drain_incomplete", paid=self.progress.delivered - paid)
        return self.progress.delivered - paid

    async def provision(self, meters: Sequence[str]) -> dict[str, StellarAccountStatus]:
        """Give each meter its account now (``meter-gateway stellar provision``); pending work first.

        A pending envelope (the daemon's or an earlier run's, killed mid-way) is resolved before
        anything new is signed, exactly as the daemon would: a rerun after a kill finishes what
        the killed run started instead of starting over.
        """
        async with self._client() as horizon:
            self._bind(horizon)
            pending = await self.store.pending_tx()
            if pending is not None:
                await self._settle(pending, await self._resolve(pending))
            for meter in meters:
                for _ in range(PROVISION_ATTEMPTS):
                    row = (await self.store.accounts()).get(meter)
                    if (row is not None and row.state == "active") or meter in self._retry_at:
                        break
                    await self._provision(meter, row)
            self._show_accounts(await self.store.accounts())
        return {m: self.status.accounts[m] for m in meters if m in self.status.accounts}

    def _now_ms(self) -> int:
        return int(self._clock.now() * 1000)

    # ---- one step --------------------------------------------------------------------------

    async def step(self) -> bool:
        """Do the most urgent piece of work; False when there is nothing to do right now."""
        try:
            pending = await self.store.pending_tx()
            self.status.pending_tx = pending.hash if pending else None
            if pending is not None:
                await self._settle(pending, await self._resolve(pending))
                return True
            accounts = await self.store.accounts()
            self._show_accounts(accounts)
            meter = self._due_for_account(accounts, self.status.waiting_for)
            if meter is not None:
                return await self._provision(meter, accounts.get(meter))
            active = {m: r.account_id for m, r in accounts.items() if r.state == "active"}
            batch, waiting = await self.store.next_batch(active, max_ops=self.cfg.batch_ops, now_ms=self._now_ms())
            if waiting != self.status.waiting_for:
                self.status.waiting_for = waiting
                if waiting is not None:
                    return True  # a meter outside the config has credits: try to give it an account first
            if batch is None:
                return False
            if batch.dead and self._clock.now() < self._dead_until:
                return False
            await self._pay(batch, active)
            return True
        except HorizonUnavailable as exc:
            delay = self._sub.backoff.next_delay(exc.retry_after)
            log.debug("stellar_unavailable", error=str(exc), retry_in_s=round(delay, 1))
            await self._clock.sleep(delay)
            return True

    @property
    def _sub(self) -> Submitter:
        assert self._submitter is not None, "bind a Horizon client first"
        return self._submitter

    @property
    def _hz(self) -> HorizonClient:
        assert self._horizon is not None, "bind a Horizon client first"
        return self._horizon

    async def _resolve(self, tx: StoredTx) -> Resolution:
        return await self._sub.resolve(tx)

    def _due_for_account(self, accounts: dict[str, AccountRow], waiting: str | None) -> str | None:
        now = self._clock.now()
        candidates = [*self._meters, *([waiting] if waiting and waiting not in self._meters else [])]
        for meter in candidates:
            row = accounts.get(meter)
            if (row is None or row.state != "active") and self._retry_at.get(meter, -math.inf) <= now:
                return meter
        return None

    async def _provision(self, meter: str, row: AccountRow | None) -> bool:
        provisioner = Provisioner(self.cfg, self.store, self._hz, self._sub, self._keypair, self._clock)
        shown = self.status.accounts.setdefault(meter, StellarAccountStatus(meter))
        try:
            serial = row.serial if row is not None else await self._serials(meter)
            result, tx, resolution = await provisioner.ensure(meter, serial, row)
        except SerialUnavailable as exc:
            self._retry_at[meter] = self._clock.now() + self.cfg.backoff_max_s
            self.alarms[account_alarm(meter)] = f"Stellar: meter {meter} has no account yet: {exc}."
            shown.state, shown.detail = "waiting", str(exc)
            log.warning("stellar_account_waiting", meter=meter, reason=str(exc))
            return True
        if tx is not None and resolution is not None:
            await self._settle(tx, resolution)
        elif result.how in ("existing", "adopted"):
            self.alarms.pop(account_alarm(meter), None)
            self._dirty.add(meter)
        return True

    async def _pay(self, batch: Batch, active: dict[str, str]) -> None:
        payments = credit_payments(batch.credits, active, self.gateway, self._per_wh)
        if not payments:
            await self.store.deliver_empty(batch, now_ms=self._now_ms())
            self.progress.record(len(batch.credits), self._clock.monotonic())
            return
        view = await self._hz.latest()
        # After an included transaction the account's sequence is known; anyone else using the key
        # meanwhile only costs a tx_bad_seq, which the submitter resolves (and then reloads it).
        sequence = self._next_seq - 1 if self._next_seq is not None else await self._hz.sequence(self.gateway)
        if sequence is None:
            self.alarms[ALARM] = (f"Stellar: the gateway account {self.gateway} is not on the network: the "
                                  "utility must fund it with XLM and an allowance of the asset "
                                  "(meter-gateway stellar onboard).")
            self._dead_until = self._clock.now() + self.cfg.backoff_max_s
            await self._clock.sleep(self._sub.backoff.give_up_to_max())
            return
        tx = credit_transaction(
            self._keypair, sequence + 1, payments, self._asset, batch_memo(c.hash for c in batch.credits),
            bounds=Bounds.after(view, window_ledgers=self.cfg.tx_window_ledgers, timeout_s=self.cfg.tx_timeout_s),
            base_fee=view.base_fee, passphrase=self.cfg.network_passphrase)
        await self.store.record_credit_tx(batch, tx, now_ms=self._now_ms())
        stored = StoredTx(tx.hash, CREDIT, batch.key, tx.envelope, tx.seq, tx.bounds, PENDING, 0)
        log.debug("stellar_batch_submitting", batch=batch.key, tx=tx.hash, payments=len(payments), seq=tx.seq)
        await self._settle(stored, await self._resolve(stored))

    async def _settle(self, tx: StoredTx, resolution: Resolution) -> None:
        accounts = await self.store.accounts()
        parties = Parties(self.gateway, self.cfg.asset_code, {r.account_id: m for m, r in accounts.items()})
        advice = explain(tx, resolution, parties, passphrase=self.cfg.network_passphrase,
                         starting_balance=self.cfg.starting_balance)
        dead = advice if resolution.state == FAILED or resolution.terminal else None
        await self.store.settle(tx, resolution.state, result=resolution.as_result(), now_ms=self._now_ms(),
                                dead_detail=dead)
        self.status.pending_tx = None
        self._next_seq = tx.seq + 1 if resolution.state in (APPLIED, FAILED) else None
        if tx.purpose == CREDIT:
            if resolution.state == APPLIED:
                credits = await self._batch_credits(tx.ref)
                self.progress.record(len(credits), self._clock.monotonic())
                self.status.payments += sum(1 for c in credits if c.wh)
                self._dirty.update(c.meter for c in credits if c.wh)
                self.alarms.pop(ALARM, None)
                log.info("stellar_batch_paid", batch=tx.ref, tx=tx.hash, credits=len(credits), ledger=resolution.ledger)
            elif dead:
                self.alarms[ALARM] = dead
                self._dead_until = self._clock.now() + self.cfg.backoff_max_s
                log.error("stellar_batch_refused", batch=tx.ref, tx=tx.hash, advice=dead)
            return
        meter = tx.ref
        shown = self.status.accounts.setdefault(meter, StellarAccountStatus(meter))
        if resolution.state == APPLIED:
            self.alarms.pop(account_alarm(meter), None)
            self._retry_at.pop(meter, None)
            self._dirty.add(meter)
            log.info("stellar_account_created", meter=meter, tx=tx.hash, ledger=resolution.ledger)
        elif dead:
            self.alarms[account_alarm(meter)] = dead
            self._retry_at[meter] = self._clock.now() + self.cfg.backoff_max_s
            shown.state, shown.detail = "failed", dead
            log.error("stellar_account_failed", meter=meter, tx=tx.hash, advice=dead)

    async def _batch_credits(self, key: str) -> list[CreditLine]:
        first, last = (int(x) for x in key.split(":", 1)[1].split("-"))
        return await self.store.batch_credits(first, last)

    def _problem(self, tx: StoredTx, error: str, operator: bool) -> None:
        """An attempt that settled nothing: an operator's problem becomes an alarm at once."""
        if operator:
            key = ALARM if tx.purpose == CREDIT else account_alarm(tx.ref)
            self.alarms[key] = (f"Stellar: transaction {tx.hash[:12]}… for {tx.ref} is refused ({error}); it is "
                                "resent at the slowest pace until it is accepted or expires.")

    # ---- status ----------------------------------------------------------------------------

    def _show_accounts(self, accounts: dict[str, AccountRow]) -> None:
        for meter, row in accounts.items():
            shown = self.status.accounts.setdefault(meter, StellarAccountStatus(meter))
            shown.serial, shown.account = row.serial, row.account_id
            if row.state == "active" or shown.state != "failed":
                shown.state = row.state
            if row.state == "active":
                shown.detail = None

    async def refresh_balances(self, *, everything: bool = False) -> None:
        """Read balances from the network: changed accounts first, all of them now and then."""
        rows = await self.store.accounts()
        todo = list(self._dirty) if not everything else [m for m, r in rows.items() if r.state == "active"]
        for meter in todo[:BALANCES_PER_IDLE]:
            row = rows.get(meter)
            self._dirty.discard(meter)
            if row is None or row.state != "active":
                continue
            record = await self._hz.account(row.account_id)
            shown = self.status.accounts.setdefault(meter, StellarAccountStatus(meter))
            stroops = balance_of(record, self.cfg.asset_code, self.cfg.asset_issuer) if record else None
            shown.balance = None if stroops is None else format_amount(stroops)
            shown.balance_t = self._clock.now()
        if everything:
            record = await self._hz.account(self.gateway)
            if record is not None:
                xlm = balance_of(record, None, None)
                asset = balance_of(record, self.cfg.asset_code, self.cfg.asset_issuer)
                self.status.xlm_balance = None if xlm is None else format_amount(xlm)
                self.status.asset_balance = None if asset is None else format_amount(asset)
            self.status.latest_ledger = (await self._hz.latest()).ledger

    async def _idle(self, event: asyncio.Event | None) -> None:
        now = self._clock.now()
        with contextlib.suppress(HorizonError):
            full = now - self._last_full_refresh >= self.cfg.balance_refresh_s
            if full or self._dirty:
                await self.refresh_balances(everything=full)
                if full:
                    self._last_full_refresh = now
        if now - self._last_prune >= PRUNE_EVERY_S:
            self._last_prune = now
            await self.store.prune(older_than_ms=self._now_ms() - KEEP_SETTLED_MS)
        timers = [t - now for t in (*self._retry_at.values(), self._dead_until) if t > now]
        wait = min([IDLE_RECHECK_S, *timers])
        if event is None:
            await self._clock.sleep(wait)
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._clock.host_seconds(wait) + 0.001):
                await event.wait()


def for_daemon(cfg: GatewayConfig, db: LedgerFile, clock: Clock, keypair: Keypair, status: GatewayStatus,
               profiles: dict[str, Profile], buses: Mapping[str, RegisterReader],
               wakeup: Callable[[], asyncio.Event]) -> StellarUplink:
    """The uplink as the daemon runs it: serials read through the daemon's own line schedulers."""
    stellar = cfg.stellar
    assert stellar is not None
    status.stellar = StellarStatus(stellar.horizon_url, keypair.public_key,
                                   f"{stellar.asset_code}:{stellar.asset_issuer}", stellar.rate)
    return StellarUplink(stellar, db, clock, keypair, meters=cfg.all_meter_ids(),
                         serials=MeterSerials(cfg, profiles, buses.get), status=status.stellar, alarms=status.alarms,
                         wakeup=wakeup, progress=status.uplinks.setdefault(NAME, UplinkProgress()))
