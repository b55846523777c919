"""The unmodified stellar-sdk against the local Soroban RPC: the seed contract's flow and its refusals."""

from __future__ import annotations

import pytest
from stellar_sdk import scval

from cloud_sync.soroban_rpc.client import InvokeFailed
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


def _failure_name(p: P2P, got: object) -> str:
    """The contract error's name, as a client reads it: the diagnostic event's SCError code → SharingError."""
    from stellar_sdk import xdr

    from cloud_sync.soroban_rpc.contract import SharingError

    (event,) = got.diagnostic_events_xdr  # type: ignore[attr-defined]
    body = xdr.DiagnosticEvent.from_xdr(event).event.body.v0
    assert body is not None
    err = body.topics[1].error
    assert err is not None
    assert err.contract_code is not None
    return SharingError(err.contract_code.uint32).name


def _send(p: P2P, envelope: object) -> object:
    sent = p.d.server.send_transaction(envelope)  # type: ignore[arg-type]
    assert sent.status.value == "PENDING", sent
    return p.d.server.get_transaction(sent.hash)


def test_resend_of_the_same_envelope_never_delivers_twice(p2p: P2P) -> None:
    p = p2p
    aid = p.agreement(kwh=10)
    env = p.d.build(p.gateway, "deliver_energy", deliver_args(p, aid, 4), {p.provider.public_key: p.gateway})
    assert _send(p, env).status.value == "SUCCESS"  # type: ignore[attr-defined]
    again = p.d.server.send_transaction(env)
    assert again.status.value == "DUPLICATE"
    assert len(p.d.history(p.provider.public_key)) == 1
    assert p.net.node.contract.state.agreements[aid].delivered_kwh == 4


def test_forged_auth_entry_is_rejected(p2p: P2P) -> None:
    """The provider's entry signed by a key that is not a signer of the provider's account."""
    from stellar_sdk import Keypair

    p = p2p
    aid = p.agreement()
    env = p.d.build(p.gateway, "deliver_energy", deliver_args(p, aid, 3), {p.provider.public_key: Keypair.random()})
    got = _send(p, env)
    assert got.status.value == "FAILED"  # type: ignore[attr-defined]
    assert p.net.node.contract.state.agreements[aid].delivered_kwh == 0
    assert p.net.node.contract.state.transactions == {}


def test_forged_signature_under_the_gateways_key_is_rejected(p2p: P2P) -> None:
    """The signature map names the gateway's key (a real signer) but the signature is someone else's."""
    from stellar_sdk import Keypair

    p = p2p
    aid = p.agreement()
    env = p.d.build(p.gateway, "deliver_energy", deliver_args(p, aid, 3), {p.provider.public_key: Keypair.random()})
    creds = env.transaction.operations[0].auth[0].credentials.address
    (sig,) = scval.from_vec(creds.signature)
    sig.map.sc_map[0].val = scval.to_bytes(p.gateway.raw_public_key())  # keys sort: public_key < signature
    assert scval.from_symbol(sig.map.sc_map[0].key) == "public_key"
    env.signatures = []
    env.sign(p.gateway)
    got = _send(p, env)
    assert got.status.value == "FAILED"  # type: ignore[attr-defined]
    assert p.net.node.contract.state.transactions == {}


def test_tampered_auth_entry_is_rejected(p2p: P2P) -> None:
    """A genuine entry signed for 3 kWh, attached to an invocation claiming 9 kWh, does not authorise it."""
    from stellar_sdk import TransactionBuilder

    p = p2p
    aid = p.agreement()
    genuine = p.d.build(p.gateway, "deliver_energy", deliver_args(p, aid, 3), {p.provider.public_key: p.gateway})
    entry = genuine.transaction.operations[0].auth[0]
    account = p.d.server.load_account(p.gateway.public_key)
    tx = (TransactionBuilder(account, p.d.passphrase, base_fee=100)
          .append_invoke_contract_function_op(p.net.contract_id, "deliver_energy", deliver_args(p, aid, 9),
                                              auth=[entry]).set_timeout(300).build())
    tx = p.d.server.prepare_transaction(tx)
    tx.sign(p.gateway)
    assert _send(p, tx).status.value == "FAILED"  # type: ignore[attr-defined]
    assert p.net.node.contract.state.transactions == {}


def test_nonce_replay_is_rejected(p2p: P2P) -> None:
    """The same signed auth entry in a second, otherwise valid transaction (new sequence number)."""
    from stellar_sdk import TransactionBuilder

    p = p2p
    aid = p.agreement(kwh=10)
    first = p.d.build(p.gateway, "deliver_energy", deliver_args(p, aid, 3), {p.provider.public_key: p.gateway})
    assert _send(p, first).status.value == "SUCCESS"  # type: ignore[attr-defined]
    entry = first.transaction.operations[0].auth[0]
    account = p.d.server.load_account(p.gateway.public_key)
    tx = (TransactionBuilder(account, p.d.passphrase, base_fee=100)
          .append_invoke_contract_function_op(p.net.contract_id, "deliver_energy", deliver_args(p, aid, 3),
                                              auth=[entry]).set_timeout(300).build())
    tx = p.d.server.prepare_transaction(tx)
    tx.sign(p.gateway)
    assert _send(p, tx).status.value == "FAILED"  # type: ignore[attr-defined]
    assert len(p.d.history(p.provider.public_key)) == 1


