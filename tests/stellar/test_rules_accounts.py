"""Accounts, reserves and sponsorship, data entries, unsupported operations (pure rules)."""

from __future__ import annotations

from stellar_sdk import Asset as SdkAsset
from stellar_sdk import Keypair

from cloud_sync.horizon.entries import Asset, min_balance
from tests.stellar.conftest import XLM, Net, names


def test_create_account_refusals(net: Net) -> None:
    a = net.fund(xlm="20")
    fresh = Keypair.random().public_key
    out = net.submit(net.tx(a).append_create_account_op(fresh, "0.9999999").build(), a)
    assert names(out) == ("tx_failed", ["op_low_reserve"])  # below 2 × base reserve
    out = net.submit(net.tx(a).append_create_account_op(fresh, "19.5").build(), a)
    assert names(out) == ("tx_failed", ["op_underfunded"])  # a keeps its own 1 XLM reserve
    out = net.submit(net.tx(a).append_create_account_op(net.root.public_key, "1").build(), a)
    assert names(out) == ("tx_failed", ["op_already_exists"])
    out = net.submit(net.tx(a).append_create_account_op(a.public_key, "1").build(), a)
    assert names(out) == ("tx_failed", ["op_malformed"])
    assert not out.included
    out = net.submit(net.tx(a).append_create_account_op(fresh, "1").build(), a)
    assert names(out) == ("tx_success", ["op_success"])
    created = net.account(fresh)
    assert created.balance == XLM
    assert created.seq_num == net.seq << 32


def test_manage_data_stores_updates_and_removes_with_its_reserve(net: Net) -> None:
    a = net.fund(xlm="3")
    assert names(net.submit(net.tx(a).append_manage_data_op("serial", b"SN-1").build(), a))[0] == "tx_success"
    assert net.account(a).num_sub_entries == 1
    net.submit(net.tx(a).append_manage_data_op("serial", b"SN-2").build(), a)
    assert net.state.get_entry(("data", a.public_key, "serial")).value == b"SN-2"
    assert net.account(a).num_sub_entries == 1
    assert names(net.submit(net.tx(a).append_manage_data_op("other", None).build(), a)) == \
        ("tx_failed", ["op_data_name_not_found"])
    net.submit(net.tx(a).append_manage_data_op("serial", None).build(), a)
    assert net.state.get_entry(("data", a.public_key, "serial")) is None
    assert net.account(a).num_sub_entries == 0
    tight = net.fund(xlm="1.00001")
    assert names(net.submit(net.tx(tight).append_manage_data_op("x", b"1").build(), tight)) == \
        ("tx_failed", ["op_low_reserve"])


def test_sponsored_account_starts_with_nothing_and_its_sponsor_carries_the_reserves(net: Net) -> None:
    sponsor, issuer, newbie = net.fund(xlm="10"), net.fund(), Keypair.random()
    tx = (net.tx(sponsor).append_begin_sponsoring_future_reserves_op(newbie.public_key)
          .append_create_account_op(newbie.public_key, "0")
          .append_change_trust_op(SdkAsset("KWH", issuer.public_key), source=newbie.public_key)
          .append_end_sponsoring_future_reserves_op(source=newbie.public_key).build())
    out = net.submit(tx, sponsor, newbie)
    assert names(out) == ("tx_success", ["op_success"] * 4)
    s, n = net.account(sponsor), net.account(newbie)
    assert (s.num_sponsoring, n.num_sponsored, n.num_sub_entries, n.sponsor) == (3, 3, 1, sponsor.public_key)
    assert min_balance(n, net.base_reserve) == 0
    assert min_balance(s, net.base_reserve) == 5 * net.base_reserve
    assert net.line(newbie, Asset("KWH", issuer.public_key)).sponsor == sponsor.public_key


def test_a_sponsorship_left_open_fails_the_transaction(net: Net) -> None:
    sponsor, newbie = net.fund(), Keypair.random()
    tx = (net.tx(sponsor).append_begin_sponsoring_future_reserves_op(newbie.public_key)
          .append_create_account_op(newbie.public_key, "0").build())
    out = net.submit(tx, sponsor)
    assert names(out) == ("tx_bad_sponsorship", [])
    assert out.included
    assert out.fee_charged == 200
    assert net.account(newbie) is None
    out = net.submit(net.tx(sponsor).append_end_sponsoring_future_reserves_op().build(), sponsor)
    assert names(out) == ("tx_failed", ["op_not_sponsored"])


def test_a_sponsor_without_the_reserve_cannot_sponsor(net: Net) -> None:
    sponsor, newbie = net.fund(xlm="1.5"), Keypair.random()
    tx = (net.tx(sponsor).append_begin_sponsoring_future_reserves_op(newbie.public_key)
          .append_create_account_op(newbie.public_key, "0")
          .append_end_sponsoring_future_reserves_op(source=newbie.public_key).build())
    out = net.submit(tx, sponsor, newbie)
    assert names(out) == ("tx_failed", ["op_success", "op_low_reserve", "op_no_source_account"])


def test_bump_sequence_moves_the_sequence_forward_only(net: Net) -> None:
    a = net.fund()
    seq = net.account(a).seq_num
    net.submit(net.tx(a).append_bump_sequence_op(seq + 100).build(), a)
    assert net.account(a).seq_num == seq + 100
    net.submit(net.tx(a).append_bump_sequence_op(5).build(), a)
    assert net.account(a).seq_num == seq + 101


def test_operations_this_ledger_does_not_model_are_refused_unpaid(net: Net) -> None:
    a, issuer = net.fund(), net.fund()
    before = net.account(a)
    tx = net.tx(a).append_manage_sell_offer_op(SdkAsset.native(), SdkAsset("KWH", issuer.public_key), "1", "1")
    out = net.submit(tx.build(), a)
    assert names(out) == ("tx_failed", ["op_not_supported"])
    assert not out.included
    assert net.account(a) == before


def test_too_many_signers(net: Net) -> None:
    from stellar_sdk import Signer

    a = net.fund(xlm="50")
    for _ in range(20):
        out = net.submit(net.tx(a).append_set_options_op(
            signer=Signer.ed25519_public_key(Keypair.random().public_key, 1)).build(), a)
        assert names(out)[0] == "tx_success"
    out = net.submit(net.tx(a).append_set_options_op(
        signer=Signer.ed25519_public_key(Keypair.random().public_key, 1)).build(), a)
    assert names(out) == ("tx_failed", ["op_too_many_signers"])
    assert net.account(a).num_sub_entries == 20
