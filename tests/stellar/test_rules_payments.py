"""The network's money rules, applied by the pure function (no HTTP): payments, trustlines, issuers, fees."""

from __future__ import annotations

from stellar_sdk import Asset as SdkAsset
from stellar_sdk import AuthorizationFlag, Keypair, MuxedAccount, TrustLineFlags

from cloud_sync.horizon.entries import AUTH_REQUIRED, AUTH_REVOCABLE, Asset, min_balance
from tests.stellar.conftest import XLM, Net, names


def kwh(issuer: Keypair) -> tuple[Asset, SdkAsset]:
    return Asset("KWH", issuer.public_key), SdkAsset("KWH", issuer.public_key)


def test_native_payment_moves_exact_stroops_and_charges_the_fee(net: Net) -> None:
    a, b = net.fund(xlm="100"), net.fund(xlm="10")
    out = net.submit(net.tx(a).append_payment_op(b.public_key, SdkAsset.native(), "12.3456789").build(), a)
    assert names(out) == ("tx_success", ["op_success"])
    assert out.fee_charged == 100
    assert net.balance(a) == 100 * XLM - 123_456_789 - 100
    assert net.balance(b) == 10 * XLM + 123_456_789


def test_payment_beyond_what_is_above_the_reserve_is_underfunded_and_still_costs_the_fee(net: Net) -> None:
    a, b = net.fund(xlm="10"), net.fund()
    # 10 XLM balance, 1 XLM minimum (2 × 0.5): 9 XLM minus nothing is spendable; 9.5 is not.
    out = net.submit(net.tx(a).append_payment_op(b.public_key, SdkAsset.native(), "9.5").build(), a)
    assert names(out) == ("tx_failed", ["op_underfunded"])
    assert out.included
    assert out.fee_charged == 100
    assert net.balance(a) == 10 * XLM - 100
    # The sequence number was consumed: the next transaction builds on it and succeeds.
    again = net.submit(net.tx(a).append_payment_op(b.public_key, SdkAsset.native(), "1").build(), a)
    assert names(again) == ("tx_success", ["op_success"])


def test_a_failing_operation_undoes_the_ones_before_it(net: Net) -> None:
    a, b, c = net.fund(xlm="50"), net.fund(), net.fund()
    out = net.submit(net.tx(a).append_payment_op(b.public_key, SdkAsset.native(), "5")
                     .append_payment_op(c.public_key, SdkAsset.native(), "500").build(), a)
    assert names(out) == ("tx_failed", ["op_success", "op_underfunded"])
    assert net.balance(b) == 100 * XLM
    assert net.balance(a) == 50 * XLM - 200


def test_payment_to_a_missing_account_is_op_no_destination(net: Net) -> None:
    a = net.fund()
    out = net.submit(net.tx(a).append_payment_op(Keypair.random().public_key, SdkAsset.native(), "1").build(), a)
    assert names(out) == ("tx_failed", ["op_no_destination"])


def test_credit_payment_needs_the_destination_trustline_checked_before_the_source_balance(net: Net) -> None:
    issuer, a, b = net.fund(), net.fund(), net.fund()
    asset, sdk = kwh(issuer)
    assert names(net.trust(a, asset)) == ("tx_success", ["op_success"])
    # a holds nothing, b has no trustline: stellar-core credits the destination first → op_no_trust.
    out = net.submit(net.tx(a).append_payment_op(b.public_key, sdk, "5").build(), a)
    assert names(out) == ("tx_failed", ["op_no_trust"])
    out = net.submit(net.tx(b).append_payment_op(a.public_key, sdk, "5").build(), b)
    assert names(out) == ("tx_failed", ["op_src_no_trust"])
    net.trust(b, asset)
    out = net.submit(net.tx(a).append_payment_op(b.public_key, sdk, "5").build(), a)
    assert names(out) == ("tx_failed", ["op_underfunded"])


def test_the_issuer_mints_out_of_nothing_and_what_returns_to_it_is_burned(net: Net) -> None:
    issuer, holder = net.fund(), net.fund()
    asset, sdk = kwh(issuer)
    net.trust(holder, asset)
    before = net.balance(issuer)
    out = net.submit(net.tx(issuer).append_payment_op(holder.public_key, sdk, "1000").build(), issuer)
    assert names(out) == ("tx_success", ["op_success"])
    assert net.line(holder, asset).balance == 1000 * XLM
    assert net.balance(issuer) == before - 100  # only the fee: minting costs the issuer nothing
    assert net.line(issuer, asset) is None
    out = net.submit(net.tx(holder).append_payment_op(issuer.public_key, sdk, "400").build(), holder)
    assert names(out) == ("tx_success", ["op_success"])
    assert net.line(holder, asset).balance == 600 * XLM


