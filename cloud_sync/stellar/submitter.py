"""Exactly once on Stellar: the life of one stored envelope until its fate is known for certain.

After stellar-disbursement-platform's transaction submission service. The envelope was stored
(hash, bytes, sequence number, upper bounds) before this is called. Then:

* an **unclear** answer (timeout, reset, 5xx, 429) → resend the *same* bytes after a backoff
  (``Retry-After`` honoured). Resending is safe: Horizon answers an included envelope with its
  original result. Once the network's latest ledger is past the bounds, look the hash up: found
  → its result; not found → :data:`VOID`, it can never be included;
* a **refusal** (``tx_bad_seq``, ``tx_bad_auth``, ``tx_failed`` …) → load the gateway account's
  sequence number *first*, then look the hash up: found → its result (Horizon says ``tx_failed``
  also for an envelope refused before inclusion, so only the history tells). Not found and the
  account's sequence already at or past ours → VOID (another transaction used the number; ours
  can never apply). Otherwise it stays pending until its bound passes, retried meanwhile (the
  cause may be fixed: an account funded) — slowly if the cause needs an operator.

So a transaction is rebuilt only after it is proved never to be included: no credit is paid
twice, and no meter gets a second account, whatever fails and whenever the box loses power.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import structlog

from cloud_sync.backoff import Backoff
from cloud_sync.stellar.horizon import HorizonClient, HorizonUnavailable, Refused, TxRecord
from cloud_sync.stellar.store import APPLIED, FAILED, VOID, StellarStore, StoredTx
from gateway.clock import Clock

log = structlog.get_logger("cloud_sync.stellar")

TERMINAL_TX: Final = frozenset({"tx_bad_auth", "tx_bad_auth_extra", "tx_insufficient_balance",
                                "tx_no_source_account", "tx_malformed", "transaction_malformed", "tx_not_supported"})
"""Refusals a retry will not fix without someone acting (fund, re-key, fix a bug)."""
TERMINAL_OPS: Final = frozenset({"op_bad_auth", "op_underfunded", "op_src_not_authorized", "op_no_destination",
                                 "op_no_trust", "op_src_no_trust", "op_line_full", "op_not_authorized",
                                 "op_no_issuer", "op_low_reserve", "op_already_exists", "op_malformed",
                                 "op_no_source_account", "op_not_supported", "op_too_many_subentries"})


def is_terminal(tx_code: str, op_codes: list[str]) -> bool:
    return tx_code in TERMINAL_TX or any(code in TERMINAL_OPS for code in op_codes)


@dataclass(frozen=True, slots=True)
class Resolution:
    state: str
    """APPLIED (included, successful), FAILED (included, its operations failed: fee charged), VOID."""
    tx_code: str
    op_codes: list[str] = field(default_factory=list)
    ledger: int | None = None
    reason: str = ""

    @property
    def terminal(self) -> bool:
        """A failure that needs an operator before the same work is tried again."""
        return self.state != APPLIED and is_terminal(self.tx_code, self.op_codes)

    def as_result(self) -> dict[str, object]:
        return {"transaction": self.tx_code, "operations": self.op_codes, "ledger": self.ledger,
                "reason": self.reason}


def _found(record: TxRecord) -> Resolution:
    state = APPLIED if record.successful else FAILED
    return Resolution(state, record.tx_code, record.op_codes, record.ledger, "found in the network's history")


ProblemHook = Callable[[StoredTx, str, bool], None]
"""Told (tx, what is wrong, needs an operator) whenever an attempt does not settle the transaction."""


class Submitter:
    def __init__(self, horizon: HorizonClient, store: StellarStore, clock: Clock, gateway: str, *,
                 backoff_max_s: float, on_problem: ProblemHook | None = None) -> None:
        self._horizon = horizon
        self._store = store
        self._clock = clock
        self._gateway = gateway
        self.backoff = Backoff(base_s=1.0, max_s=backoff_max_s)
        self._on_problem = on_problem

    def _now_ms(self) -> int:
        return int(self._clock.now() * 1000)

    async def resolve(self, tx: StoredTx) -> Resolution:
        """Submit (again) until the envelope's fate is certain; never returns anything uncertain."""
        while True:
            try:
                resolution = await self._attempt(tx)
            except HorizonUnavailable as exc:
                await self._wait(tx, str(exc), self.backoff.next_delay(exc.retry_after), operator=False)
                continue
            except Refused as exc:  # a clear answer to a lookup (not the submit): malformed hash, ...
                await self._wait(tx, str(exc), self.backoff.give_up_to_max(), operator=True)
                continue
            if resolution is not None:
                self.backoff.reset()
                log.info("stellar_tx_settled", tx=tx.hash, purpose=tx.purpose, ref=tx.ref, state=resolution.state,
                         code=resolution.tx_code, ops=_failing(resolution.op_codes), reason=resolution.reason)
                return resolution

    async def _wait(self, tx: StoredTx, error: str, delay: float, *, operator: bool) -> None:
        first = self.backoff.attempts <= 1
        (log.warning if first or operator else log.debug)(
            "stellar_tx_retry", tx=tx.hash, purpose=tx.purpose, ref=tx.ref, error=error, retry_in_s=round(delay, 1))
        if self._on_problem is not None:
            self._on_problem(tx, error, operator)
        await self._store.note_attempt(tx, error=error, now_ms=self._now_ms())
        await self._clock.sleep(delay)

    async def _attempt(self, tx: StoredTx) -> Resolution | None:
        try:
            record = await self._horizon.submit(tx.envelope)
        except HorizonUnavailable:
            view = await self._horizon.latest()
            if not tx.bounds.passed(view):
                raise
            found = await self._horizon.lookup(tx.hash)
            return _found(found) if found else Resolution(VOID, "not_found", reason=(
                f"not in the network's history and past its bounds (ledger {view.ledger} ≥ "
                f"{tx.bounds.max_ledger - 1} or time {view.closed_at} ≥ {tx.bounds.max_time})"))
        except Refused as refused:
            return await self._after_refusal(tx, refused)
        return Resolution(APPLIED, "tx_success", [], int(record.get("ledger", 0)) or None, "accepted")

    async def _after_refusal(self, tx: StoredTx, refused: Refused) -> Resolution | None:
        # The account first, then the history: if its sequence is past ours at the first read and the
        # hash is not in the history at the second, ours was never included and never will be.
        sequence = await self._horizon.sequence(self._gateway)
        found = await self._horizon.lookup(tx.hash)
        if found is not None:
            return _found(found)
        if sequence is not None and sequence >= tx.seq:
            return Resolution(VOID, refused.tx_code, refused.op_codes,
                              reason=f"sequence {tx.seq} already used (account at {sequence})")
        view = await self._horizon.latest()
        if tx.bounds.passed(view) or refused.tx_code == "tx_too_late":
            return Resolution(VOID, refused.tx_code, refused.op_codes, reason="refused and past its bounds")
        operator = is_terminal(refused.tx_code, refused.op_codes)
        delay = self.backoff.give_up_to_max() if operator else self.backoff.next_delay()
        await self._wait(tx, f"refused: {refused.tx_code} {_failing(refused.op_codes) or ''}".strip(), delay,
                         operator=operator)
        return None


def _failing(op_codes: list[str]) -> list[str]:
    return [f"#{i}:{c}" for i, c in enumerate(op_codes) if c != "op_success"]
