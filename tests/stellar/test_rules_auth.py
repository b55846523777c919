"""Who may sign what, and when: signatures, thresholds, multisig, sequence numbers, bounds (pure rules)."""

from __future__ import annotations

import hashlib

from stellar_sdk import Account as SdkAccount
from stellar_sdk import Asset as SdkAsset
from stellar_sdk import Keypair, Network, Signer, TransactionBuilder

from cloud_sync.horizon.envelope import decode_envelope, frame_of, network_id
from cloud_sync.horizon.transaction import apply_transaction
from tests.stellar.conftest import PASSPHRASE, XLM, Net, names


def pay(net: Net, source: Keypair, dest: Keypair, amount: str = "1") -> TransactionBuilder:
    return net.tx(source).append_payment_op(dest.public_key, SdkAsset.native(), amount)


def test_signed_by_the_wrong_key_is_tx_bad_auth_and_changes_nothing(net: Net) -> None:
    a, b = net.fund(), net.fund()
    before = net.account(a)
    out = net.submit(pay(net, a, b).build(), Keypair.random())
    assert names(out) == ("tx_bad_auth", [])
    assert not out.included
    assert net.account(a) == before


def test_signed_for_another_network_is_tx_bad_auth(net: Net) -> None:
    a, b = net.fund(), net.fund()
    tx = net.tx(a, passphrase=Network.TESTNET_NETWORK_PASSPHRASE).append_payment_op(
        b.public_key, SdkAsset.native(), "1").build()
    assert names(net.submit(tx, a)) == ("tx_bad_auth", [])


def test_an_unused_signature_is_tx_bad_auth_extra(net: Net) -> None:
    a, b = net.fund(), net.fund()
    out = net.submit(pay(net, a, b).build(), a, Keypair.random())
    assert names(out) == ("tx_bad_auth_extra", [])
    assert not out.included


def test_an_operation_whose_source_did_not_sign_is_op_bad_auth(net: Net) -> None:
    a, b, c = net.fund(), net.fund(), net.fund()
    tx = net.tx(a).append_payment_op(c.public_key, SdkAsset.native(), "1", source=b.public_key).build()
    out = net.submit(tx, a)
    assert names(out) == ("tx_failed", ["op_bad_auth"])
    assert not out.included
    assert net.balance(b) == 100 * XLM  # not even a fee: refused before it was accepted


def test_high_threshold_set_options_needs_high_weight(net: Net) -> None:
    owner, helper = net.fund(), Keypair.random()
    # helper weight 2; thresholds low 1, medium 2, high 3; master weight 3.
    out = net.submit(net.tx(owner).append_set_options_op(
        master_weight=3, low_threshold=1, med_threshold=2, high_threshold=3,
        signer=Signer.ed25519_public_key(helper.public_key, 2)).build(), owner)
    assert names(out) == ("tx_success", ["op_success"])
    b = net.fund()
    # Medium is enough for a payment...
    assert names(net.submit(pay(net, owner, b).build(), helper)) == ("tx_success", ["op_success"])
    # ...not for changing the signers (high threshold).
    out = net.submit(net.tx(owner).append_set_options_op(
        signer=Signer.ed25519_public_key(Keypair.random().public_key, 1)).build(), helper)
    assert names(out) == ("tx_failed", ["op_bad_auth"])
    assert not out.included
    # home_domain alone is a medium-threshold change.
    out = net.submit(net.tx(owner).append_set_options_op(home_domain="example.org").build(), helper)
    assert names(out) == ("tx_success", ["op_success"])
    assert net.account(owner).home_domain == "example.org"


def test_custodial_account_moves_only_with_the_platform_signature(net: Net) -> None:
    """The seed's custodial meter account: platform signer added, master weight 0."""
    platform, meter, dest = Keypair.random(), net.fund(xlm="3"), net.fund()
    out = net.submit(net.tx(meter).append_set_options_op(
        master_weight=0, signer=Signer.ed25519_public_key(platform.public_key, 1)).build(), meter)
    assert names(out) == ("tx_success", ["op_success"])
    assert net.account(meter).master_weight == 0
    assert names(net.submit(pay(net, meter, dest).build(), meter)) == ("tx_bad_auth", [])
    # The discarded device key's signature is not just useless but extra.
    assert names(net.submit(pay(net, meter, dest).build(), platform, meter)) == ("tx_bad_auth_extra", [])
    out = net.submit(pay(net, meter, dest).build(), platform)
    assert names(out) == ("tx_success", ["op_success"])
    assert net.balance(dest) == 101 * XLM


