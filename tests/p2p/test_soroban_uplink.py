"""The Soroban uplink against the real stand-in over HTTP: one agreement, one delivery, whatever fails."""

from __future__ import annotations

import pytest
from stellar_sdk import Account, TransactionBuilder, xdr
from stellar_sdk import Keypair as SdkKeypair
from stellar_sdk.auth import authorize_entry
from stellar_sdk.soroban_server_async import SorobanServerAsync

from cloud_sync.horizon_http import ThreadedRequestsClient
from cloud_sync.soroban.errors import CONTRACT_ERRORS
from cloud_sync.soroban.invocation import FUNCTION, Delivery, arguments, build
from cloud_sync.soroban.uplink import SorobanUplink
from cloud_sync.soroban_rpc.contract import SharingError
from cloud_sync.soroban_rpc.rpc import FaultRule
from gateway.ledger.store import Ledger
from gateway.p2p.store import DEAD, DELIVERED, TX_APPLIED, TX_FAILED, TX_VOID, P2PStore
from tests.p2p.conftest import Net, insert

DRAIN_S = 60.0


def uplink(net: Net, ledger: Ledger) -> SorobanUplink:
    return SorobanUplink(net.cfg(backoff_max_s=5), ledger, net.clock, net.sdk_gateway)


async def test_contract_error_names_match_the_deployed_contract() -> None:
    assert {e.value: e.name for e in SharingError} == CONTRACT_ERRORS


async def test_delivered_once_with_the_contracts_transaction_id(net: Net, ledger: Ledger) -> None:
    a = net.agreement(kwh=10)
    store = P2PStore(ledger)
    await insert(store, net, a, 10, reading=4_321_000)
    up = uplink(net, ledger)
    await up.drain(DRAIN_S)
    await up.drain(DRAIN_S)  # nothing left to do: no second envelope
    record = await store.record(a.terms.agreement_id)
    assert record is not None
    assert record.state == DELIVERED
    history = net.deliveries()
    assert [(t["agreement_id"], t["energy_delivered_kwh"], t["meter_reading"]) for t in history] == [
        (a.terms.agreement_id, 10, 4_321_000)]
    assert record.contract_tx_id == history[0]["transaction_id"]
    assert [e.state for e in await store.envelopes(a.terms.agreement_id)] == [TX_APPLIED]
    assert net.d.agreement(a.terms.agreement_id)["status"] == "Delivered"


async def test_timeouts_after_the_contract_applied(net: Net, ledger: Ledger) -> None:
    """(a) sendTransaction applies, then the client gets a 504; getTransaction also times out once."""
    a = net.agreement(kwh=10)
    store = P2PStore(ledger)
    await insert(store, net, a, 10)
    net.faults.add(FaultRule("sendTransaction", ("timeout_after",)))
    net.faults.add(FaultRule("getTransaction", ("ok", "ok", "timeout_after", "503")))
    await uplink(net, ledger).drain(DRAIN_S)
    assert net.faults.delivered["sendTransaction:timeout_after"] == 1
    assert net.faults.delivered["getTransaction:timeout_after"] == 1
    assert [t["energy_delivered_kwh"] for t in net.deliveries()] == [10]
    record = await store.record(a.terms.agreement_id)
    assert record is not None
    assert record.state == DELIVERED
    assert len(await store.envelopes(a.terms.agreement_id)) == 1  # the same bytes, never a second envelope


async def test_try_again_later_is_retried(net: Net, ledger: Ledger) -> None:
    """(b) TRY_AGAIN_LATER applies nothing: the same envelope is sent again after a backoff."""
    a = net.agreement(kwh=10)
    store = P2PStore(ledger)
    await insert(store, net, a, 10)
    net.faults.add(FaultRule("sendTransaction", ("try_again_later", "try_again_later", "503", "timeout_after")))
    await uplink(net, ledger).drain(DRAIN_S)
    assert net.faults.delivered["sendTransaction:try_again_later"] == 2
    assert [t["energy_delivered_kwh"] for t in net.deliveries()] == [10]
    envelopes = await store.envelopes(a.terms.agreement_id)
    assert len(envelopes) == 1
    assert envelopes[0].attempts >= 3


async def test_expired_agreement_is_dead_lettered_with_the_contracts_error(net: Net, ledger: Ledger) -> None:
    """(e) the deadline passed: the simulation fails with DeliveryDeadlinePassed; nothing is sent."""
    a = net.agreement(kwh=10, deadline_s=3600)
    store = P2PStore(ledger)
    await insert(store, net, a, 7)
    net.clock.advance(3601 + 10)
    await uplink(net, ledger).drain(DRAIN_S)
    record = await store.record(a.terms.agreement_id)
    assert record is not None
    assert record.state == DEAD
    assert record.error_name == "DeliveryDeadlinePassed"
    assert record.detail is not None
    assert record.detail.startswith("DeliveryDeadlinePassed")
    assert net.deliveries() == []
    assert await store.envelopes(a.terms.agreement_id) == []


