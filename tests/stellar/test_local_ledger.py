"""The local network below HTTP: ledgers on the injected clock, idempotent resubmission, persistence."""

from __future__ import annotations

from pathlib import Path

import pytest
from stellar_sdk import Account as SdkAccount
from stellar_sdk import Asset as SdkAsset
from stellar_sdk import Keypair, TransactionBuilder

from cloud_sync.horizon.envelope import MalformedEnvelope
from cloud_sync.horizon.errors import FriendbotRefused, LocalLedgerError
from cloud_sync.horizon.ledger import LocalLedger
from gateway.clock import ManualClock
from tests.stellar.conftest import PASSPHRASE, T0, XLM


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=float(T0))


@pytest.fixture
def ledger(tmp_path: Path, clock: ManualClock) -> LocalLedger:
    led = LocalLedger(tmp_path / "ledger", clock)
    yield led
    led.close()


def funded(ledger: LocalLedger) -> Keypair:
    kp = Keypair.random()
    assert ledger.friendbot(kp.public_key).successful
    return kp


def payment(ledger: LocalLedger, src: Keypair, dst: Keypair, amount: str = "1", *,
            max_ledger: int = 0) -> str:
    acc = ledger.account(src.public_key)
    assert acc is not None
    builder = TransactionBuilder(SdkAccount(src.public_key, acc.account.seq_num), PASSPHRASE, base_fee=100) \
        .append_payment_op(dst.public_key, SdkAsset.native(), amount).add_time_bounds(0, 0)
    if max_ledger:
        builder.set_ledger_bounds(0, max_ledger)
    tx = builder.build()
    tx.sign(src)
    return tx.to_xdr()


def test_ledgers_close_on_the_injected_clock(ledger: LocalLedger, clock: ManualClock) -> None:
    assert ledger.latest_closed().sequence == 1
    assert ledger.open_ledger().seq == 2
    assert ledger.open_ledger().close_time == T0 + 5
    clock.advance(4.9)
    assert ledger.latest_closed().sequence == 1
    clock.advance(0.1)
    assert ledger.latest_closed().sequence == 2
    assert ledger.latest_closed().closed_at == T0 + 5
    clock.advance(3600)
    assert ledger.latest_closed().sequence == 2 + 720


def test_a_transaction_lands_in_the_open_ledger_and_is_final_at_once(ledger: LocalLedger, clock: ManualClock) -> None:
    a, b = funded(ledger), funded(ledger)
    sub = ledger.submit(payment(ledger, a, b))
    assert sub.included
    assert sub.successful
    assert sub.record["ledger"] == ledger.open_ledger().seq
    assert ledger.transaction(sub.hash)["successful"] is True
    info = ledger.ledger_info(sub.record["ledger"])
    assert info.row.successful_tx == 3
    assert info.row.fee_pool == 300


def test_the_same_envelope_again_returns_its_original_result_and_moves_nothing(ledger: LocalLedger,
                                                                               clock: ManualClock) -> None:
    a, b = funded(ledger), funded(ledger)
    env = payment(ledger, a, b, "7")
    first = ledger.submit(env)
    clock.advance(60)
    again = ledger.submit(env)
    assert again.replayed
    assert again.hash == first.hash
    assert again.result_xdr == first.result_xdr
    assert again.record["ledger"] == first.record["ledger"]
    assert ledger.account(b.public_key).account.balance == 10_007 * XLM


def test_a_failed_included_transaction_is_replayed_as_failed(ledger: LocalLedger) -> None:
    a, b = funded(ledger), funded(ledger)
    env = payment(ledger, a, b, "20000")
    first = ledger.submit(env)
    assert first.included
    assert not first.successful
    again = ledger.submit(env)
    assert again.replayed
    assert not again.successful
    assert again.result_xdr == first.result_xdr


def test_a_ledger_bound_expires_as_the_clock_closes_ledgers(ledger: LocalLedger, clock: ManualClock) -> None:
    a, b = funded(ledger), funded(ledger)
    latest = ledger.latest_closed().sequence
    env = payment(ledger, a, b, max_ledger=latest + 3)  # may land in latest+1 or latest+2
    clock.advance(10)  # two ledgers close: the open one is now latest + 3
    sub = ledger.submit(env)
    assert not sub.included
    assert ledger.transaction(sub.hash) is None
    from stellar_sdk import xdr

    assert xdr.TransactionResult.from_xdr(sub.result_xdr).result.code == xdr.TransactionResultCode.txTOO_LATE


def test_state_and_history_survive_reopening(tmp_path: Path, clock: ManualClock) -> None:
    led = LocalLedger(tmp_path / "ledger", clock)
    a, b = funded(led), funded(led)
    sub = led.submit(payment(led, a, b, "3"))
    led.close()
    clock.advance(30)
    again = LocalLedger(tmp_path / "ledger", clock)
    try:
        assert again.account(b.public_key).account.balance == 10_003 * XLM
        assert again.transaction(sub.hash)["ledger"] == sub.record["ledger"]
        assert again.submit(sub.envelope_xdr).replayed
        assert again.network_passphrase == PASSPHRASE
    finally:
        again.close()


def test_the_ledger_sequence_never_goes_back_with_the_clock(tmp_path: Path, clock: ManualClock) -> None:
    led = LocalLedger(tmp_path / "ledger", clock)
    clock.advance(1000)
    a = funded(led)
    landed = led.account(a.public_key).account.last_modified_ledger
    assert landed == 202
    led.close()
    back = LocalLedger(tmp_path / "ledger", ManualClock(start=float(T0)))  # restarted with an earlier clock
    try:
        assert back.open_ledger().seq == landed
        b = funded(back)
        assert back.account(b.public_key).account.last_modified_ledger == landed
    finally:
        back.close()


def test_another_network_in_the_same_data_dir_is_refused(tmp_path: Path, clock: ManualClock) -> None:
    LocalLedger(tmp_path / "ledger", clock).close()
    with pytest.raises(LocalLedgerError, match="another --data-dir"):
        LocalLedger(tmp_path / "ledger", clock, network_passphrase="Test SDF Network ; September 2015")


def test_root_account_is_derived_from_the_passphrase(ledger: LocalLedger) -> None:
    import hashlib

    expected = Keypair.from_raw_ed25519_seed(hashlib.sha256(PASSPHRASE.encode()).digest()).public_key
    assert ledger.root.public_key == expected
    assert ledger.account(expected) is not None


def test_friendbot_funds_once(ledger: LocalLedger) -> None:
    kp = funded(ledger)
    assert ledger.account(kp.public_key).account.balance == 10_000 * XLM
    with pytest.raises(FriendbotRefused, match="already funded"):
        ledger.friendbot(kp.public_key)
    with pytest.raises(FriendbotRefused, match="not a valid"):
        ledger.friendbot("GNOPE")


def test_upgrade_raises_the_base_fee_from_the_open_ledger(ledger: LocalLedger) -> None:
    a, b = funded(ledger), funded(ledger)
    ledger.upgrade(base_fee=250)
    sub = ledger.submit(payment(ledger, a, b))
    from stellar_sdk import xdr

    assert xdr.TransactionResult.from_xdr(sub.result_xdr).result.code == xdr.TransactionResultCode.txINSUFFICIENT_FEE


def test_garbage_is_malformed(ledger: LocalLedger) -> None:
    with pytest.raises(MalformedEnvelope):
        ledger.submit("not base64!")
    with pytest.raises(MalformedEnvelope):
        ledger.submit("AAAA")