def test_weights_add_up_across_signers(net: Net) -> None:
    owner, s1, s2 = net.fund(), Keypair.random(), Keypair.random()
    out = net.submit(net.tx(owner).append_set_options_op(signer=Signer.ed25519_public_key(s1.public_key, 1))
                     .append_set_options_op(master_weight=0, low_threshold=2, med_threshold=2, high_threshold=2,
                                            signer=Signer.ed25519_public_key(s2.public_key, 1)).build(), owner)
    assert names(out)[0] == "tx_success"
    b = net.fund()
    assert names(net.submit(pay(net, owner, b).build(), s1)) == ("tx_bad_auth", [])
    assert names(net.submit(pay(net, owner, b).build(), s1, s2))[0] == "tx_success"


def test_a_new_account_may_sign_operations_in_the_transaction_that_creates_it(net: Net) -> None:
    """Provisioning in one transaction: create, trust, data, signer — the new key signs its ops."""
    funder, device, platform, issuer = net.fund(), Keypair.random(), Keypair.random(), net.fund()
    tx = (net.tx(funder).append_create_account_op(device.public_key, "3")
          .append_change_trust_op(SdkAsset("KWH", issuer.public_key), source=device.public_key)
          .append_manage_data_op("serial", b"SN-0001", source=device.public_key)
          .append_set_options_op(master_weight=0, signer=Signer.ed25519_public_key(platform.public_key, 1),
                                 source=device.public_key).build())
    assert names(net.submit(tx, funder)) == ("tx_failed", ["op_success", "op_bad_auth", "op_success",
                                                           "op_success"])
    out = net.submit(tx, device)
    assert names(out) == ("tx_success", ["op_success"] * 4)
    acc = net.account(device)
    assert acc.master_weight == 0
    assert acc.num_sub_entries == 3
    assert acc.balance == 3 * XLM


def test_sequence_number_must_be_the_next_one(net: Net) -> None:
    a, b = net.fund(), net.fund()
    seq = net.account(a).seq_num
    assert names(net.submit(net.tx(a, seq=seq + 1).append_payment_op(
        b.public_key, SdkAsset.native(), "1").build(), a)) == ("tx_bad_seq", [])
    tx = pay(net, a, b).build()
    tx.sign(a)
    assert names(net.submit(tx))[0] == "tx_success"
    again = net.submit(tx)  # the same envelope again: its sequence number is spent
    assert names(again) == ("tx_bad_seq", [])
    assert not again.included


def test_time_bounds_are_checked_against_the_ledger_close_time(net: Net) -> None:
    a, b = net.fund(), net.fund()
    builder = TransactionBuilder(SdkAccount(a.public_key, net.account(a).seq_num), PASSPHRASE, base_fee=100)
    late = builder.append_payment_op(b.public_key, SdkAsset.native(), "1").add_time_bounds(0, net.close_time - 1)
    assert names(net.submit(late.build(), a)) == ("tx_too_late", [])
    builder = TransactionBuilder(SdkAccount(a.public_key, net.account(a).seq_num), PASSPHRASE, base_fee=100)
    early = builder.append_payment_op(b.public_key, SdkAsset.native(), "1").add_time_bounds(net.close_time + 1, 0)
    tx = early.build()
    assert names(net.submit(tx, a)) == ("tx_too_early", [])
    net.close(seconds=1)
    assert names(net.submit(tx))[0] == "tx_success"  # the same envelope, once its time has come


def test_ledger_bounds_max_is_exclusive(net: Net) -> None:
    a, b = net.fund(), net.fund()

    def bounded(lo: int, hi: int) -> TransactionBuilder:
        return TransactionBuilder(SdkAccount(a.public_key, net.account(a).seq_num), PASSPHRASE, base_fee=100) \
            .append_payment_op(b.public_key, SdkAsset.native(), "1").add_time_bounds(0, 0).set_ledger_bounds(lo, hi)

    assert names(net.submit(bounded(0, net.seq).build(), a)) == ("tx_too_late", [])
    assert names(net.submit(bounded(net.seq + 1, 0).build(), a)) == ("tx_too_early", [])
    assert names(net.submit(bounded(net.seq, net.seq + 1).build(), a))[0] == "tx_success"