async def test_deadline_passing_after_the_envelope_was_stored(net: Net, ledger: Ledger) -> None:
    """(e) the envelope was built in time but lands after the deadline: FAILED, the contract's name kept."""
    a = net.agreement(kwh=10, deadline_s=3600)
    store = P2PStore(ledger)
    await insert(store, net, a, 10)
    net.clock.advance(3600 - 30)  # built 30 s before the deadline, well inside its own 120-s time bound
    # Six refused sends: the backoffs (≥ 0.5 + 1 + 2 + 4 + 8 + 16 s of clock time) carry it past the deadline.
    net.faults.add(FaultRule("sendTransaction", ("503",) * 6))
    up = SorobanUplink(net.cfg(backoff_max_s=300), ledger, net.clock, net.sdk_gateway)
    await up.drain(DRAIN_S)
    record = await store.record(a.terms.agreement_id)
    assert record is not None
    assert record.state == DEAD
    assert record.error_name == "DeliveryDeadlinePassed"
    assert [e.state for e in await store.envelopes(a.terms.agreement_id)] == [TX_FAILED]
    assert net.deliveries() == []


async def test_over_delivery_is_dead_lettered(net: Net, ledger: Ledger) -> None:
    a = net.agreement(kwh=10)
    store = P2PStore(ledger)
    await insert(store, net, a, 11)
    await uplink(net, ledger).drain(DRAIN_S)
    record = await store.record(a.terms.agreement_id)
    assert record is not None
    assert record.state == DEAD
    assert record.error_name == "ExcessiveDelivery"


async def test_unregistered_prosumer_is_dead_lettered(net: Net, ledger: Ledger) -> None:
    a = net.agreement(kwh=10)
    store = P2PStore(ledger)
    stranger = net.d.custodial_account(net.sdk_gateway)
    await insert(store, net, type(a)(a.terms, a.provider_meter, stranger.public_key), 10)
    await uplink(net, ledger).drain(DRAIN_S)
    record = await store.record(a.terms.agreement_id)
    assert record is not None
    assert record.state == DEAD
    assert record.error_name == "ProsumerNotRegistered"


@pytest.mark.parametrize("forgery", ["stranger_key", "changed_after_signing"])
async def test_forged_auth_entry_is_rejected(net: Net, ledger: Ledger, forgery: str) -> None:
    """(d) an authorisation the provider's signers did not give: FAILED on the network, nothing delivered."""
    a = net.agreement(kwh=10)
    store = P2PStore(ledger)
    await insert(store, net, a, 10)
    gw = net.sdk_gateway
    async with SorobanServerAsync(net.net.rpc_url, client=ThreadedRequestsClient()) as rpc:
        account = await rpc.load_account(gw.public_key)
        latest = await rpc.get_latest_ledger()
        args = arguments(Delivery(a.terms.agreement_id, 10, 1, a.provider))

        def draft(auth: list[xdr.SorobanAuthorizationEntry] | None) -> TransactionBuilder:
            return (TransactionBuilder(Account(gw.public_key, account.sequence), net.net.network_passphrase)
                    .append_invoke_contract_function_op(net.net.contract_id, FUNCTION, args, auth=auth)
                    .set_timeout(300))

        sim = await rpc.simulate_transaction(draft(None).build())
        assert sim.results is not None
        entry = xdr.SorobanAuthorizationEntry.from_xdr(sim.results[0].auth[0])  # type: ignore[index]
        signer = SdkKeypair.random() if forgery == "stranger_key" else gw
        entry = authorize_entry(entry, signer, latest.sequence + 100, net.net.network_passphrase)
        if forgery == "changed_after_signing":  # the signed invocation said 10 kWh; the envelope asks 9
            fn = entry.root_invocation.function.contract_fn
            assert fn is not None
            fn.args[1] = xdr.SCVal(xdr.SCValType.SCV_U64, u64=xdr.Uint64(9))
            args[1] = fn.args[1]
        tx = await rpc.prepare_transaction(draft([entry]).build(), sim)
        tx.sign(gw)
    await store.store_envelope(a.terms.agreement_id, tx.hash_hex(), tx.to_xdr(), tx.transaction.sequence,
                               2**62, now_ms=0)
    await uplink(net, ledger).drain(DRAIN_S)
    record = await store.record(a.terms.agreement_id)
    assert record is not None
    assert record.state == DEAD
    assert record.error_name == "AuthRefused"
    assert net.deliveries() == []
    assert net.d.agreement(a.terms.agreement_id)["status"] == "Active"


