"""Transaction building (pure): exact amounts, the batch memo, and envelopes byte-identical to the SDK's builder."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from stellar_sdk import Account, Asset, Keypair, Network, TransactionBuilder, TransactionEnvelope

from cloud_sync.stellar.amounts import AmountError, format_amount, rate_stroops, to_stroops
from cloud_sync.stellar.txbuild import (
    MAX_OPS,
    Bounds,
    CreditLine,
    NetworkView,
    batch_memo,
    credit_payments,
    credit_transaction,
)

GATEWAY = Keypair.random()
METERS = {f"m{i}": Keypair.random().public_key for i in range(5)}
ASSET = Asset("KWH", Keypair.random().public_key)
PASSPHRASE = Network.TESTNET_NETWORK_PASSPHRASE


@given(wh=st.integers(-10**9, 10**9), rate=st.decimals(min_value="0.0000001", max_value="1000", places=7))
def test_wh_times_rate_is_exact_in_stroops(wh: int, rate: object) -> None:
    per_wh = rate_stroops(str(rate))
    assert wh * per_wh == to_stroops(str(rate * wh))  # type: ignore[operator]
    assert to_stroops(format_amount(wh * per_wh)) == wh * per_wh


def test_amounts_refuse_what_stellar_cannot_hold() -> None:
    for bad in ("0.00000001", "abc", "NaN", "1e30"):
        with pytest.raises(AmountError):
            to_stroops(bad)
    assert format_amount(-15) == "-0.0000015"


@given(st.lists(st.tuples(st.sampled_from(sorted(METERS)), st.integers(-500, 5000)), min_size=1, max_size=MAX_OPS))
def test_the_envelope_is_the_sdk_builders_byte_for_byte(lines: list[tuple[str, int]]) -> None:
    credits = [CreditLine(i + 1, m, wh, hashlib.sha256(str(i).encode()).hexdigest()) for i, (m, wh) in enumerate(lines)]
    payments = credit_payments(credits, METERS, GATEWAY.public_key, rate_stroops("0.001"))
    if not payments:
        return
    memo = batch_memo(c.hash for c in credits)
    bounds = Bounds.after(NetworkView(1000, 1_767_225_600, 100), window_ledgers=10, timeout_s=300)
    built = credit_transaction(GATEWAY, 77, payments, ASSET, memo, bounds=bounds, base_fee=100, passphrase=PASSPHRASE)
    builder = (TransactionBuilder(Account(GATEWAY.public_key, 76), PASSPHRASE, base_fee=100)
               .add_time_bounds(0, bounds.max_time).set_ledger_bounds(0, bounds.max_ledger).add_hash_memo(memo))
    for p in payments:
        builder.append_payment_op(p.destination, ASSET, format_amount(p.stroops), source=p.source)
    reference = builder.build()
    reference.sign(GATEWAY)
    assert built.envelope == reference.to_xdr()
    assert built.hash == reference.hash_hex()
    env = TransactionEnvelope.from_xdr(built.envelope, PASSPHRASE)
    assert len(env.transaction.operations) == len(payments) == sum(1 for c in credits if c.wh)
    refunds = [op for op in env.transaction.operations if op.source is not None]
    assert all(op.destination.account_id == GATEWAY.public_key for op in refunds), "negative: back to the gateway"


def test_the_memo_ties_a_transaction_to_its_credits() -> None:
    a, b = "ab" * 32, "cd" * 32
    assert batch_memo([a, b]) == hashlib.sha256(bytes.fromhex(a) + bytes.fromhex(b)).digest()
    assert batch_memo([a, b]) != batch_memo([b, a])


def test_bounds_are_final_once_the_network_is_past_them() -> None:
    bounds = Bounds(max_ledger=110, max_time=2000)
    assert not bounds.passed(NetworkView(108, 1990, 100))
    assert bounds.passed(NetworkView(109, 1990, 100)), "the next ledger (110) can no longer include it"
    assert bounds.passed(NetworkView(100, 2000, 100)), "the next ledger closes after max_time"
