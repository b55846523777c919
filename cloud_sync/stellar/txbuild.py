"""Transaction building, pure: envelopes from plain data, no I/O, deterministic for given inputs.

Three envelopes, each signed here only by keys the box holds:

* a **credit batch**: up to 100 payments of the utility's asset, one per non-zero credit, from
  the gateway's account to the meter's account (a negative correction: from the meter's account
  back to the gateway's, under the gateway's signer weight on it); memo = :func:`batch_memo`;
* a **meter account** (seed 000's CreateCustomerAccount): create_account, change_trust,
  manage_data ``serial``, and set_options adding the platform's signer and the gateway's, master
  weight 0 — signed by the gateway and a one-time device key the caller then forgets;
* an **invoice** (seed 000's CreateInvoice): see :mod:`cloud_sync.stellar.invoice` (unsigned).

Every transaction the gateway submits carries an upper time bound and an upper ledger bound
taken from the *network's* latest ledger (never the box's clock): once the network is past
them, "not found" is final and the batch may be rebuilt without paying anything twice.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from stellar_sdk import Account, Asset, Keypair, MuxedAccount, Signer, TransactionBuilder, TransactionEnvelope, xdr

MAX_OPS: Final = 100
"""The protocol's maximum operations per transaction."""
SERIAL_DATA_KEY: Final = "serial"
"""The meter account's data entry that holds the meter's serial number (seed 000)."""
PLATFORM_WEIGHT: Final = 2
GATEWAY_WEIGHT: Final = 1
LOW_THRESHOLD: Final = 1
MED_THRESHOLD: Final = 1
HIGH_THRESHOLD: Final = 2
"""Meter account thresholds: the platform's signer alone meets HIGH (signers, thresholds, merge);
the gateway's meets LOW and MEDIUM (payments) but never HIGH, so it cannot take an account over."""


@dataclass(frozen=True, slots=True)
class NetworkView:
    """The network's latest closed ledger, as Horizon reports it."""

    ledger: int
    closed_at: int
    """Its close time, Unix seconds: the network's clock, which time bounds are checked against."""
    base_fee: int
    """Stroops per operation."""
    base_reserve: int = 5_000_000
    """Stroops of minimum balance per entry."""


@dataclass(frozen=True, slots=True)
class Bounds:
    max_ledger: int
    """Exclusive: the transaction is valid only in a ledger whose sequence is below this."""
    max_time: int
    """Inclusive: only in a ledger that closes at or before this (Unix seconds)."""

    @classmethod
    def after(cls, view: NetworkView, *, window_ledgers: int, timeout_s: int) -> Bounds:
        return cls(view.ledger + window_ledgers, view.closed_at + timeout_s)

    def passed(self, view: NetworkView) -> bool:
        """True once no ledger still to come can include a transaction with these bounds.

        The next ledger is ``view.ledger + 1`` and closes strictly after ``view.closed_at``.
        """
        return view.ledger + 1 >= self.max_ledger or view.closed_at >= self.max_time


@dataclass(frozen=True, slots=True)
class BuiltTx:
    hash: str
    envelope: str
    """Base64 envelope XDR, signed: stored before the first submit and resent byte for byte."""
    seq: int
    bounds: Bounds


@dataclass(frozen=True, slots=True)
class Payment:
    destination: str
    stroops: int
    source: str | None = None
    """The operation's source; None = the transaction's (the gateway)."""
    credit_id: int = 0


@dataclass(frozen=True, slots=True)
class CreditLine:
    """One outbox credit as the Stellar uplink needs it."""

    id: int
    meter: str
    wh: int
    hash: str


def batch_memo(credit_hashes: Iterable[str]) -> bytes:
    """The batch's MemoHash: SHA-256 of its credits' 32-byte hashes, concatenated in outbox order.

    A central system holding the credits (hex ``hash`` fields) recomputes it and so ties every
    payment transaction to exactly the credits it pays.
    """
    digest = hashlib.sha256()
    for h in credit_hashes:
        digest.update(bytes.fromhex(h))
    return digest.digest()


def credit_payments(credits: Sequence[CreditLine], accounts: dict[str, str], gateway: str,
                    per_wh: int) -> list[Payment]:
    """One payment per non-zero credit: positive to the meter's account, negative back from it.

    A zero-energy credit moves nothing (Stellar refuses a zero payment) and has no operation.
    """
    out = []
    for credit in credits:
        stroops = credit.wh * per_wh
        account = accounts[credit.meter]
        if stroops > 0:
            out.append(Payment(account, stroops, credit_id=credit.id))
        elif stroops < 0:
            out.append(Payment(gateway, -stroops, source=account, credit_id=credit.id))
    return out


def _builder(source: str, seq: int, passphrase: str, base_fee: int, bounds: Bounds) -> TransactionBuilder:
    # The SDK's Account holds the *current* sequence; build() uses current + 1.
    return (TransactionBuilder(Account(source, seq - 1), passphrase, base_fee=base_fee)
            .add_time_bounds(0, bounds.max_time)
            .set_ledger_bounds(0, bounds.max_ledger))