async def test_sequence_used_by_another_transaction_voids_and_rebuilds(net: Net, ledger: Ledger) -> None:
    """The Stellar uplink shares the gateway account: a stored envelope whose sequence number was used
    elsewhere is proved void (sequence past it, hash unknown) and the record gets a new one — once."""
    a = net.agreement(kwh=10)
    store = P2PStore(ledger)
    await insert(store, net, a, 10)
    up = uplink(net, ledger)
    async with up.session(), SorobanServerAsync(net.net.rpc_url, client=ThreadedRequestsClient()) as rpc:
        env = await build(rpc, gateway=net.sdk_gateway, passphrase=net.net.network_passphrase,
                          contract_id=net.net.contract_id, delivery=Delivery(a.terms.agreement_id, 10, 5, a.provider),
                          timeout_s=120)
        await store.store_envelope(a.terms.agreement_id, env.hash, env.xdr, env.seq, env.max_time, now_ms=0)
        acc = net.d.ledger.account(net.gateway.public_key)
        assert acc is not None
        bump = (TransactionBuilder(Account(net.gateway.public_key, acc.account.seq_num), net.net.network_passphrase)
                .append_bump_sequence_op(acc.account.seq_num + 1).set_timeout(0).build())
        bump.sign(net.sdk_gateway)
        assert net.d.ledger.submit(bump.to_xdr()).successful
        while await up.step():
            pass
    states = [e.state for e in await store.envelopes(a.terms.agreement_id)]
    assert states == [TX_VOID, TX_APPLIED]
    assert [t["energy_delivered_kwh"] for t in net.deliveries()] == [10]


async def test_a_delivery_the_rpc_forgot_is_found_in_the_contracts_history(net: Net, ledger: Ledger) -> None:
    """The envelope is voided, but the contract already holds this delivery (applied earlier, then
    forgotten by the RPC server's retention window): it is adopted, never delivered a second time."""
    a = net.agreement(kwh=10)
    store = P2PStore(ledger)
    await insert(store, net, a, 10, reading=55_000)
    async with SorobanServerAsync(net.net.rpc_url, client=ThreadedRequestsClient()) as rpc:
        env = await build(rpc, gateway=net.sdk_gateway, passphrase=net.net.network_passphrase,
                          contract_id=net.net.contract_id, delivery=Delivery(a.terms.agreement_id, 10, 55_000,
                                                                              a.provider), timeout_s=120)
    await store.store_envelope(a.terms.agreement_id, env.hash, env.xdr, env.seq, env.max_time, now_ms=0)
    # The same delivery lands by another envelope (the one the RPC server no longer remembers).
    net.d.invoke(net.sdk_gateway, FUNCTION, arguments(Delivery(a.terms.agreement_id, 10, 55_000, a.provider)),
                 {a.provider: net.sdk_gateway})
    await uplink(net, ledger).drain(DRAIN_S)
    record = await store.record(a.terms.agreement_id)
    assert record is not None
    assert (record.state, record.contract_tx_id) == (DELIVERED, 1)
    assert [e.state for e in await store.envelopes(a.terms.agreement_id)] == [TX_VOID]
    assert [t["energy_delivered_kwh"] for t in net.deliveries()] == [10]


async def test_client_timeout_after_the_contract_applied(net: Net, ledger: Ledger) -> None:
    """(a) the server applies the delivery but answers after the client's own timeout: asked, not resent."""
    a = net.agreement(kwh=10)
    store = P2PStore(ledger)
    await insert(store, net, a, 10)
    net.faults.add(FaultRule("sendTransaction", ("hang_after",)))
    before = len(net.faults.calls)
    await SorobanUplink(net.cfg(backoff_max_s=5, timeout_s=0.5), ledger, net.clock, net.sdk_gateway).drain(DRAIN_S)
    calls = net.faults.calls[before:]  # the uplink's (reading the contract below makes calls too)
    assert net.faults.delivered["sendTransaction:hang_after"] == 1
    assert [t["energy_delivered_kwh"] for t in net.deliveries()] == [10]
    record = await store.record(a.terms.agreement_id)
    assert record is not None
    assert record.state == DELIVERED
    (envelope,) = await store.envelopes(a.terms.agreement_id)
    assert envelope.state == TX_APPLIED
    assert calls.count("sendTransaction") == 1  # the lookup after the timeout found it applied
    assert calls[-1] == "getTransaction"