def test_expired_signature_is_rejected(p2p: P2P) -> None:
    p = p2p
    aid = p.agreement(deadline_s=30 * 86_400)
    env = p.d.build(p.gateway, "deliver_energy", deliver_args(p, aid, 3), {p.provider.public_key: p.gateway})
    p.clock.advance(200 * 5)  # 200 ledgers: past the entry's signatureExpirationLedger (latest + 100)
    assert _send(p, env).status.value == "FAILED"  # type: ignore[attr-defined]
    assert p.net.node.contract.state.transactions == {}


def test_expired_agreement_fails_with_the_contract_error(p2p: P2P) -> None:
    p = p2p
    aid = p.agreement(deadline_s=60)
    env = p.d.build(p.gateway, "deliver_energy", deliver_args(p, aid, 3), {p.provider.public_key: p.gateway})
    p.clock.advance(120)
    got = _send(p, env)
    assert got.status.value == "FAILED"  # type: ignore[attr-defined]
    assert _failure_name(p, got) == "DeliveryDeadlinePassed"
    assert p.d.agreement(aid)["status"] == "Active"
    p.d.invoke(p.d.admin, "expire_agreement", [scval.to_uint64(aid)])
    assert p.d.agreement(aid)["status"] == "Expired"


def test_over_delivery_is_rejected(p2p: P2P) -> None:
    p = p2p
    aid = p.agreement(kwh=10)
    p.d.invoke(p.gateway, "deliver_energy", deliver_args(p, aid, 8), {p.provider.public_key: p.gateway})
    with pytest.raises(InvokeFailed, match="ExcessiveDelivery"):
        p.d.invoke(p.gateway, "deliver_energy", deliver_args(p, aid, 3), {p.provider.public_key: p.gateway})
    assert p.net.node.contract.state.agreements[aid].delivered_kwh == 8


def test_unregistered_prosumer_is_rejected(p2p: P2P) -> None:
    p = p2p
    stranger = p.d.account()
    with pytest.raises(InvokeFailed, match="ProsumerNotRegistered"):
        p.d.create_agreement(stranger.public_key, p.consumer.public_key, 5, 10, int(p.clock.now()) + 600, stranger)
    assert p.net.node.contract.state.agreements == {}


def test_master_key_of_weight_zero_cannot_authorise(p2p: P2P) -> None:
    """The custodial account's own key has weight 0 (provisioning): only its signers' weights count."""
    p = p2p
    aid = p.agreement()
    env = p.d.build(p.gateway, "deliver_energy", deliver_args(p, aid, 3), {p.provider.public_key: p.provider})
    assert _send(p, env).status.value == "FAILED"  # type: ignore[attr-defined]
    assert p.net.node.contract.state.transactions == {}


def test_json_rpc_errors(p2p: P2P) -> None:
    import httpx

    url = p2p.net.rpc_url

    def rpc(body: object) -> dict:
        doc: dict = httpx.post(url, json=body).json()
        return doc

    assert rpc({"jsonrpc": "2.0", "id": 1, "method": "nope"})["error"]["code"] == -32601
    assert rpc({"jsonrpc": "2.0", "id": 2, "method": "sendTransaction", "params": {}})["error"]["code"] == -32602
    bad = rpc({"jsonrpc": "2.0", "id": 3, "method": "sendTransaction", "params": {"transaction": "AAAA"}})
    assert bad["error"]["code"] == -32602
    assert rpc({"jsonrpc": "1.0", "id": 4, "method": "getHealth"})["error"]["code"] == -32600
    missing = rpc({"jsonrpc": "2.0", "id": 5, "method": "getTransaction", "params": {"hash": "00" * 32}})
    assert missing["result"]["status"] == "NOT_FOUND"


def test_signer_below_the_medium_threshold_cannot_authorise(p2p: P2P) -> None:
    """A provider whose medium threshold (2) is above the gateway's weight (1): the gateway alone is refused."""
    from stellar_sdk import Account, TransactionBuilder

    p = p2p
    owner = p.d.account()
    acc = p.d.ledger.account(owner.public_key)
    assert acc is not None
    tx = (TransactionBuilder(Account(owner.public_key, acc.account.seq_num), p.d.passphrase, base_fee=100)
          .append_ed25519_public_key_signer(p.gateway.public_key, 1)
          .append_set_options_op(master_weight=2, low_threshold=1, med_threshold=2, high_threshold=2)
          .set_timeout(0).build())
    tx.sign(owner)
    assert p.d.ledger.submit(tx.to_xdr()).successful
    p.d.setup([owner.public_key], {owner.public_key: owner})
    aid = p.d.create_agreement(owner.public_key, p.consumer.public_key, 5, 1, int(p.clock.now()) + 600, owner)
    args = [scval.to_uint64(aid), scval.to_uint64(1), scval.to_uint64(1), scval.to_address(owner.public_key)]
    env = p.d.build(p.gateway, "deliver_energy", args, {owner.public_key: p.gateway})
    assert _send(p, env).status.value == "FAILED"  # type: ignore[attr-defined]
    assert p.net.node.contract.state.transactions == {}
