"""The local network: its clock-driven ledgers, the rules, the store, under one writer lock.

Ledgers close on the injected clock, one every ``close_interval_s`` seconds of clock time from
the genesis (ledger 1): ledger N closes at ``genesis + (N - 1) × interval``. A submitted
transaction is validated and applied at once, into the *open* ledger (the one after the
latest closed), and its result is durable before the submitter hears it — so ``POST
/transactions`` answers synchronously, like Horizon, with the ledger it landed in; that ledger
closes when the clock reaches its close time. Time bounds are checked against that close time,
ledger bounds against its sequence number, exactly as the network checks them.

If the clock goes back (a restart with an earlier simulated clock), the ledger sequence never
does: the open ledger is never before one that already holds transactions.

The network's root account (all 100 billion XLM at genesis) has the key every Stellar network
derives from its passphrase: seed = SHA-256(passphrase). Friendbot pays new accounts from it.
"""

from __future__ import annotations

import hashlib
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import structlog
from stellar_sdk import Account as SdkAccount
from stellar_sdk import Keypair, Network, StrKey, TransactionBuilder

from cloud_sync.horizon.context import LedgerContext
from cloud_sync.horizon.entries import STROOPS_PER_XLM, Account, DataEntry, TrustLine, account_key
from cloud_sync.horizon.envelope import decode_envelope, frame_of, network_id
from cloud_sync.horizon.errors import FriendbotRefused, LocalLedgerError
from cloud_sync.horizon.history import build_records, iso, toid
from cloud_sync.horizon.store import LedgerRow, LedgerStore
from cloud_sync.horizon.transaction import TxOutcome, apply_transaction
from gateway.clock import Clock

log = structlog.get_logger("cloud_sync.horizon")

DEFAULT_PASSPHRASE: Final = Network.STANDALONE_NETWORK_PASSPHRASE
DEFAULT_CLOSE_INTERVAL_S: Final = 5
DEFAULT_BASE_FEE: Final = 100
DEFAULT_BASE_RESERVE: Final = 5_000_000
TOTAL_COINS: Final = 100_000_000_000 * STROOPS_PER_XLM
FRIENDBOT_AMOUNT: Final = 10_000 * STROOPS_PER_XLM
PROTOCOL_VERSION: Final = 22
MAX_TX_SET_OPS: Final = 1000
DB_FILE: Final = "ledger.sqlite3"


@dataclass(frozen=True, slots=True)
class Submission:
    """What happened to a submitted envelope."""

    hash: str
    envelope_xdr: str
    result_xdr: str
    included: bool
    """In the ledger's history (successful or not): fee charged, sequence number consumed."""
    successful: bool
    record: dict[str, Any] | None
    """The transaction's Horizon record, if included."""
    replayed: bool = False
    """Found by hash in history: the original result, nothing applied again."""


@dataclass(frozen=True, slots=True)
class LedgerInfo:
    row: LedgerRow
    closed_at: int
    network_id: bytes

    @property
    def sequence(self) -> int:
        return self.row.sequence

    def hash(self, sequence: int | None = None) -> str:
        seq = self.row.sequence if sequence is None else sequence
        return hashlib.sha256(self.network_id + seq.to_bytes(8, "big")).hexdigest()


@dataclass(frozen=True, slots=True)
class AccountView:
    account: Account
    trustlines: list[TrustLine]
    data: list[DataEntry]
    last_modified_time: int