def test_pre_authorised_transaction_signer_works_once(net: Net) -> None:
    owner, b = net.fund(), net.fund()
    seq = net.account(owner).seq_num
    future = TransactionBuilder(SdkAccount(owner.public_key, seq + 1), PASSPHRASE, base_fee=100) \
        .append_payment_op(b.public_key, SdkAsset.native(), "2").add_time_bounds(0, 0).build()
    net.submit(net.tx(owner).append_set_options_op(
        signer=Signer.pre_auth_tx(future.hash(), 1)).build(), owner)
    assert net.account(owner).num_sub_entries == 1
    out = net.submit(future)  # no signature at all: the pre-authorisation is the authority
    assert names(out) == ("tx_success", ["op_success"])
    assert net.account(owner).signers == []
    assert net.account(owner).num_sub_entries == 0


def test_hash_x_signer_accepts_the_preimage(net: Net) -> None:
    owner, b = net.fund(), net.fund()
    preimage = b"meter-gateway"
    net.submit(net.tx(owner).append_set_options_op(
        signer=Signer.sha256_hash(hashlib.sha256(preimage).digest(), 1)).build(), owner)
    tx = pay(net, owner, b).build()
    tx.sign_hashx(preimage)
    assert names(net.submit(tx))[0] == "tx_success"


def test_fee_bump_pays_for_someone_elses_transaction(net: Net) -> None:
    sponsor, a, b = net.fund(), net.fund(), net.fund()
    inner = pay(net, a, b).build()
    inner.sign(a)
    bump = TransactionBuilder.build_fee_bump_transaction(sponsor.public_key, 200, inner, PASSPHRASE)
    out = net.submit(bump, sponsor)
    assert names(out) == ("tx_fee_bump_inner_success", ["op_success"])
    assert out.fee_charged == 200
    assert net.balance(a) == 99 * XLM
    assert net.balance(sponsor) == 100 * XLM - 200
    # base fee × (operations + 1) is the least a fee bump may bid: after an upgrade to 300, 2 × 100 is short.
    inner = pay(net, a, b).build()
    net.base_fee = 300
    low = TransactionBuilder.build_fee_bump_transaction(sponsor.public_key, 100, inner, PASSPHRASE)
    assert names(net.submit(low, sponsor)) == ("tx_insufficient_fee", [])


def test_fee_bump_with_a_refused_inner_transaction_is_not_accepted(net: Net) -> None:
    sponsor, a, b = net.fund(), net.fund(), net.fund()
    inner = pay(net, a, b).build()
    inner.sign(Keypair.random())
    bump = TransactionBuilder.build_fee_bump_transaction(sponsor.public_key, 300, inner, PASSPHRASE)
    out = net.submit(bump, sponsor)
    assert not out.included
    assert names(out) == ("tx_fee_bump_inner_failed", [])


def test_v0_envelopes_are_read_and_hashed_as_v1() -> None:
    from stellar_sdk import TransactionEnvelope

    net = Net()
    a, b = net.fund(), net.fund()
    tx = pay(net, a, b).build()
    tx.sign(a)
    v0 = tx.transaction.to_xdr_object()
    from stellar_sdk import xdr

    env0 = xdr.TransactionEnvelope(xdr.EnvelopeType.ENVELOPE_TYPE_TX_V0, v0=xdr.TransactionV0Envelope(
        xdr.TransactionV0(v0.source_account.ed25519, v0.fee, v0.seq_num, v0.cond.time_bounds, v0.memo, v0.operations,
                          xdr.TransactionV0Ext(0)), [sig.to_xdr_object() for sig in tx.signatures]))
    frame = frame_of(decode_envelope(env0.to_xdr()), network_id(PASSPHRASE))
    assert frame.hash == TransactionEnvelope.from_xdr(tx.to_xdr(), PASSPHRASE).hash()
    out = apply_transaction(net.state, net.ledger, frame)
    assert names(out)[0] == "tx_success"