def _built(envelope: TransactionEnvelope, seq: int, bounds: Bounds) -> BuiltTx:
    return BuiltTx(envelope.hash_hex(), envelope.to_xdr(), seq, bounds)


@functools.lru_cache(maxsize=4096)
def _account_xdr(account_id: str) -> xdr.MuxedAccount:
    """A G… address as XDR, decoded once per account (a strkey decode per payment is most of the cost)."""
    return MuxedAccount(account_id).to_xdr_object()


@functools.lru_cache(maxsize=64)
def _asset_xdr(code: str, issuer: str) -> xdr.Asset:
    return Asset(code, issuer).to_xdr_object()


@functools.lru_cache(maxsize=16)
def _network_id(passphrase: str) -> bytes:
    return hashlib.sha256(passphrase.encode()).digest()


def credit_transaction(gateway: Keypair, seq: int, payments: Sequence[Payment], asset: Asset, memo: bytes, *,
                       bounds: Bounds, base_fee: int, passphrase: str) -> BuiltTx:
    """The batch's envelope, written as XDR directly and encoded once.

    The SDK's builder encodes a transaction three times (for its hash, to sign, to serialise) and
    decodes every address again for each: ~100 ms for 100 payments on a Pi-class core, which would
    make the box, not the network, the bottleneck of a backlog. The bytes are the same as the
    builder's (a test compares them).
    """
    if not 1 <= len(payments) <= MAX_OPS:
        raise ValueError(f"a credit transaction holds 1 to {MAX_OPS} payments, not {len(payments)}")
    asset_xdr = _asset_xdr(asset.code, asset.issuer)
    ops = [xdr.Operation(_account_xdr(p.source) if p.source is not None else None,
                         xdr.OperationBody(xdr.OperationType.PAYMENT, payment_op=xdr.PaymentOp(
                             _account_xdr(p.destination), asset_xdr, xdr.Int64(p.stroops))))
           for p in payments]
    tx = xdr.Transaction(
        _account_xdr(gateway.public_key), xdr.Uint32(base_fee * len(ops)), xdr.SequenceNumber(xdr.Int64(seq)),
        xdr.Preconditions(xdr.PreconditionType.PRECOND_V2, v2=xdr.PreconditionsV2(
            xdr.TimeBounds(xdr.TimePoint(xdr.Uint64(0)), xdr.TimePoint(xdr.Uint64(bounds.max_time))),
            xdr.LedgerBounds(xdr.Uint32(0), xdr.Uint32(bounds.max_ledger)), None,
            xdr.Duration(xdr.Uint64(0)), xdr.Uint32(0), [])),
        xdr.Memo(xdr.MemoType.MEMO_HASH, hash=xdr.Hash(memo)), ops, xdr.TransactionExt(0))
    body = tx.to_xdr_bytes()
    envelope_type = xdr.EnvelopeType.ENVELOPE_TYPE_TX.value.to_bytes(4, "big")
    digest = hashlib.sha256(_network_id(passphrase) + envelope_type + body).digest()
    signature = gateway.sign_decorated(digest).to_xdr_object().to_xdr_bytes()
    # TransactionEnvelope (ENVELOPE_TYPE_TX): the type, the transaction, then an array of one signature.
    envelope = envelope_type + body + (1).to_bytes(4, "big") + signature
    return BuiltTx(digest.hex(), base64.b64encode(envelope).decode(), seq, bounds)


def account_transaction(gateway: Keypair, device: Keypair, seq: int, *, serial: str, asset: Asset,
                        platform_signer: str, starting_balance: str, bounds: Bounds, base_fee: int,
                        passphrase: str) -> BuiltTx:
    """One meter's custodial account, made in one transaction: all of it exists or none of it does."""
    dev = device.public_key
    builder = (_builder(gateway.public_key, seq, passphrase, base_fee, bounds)
               .append_create_account_op(dev, starting_balance)
               .append_change_trust_op(asset, source=dev)
               .append_manage_data_op(SERIAL_DATA_KEY, serial.encode(), source=dev)
               .append_set_options_op(signer=Signer.ed25519_public_key(platform_signer, PLATFORM_WEIGHT), source=dev)
               .append_set_options_op(signer=Signer.ed25519_public_key(gateway.public_key, GATEWAY_WEIGHT),
                                      master_weight=0, low_threshold=LOW_THRESHOLD, med_threshold=MED_THRESHOLD,
                                      high_threshold=HIGH_THRESHOLD, source=dev))
    envelope = builder.build()
    envelope.sign(gateway)
    envelope.sign(device)
    return _built(envelope, seq, bounds)


def asset_of(code: str, issuer: str) -> Asset:
    return Asset(code, issuer)


def result_codes(result_xdr: str) -> tuple[str, list[str]]:
    """(transaction code, operation codes) in Horizon's spelling, from a ``result_xdr``."""
    from cloud_sync.horizon.codes import result_codes as horizon_names

    names = horizon_names(xdr.TransactionResult.from_xdr(result_xdr))
    return str(names["transaction"]), [str(n) for n in names.get("operations", [])]