def test_trustline_limit_bounds_what_can_arrive(net: Net) -> None:
    issuer, holder = net.fund(), net.fund()
    asset, sdk = kwh(issuer)
    net.trust(holder, asset, limit="10")
    out = net.submit(net.tx(issuer).append_payment_op(holder.public_key, sdk, "10.0000001").build(), issuer)
    assert names(out) == ("tx_failed", ["op_line_full"])
    out = net.submit(net.tx(issuer).append_payment_op(holder.public_key, sdk, "10").build(), issuer)
    assert names(out) == ("tx_success", ["op_success"])
    out = net.submit(net.tx(issuer).append_payment_op(holder.public_key, sdk, "0.0000001").build(), issuer)
    assert names(out) == ("tx_failed", ["op_line_full"])
    # The limit cannot drop below the balance, nor can the line be removed while it holds anything.
    assert names(net.trust(holder, asset, limit="9")) == ("tx_failed", ["op_invalid_limit"])
    assert names(net.trust(holder, asset, limit="0")) == ("tx_failed", ["op_invalid_limit"])


def test_trustline_costs_a_reserve_and_removing_it_returns_the_reserve(net: Net) -> None:
    issuer = net.fund()
    asset, _ = kwh(issuer)
    tight = net.fund(xlm="1.00002")  # 1 XLM minimum + two fees: no room for a 0.5 XLM subentry
    assert names(net.trust(tight, asset)) == ("tx_failed", ["op_low_reserve"])
    holder = net.fund(xlm="3")
    assert names(net.trust(holder, asset)) == ("tx_success", ["op_success"])
    acc = net.account(holder)
    assert acc.num_sub_entries == 1
    assert min_balance(acc, net.base_reserve) == 15 * XLM // 10
    assert names(net.trust(holder, asset, limit="0")) == ("tx_success", ["op_success"])
    assert net.account(holder).num_sub_entries == 0
    assert net.line(holder, asset) is None


def test_change_trust_refuses_the_issuer_itself_and_unknown_issuers(net: Net) -> None:
    issuer, holder = net.fund(), net.fund()
    asset, _ = kwh(issuer)
    out = net.trust(issuer, asset)
    assert names(out) == ("tx_failed", ["op_malformed"])
    assert not out.included
    assert names(net.trust(holder, Asset("KWH", Keypair.random().public_key))) == ("tx_failed", ["op_no_issuer"])


def test_an_auth_required_issuer_must_authorise_holders_first(net: Net) -> None:
    issuer, holder = net.fund(), net.fund()
    asset, sdk = kwh(issuer)
    flags = AuthorizationFlag(AUTH_REQUIRED | AUTH_REVOCABLE)
    net.submit(net.tx(issuer).append_set_options_op(set_flags=flags).build(), issuer)
    net.trust(holder, asset)
    assert not net.line(holder, asset).authorized
    out = net.submit(net.tx(issuer).append_payment_op(holder.public_key, sdk, "1").build(), issuer)
    assert names(out) == ("tx_failed", ["op_not_authorized"])
    out = net.submit(net.tx(issuer).append_set_trust_line_flags_op(holder.public_key, sdk,
                                                                   set_flags=TrustLineFlags.AUTHORIZED_FLAG).build(),
                     issuer)
    assert names(out) == ("tx_success", ["op_success"])
    out = net.submit(net.tx(issuer).append_payment_op(holder.public_key, sdk, "1").build(), issuer)
    assert names(out) == ("tx_success", ["op_success"])


def test_payment_to_a_muxed_address_credits_its_account(net: Net) -> None:
    a, b = net.fund(), net.fund()
    muxed = MuxedAccount(b.public_key, 42)
    out = net.submit(net.tx(a).append_payment_op(muxed.account_muxed, SdkAsset.native(), "1").build(), a)
    assert names(out) == ("tx_success", ["op_success"])
    assert net.balance(b) == 101 * XLM


def test_fee_is_base_fee_times_operations_whatever_the_bid(net: Net) -> None:
    a, b = net.fund(), net.fund()
    tx = net.tx(a, fee=5000).append_payment_op(b.public_key, SdkAsset.native(), "1") \
        .append_payment_op(b.public_key, SdkAsset.native(), "1").build()
    out = net.submit(tx, a)
    assert names(out)[0] == "tx_success"
    assert out.fee_charged == 200
    assert net.fee_pool == 200 + 100 * 2  # plus the two create_account fees of fund()


def test_fee_bid_below_base_fee_times_operations_is_refused_without_charge(net: Net) -> None:
    a, b = net.fund(), net.fund()
    net.base_fee = 200  # an upgrade raised the base fee
    before = net.account(a)
    out = net.submit(net.tx(a, fee=150).append_payment_op(b.public_key, SdkAsset.native(), "1").build(), a)
    assert names(out) == ("tx_insufficient_fee", [])
    assert not out.included
    assert net.account(a) == before


def test_a_source_that_cannot_pay_the_fee_bid_is_refused(net: Net) -> None:
    a, b = net.fund(xlm="1.00001"), net.fund()
    out = net.submit(net.tx(a, fee=2000).append_payment_op(b.public_key, SdkAsset.native(), "0.0000001").build(), a)
    assert names(out) == ("tx_insufficient_balance", [])
    assert not out.included
