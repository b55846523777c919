"""The unmodified stellar-sdk against the local Soroban RPC: the seed contract's flow and its refusals."""

from __future__ import annotations

from stellar_sdk import scval

from tests.soroban.conftest import P2P


def deliver_args(p: P2P, agreement_id: int, kwh: int, reading: int = 12_345) -> list:
    return [scval.to_uint64(agreement_id), scval.to_uint64(kwh), scval.to_uint64(reading),
            scval.to_address(p.provider.public_key)]


def test_agreement_delivery_settlement(p2p: P2P) -> None:
    p = p2p
    aid = p.agreement(kwh=10, price=50)
    assert p.d.agreement(aid)["status"] == "Active"
    tx_id = scval.from_uint64(p.d.invoke(p.gateway, "deliver_energy", deliver_args(p, aid, 10),
                                         {p.provider.public_key: p.gateway}))
    assert tx_id == 1
    assert p.d.agreement(aid)["status"] == "Delivered"
    p.d.mint(p.consumer.public_key, 500)
    p.d.invoke(p.consumer, "settle_payment", [scval.to_uint64(tx_id), scval.to_address(p.consumer.public_key)])
    assert p.d.agreement(aid)["status"] == "Settled"
    (h,) = p.d.history(p.provider.public_key)
    assert h["status"] == "Settled"
    assert h["payment_amount"] == 500
    assert h["meter_reading"] == 12_345
    state = p.net.node.contract.state
    assert state.balances[p.provider.public_key] == 500
    assert state.balances[p.consumer.public_key] == 0