class LocalLedger:
    def __init__(self, data_dir: Path, clock: Clock, *, network_passphrase: str | None = None,
                 close_interval_s: int | None = None, base_fee: int | None = None,
                 base_reserve: int | None = None) -> None:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._clock = clock
        self._lock = threading.RLock()
        self.store = LedgerStore(data_dir / DB_FILE)
        meta = self.store.meta()
        if not meta:
            self._genesis(network_passphrase or DEFAULT_PASSPHRASE, close_interval_s or DEFAULT_CLOSE_INTERVAL_S,
                          base_fee or DEFAULT_BASE_FEE, base_reserve or DEFAULT_BASE_RESERVE)
            meta = self.store.meta()
        elif network_passphrase is not None and network_passphrase != meta["network_passphrase"]:
            raise LocalLedgerError(
                f"{data_dir} holds the ledger of network {meta['network_passphrase']!r}, not "
                f"{network_passphrase!r}; use another --data-dir for another network")
        self.network_passphrase = meta["network_passphrase"]
        self.network_id = network_id(self.network_passphrase)
        self._genesis_time = int(meta["genesis_time"])
        self._interval = int(meta["close_interval_s"])
        if close_interval_s is not None and close_interval_s != self._interval:
            raise LocalLedgerError(f"{data_dir} closes a ledger every {self._interval} s; the interval of an "
                                   f"existing ledger cannot change (leave out --close-interval)")
        self.root = Keypair.from_raw_ed25519_seed(hashlib.sha256(self.network_passphrase.encode()).digest())
        if base_fee is not None or base_reserve is not None:
            self.upgrade(base_fee=base_fee, base_reserve=base_reserve)

    def _genesis(self, passphrase: str, interval: int, base_fee: int, base_reserve: int) -> None:
        if interval < 1:
            raise LocalLedgerError("the close interval must be at least 1 s")
        root_id = Keypair.from_raw_ed25519_seed(hashlib.sha256(passphrase.encode()).digest()).public_key
        genesis_time = math.floor(self._clock.now())
        self.store.initialise(
            {"network_passphrase": passphrase, "genesis_time": str(genesis_time), "close_interval_s": str(interval)},
            LedgerRow(1, 0, 0, 0, 0, 0, TOTAL_COINS, base_fee, base_reserve),
            Account(root_id, TOTAL_COINS, 0, master_weight=1, last_modified_ledger=1))
        log.info("horizon.genesis", network_passphrase=passphrase, root=root_id, data=str(self.store.path))

    def close(self) -> None:
        self.store.close()

    # -- ledgers on the clock ------------------------------------------------------------------
    def close_time(self, sequence: int) -> int:
        return self._genesis_time + (sequence - 1) * self._interval

    def _open_sequence(self) -> int:
        grid_closed = max(1, 1 + math.floor((self._clock.now() - self._genesis_time) / self._interval))
        return max(grid_closed + 1, self.store.latest_row().sequence)

    def open_ledger(self) -> LedgerContext:
        with self._lock:
            seq = self._open_sequence()
            row = self.store.latest_row(seq)
            return LedgerContext(self.network_id, seq, self.close_time(seq), row.base_fee, row.base_reserve)

    def latest_closed(self) -> LedgerInfo:
        with self._lock:
            return self.ledger_info(self._open_sequence() - 1)

    def ledger_info(self, sequence: int) -> LedgerInfo:
        row = self.store.latest_row(sequence).carried_to(sequence)
        return LedgerInfo(row, self.close_time(sequence), self.network_id)

    def ledgers(self, first: int, last: int) -> list[LedgerInfo]:
        """Closed ledgers first..last (inclusive, ascending)."""
        with self._lock:
            rows = self.store.rows_between(first, last)
            base = self.store.latest_row(first)
            out = []
            for seq in range(first, last + 1):
                base = rows.get(seq, base)
                out.append(LedgerInfo(base.carried_to(seq), self.close_time(seq), self.network_id))
            return out

    def upgrade(self, *, base_fee: int | None = None, base_reserve: int | None = None) -> LedgerContext:
        """Change the base fee or reserve from the open ledger on (as a network upgrade would)."""
        if (base_fee is not None and base_fee < 1) or (base_reserve is not None and base_reserve < 1):
            raise LocalLedgerError("base fee and base reserve must be at least 1 stroop")
        with self._lock:
            seq = self._open_sequence()
            row = self.store.latest_row(seq).carried_to(seq)
            new = LedgerRow(seq, row.successful_tx, row.failed_tx, row.operation_count, row.tx_set_operation_count,
                            row.fee_pool, row.total_coins, base_fee or row.base_fee, base_reserve or row.base_reserve)
            if new != row:
                self.store.put_ledger(new)
                log.info("horizon.upgrade", ledger=seq, base_fee=new.base_fee, base_reserve=new.base_reserve)
            return self.open_ledger()

    # -- submitting ----------------------------------------------------------------------------
    def submit(self, envelope_b64: str) -> Submission:
        """Apply an envelope (or return its stored result). Raises MalformedEnvelope."""
        envelope_xdr = envelope_b64.strip()
        frame = frame_of(decode_envelope(envelope_xdr), self.network_id)
        with self._lock:
            stored = self.store.transaction(frame.hash.hex())
            if stored is not None:
                return Submission(stored["hash"], stored["envelope_xdr"], stored["result_xdr"], True,
                                  stored["successful"], stored, replayed=True)
            ctx = self.open_ledger()
            outcome = apply_transaction(self.store, ctx, frame)
            if not outcome.included:
                log.debug("horizon.refused", hash=outcome.hash_hex, code=outcome.code_name)
                return Submission(outcome.hash_hex, envelope_xdr, outcome.result.to_xdr(), False, False, None)
            return self._record(outcome, envelope_xdr, ctx)

    def _record(self, outcome: TxOutcome, envelope_xdr: str, ctx: LedgerContext) -> Submission:
        records = build_records(outcome, envelope_xdr, ctx.seq, self.store.next_order(ctx.seq), ctx.close_time)
        row = self.store.latest_row(ctx.seq).carried_to(ctx.seq)
        n_ops = records.record["operation_count"]
        row = LedgerRow(ctx.seq, row.successful_tx + outcome.successful, row.failed_tx + (not outcome.successful),
                        row.operation_count + (n_ops if outcome.successful else 0), row.tx_set_operation_count + n_ops,
                        row.fee_pool + outcome.fee_charged, row.total_coins, row.base_fee, row.base_reserve)
        self.store.commit(outcome.changes, ctx.seq, records, row)
        log.debug("horizon.applied", hash=outcome.hash_hex, ledger=ctx.seq, code=outcome.code_name)
        return Submission(outcome.hash_hex, envelope_xdr, outcome.result.to_xdr(), True, outcome.successful,
                          records.record)

    def friendbot(self, address: str) -> Submission:
        """Fund a new account with 10 000 XLM from the root account, as testnet's friendbot does."""
        if not StrKey.is_valid_ed25519_public_key(address):
            raise FriendbotRefused(f"{address!r} is not a valid account address (G…)")
        with self._lock:
            if self.store.get_entry(account_key(address)) is not None:
                raise FriendbotRefused("account already funded to starting balance")
            root = self.store.get_entry(account_key(self.root.public_key))
            assert isinstance(root, Account)
            ctx = self.open_ledger()
            tx = (TransactionBuilder(SdkAccount(self.root.public_key, root.seq_num), self.network_passphrase,
                                     base_fee=ctx.base_fee)
                  .append_create_account_op(address, str(FRIENDBOT_AMOUNT // STROOPS_PER_XLM))
                  .add_time_bounds(0, 0).build())
            tx.sign(self.root)
            return self.submit(tx.to_xdr())

    # -- reading -------------------------------------------------------------------------------
    def account(self, account_id: str) -> AccountView | None:
        with self._lock:
            entry = self.store.get_entry(account_key(account_id))
            if entry is None:
                return None
            assert isinstance(entry, Account)
            return AccountView(entry, self.store.trustlines_of(account_id), self.store.data_of(account_id),
                               self.close_time(entry.last_modified_ledger))

    def transaction(self, tx_hash: str) -> dict[str, Any] | None:
        return self.store.transaction(tx_hash.lower())

    def fee_stats(self) -> dict[str, Any]:
        with self._lock:
            latest = self.latest_closed()
            samples = self.store.fee_samples(max(1, latest.sequence - 4), latest.sequence)
            last_ops = self.store.rows_between(latest.sequence, latest.sequence)
        base = latest.row.base_fee
        charged = sorted(fee // max(ops, 1) for fee, _, ops in samples) or [base]
        bids = sorted(bid // max(ops, 1) for _, bid, ops in samples) or [base]
        used = last_ops[latest.sequence].tx_set_operation_count if latest.sequence in last_ops else 0
        return {"last_ledger": str(latest.sequence), "last_ledger_base_fee": str(base),
                "ledger_capacity_usage": f"{used / MAX_TX_SET_OPS:.2f}",
                "fee_charged": _percentiles(charged), "max_fee": _percentiles(bids)}

    def paging_token(self, sequence: int) -> str:
        return str(toid(sequence))

    def closed_at_iso(self, sequence: int) -> str:
        return iso(self.close_time(sequence))


def _percentiles(values: list[int]) -> dict[str, str]:
    def nearest(p: int) -> int:
        return values[max(0, math.ceil(p / 100 * len(values)) - 1)]

    mode = max(set(values), key=lambda v: (values.count(v), -v))
    out = {"max": str(values[-1]), "min": str(values[0]), "mode": str(mode)}
    out.update({f"p{p}": str(nearest(p)) for p in (10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 99)})
    return out

