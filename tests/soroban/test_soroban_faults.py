"""Faults a delivery uplink must survive, and a restart on the same state."""

from __future__ import annotations

from pathlib import Path

import pytest
from stellar_sdk import SorobanServer, scval
from stellar_sdk.client.requests_client import RequestsClient
from stellar_sdk.exceptions import BadResponseError

from cloud_sync.soroban_rpc.rpc import FaultRule, RpcFaults
from cloud_sync.soroban_rpc.testing import Driver, run_network_thread
from gateway.clock import ManualClock
from tests.soroban.conftest import P2P


def deliver(p: P2P, aid: int, kwh: int) -> object:
    return p.d.build(p.gateway, "deliver_energy",
                     [scval.to_uint64(aid), scval.to_uint64(kwh), scval.to_uint64(1),
                      scval.to_address(p.provider.public_key)], {p.provider.public_key: p.gateway})


def no_retry(p: P2P) -> SorobanServer:
    """The SDK's default client retries 503/504 POSTs itself (3 times, backing off): here the test sees each."""
    return SorobanServer(p.net.rpc_url, client=RequestsClient(num_retries=0))


def test_timeout_after_apply_then_resend_delivers_once(p2p: P2P, faults: RpcFaults) -> None:
    p = p2p
    aid = p.agreement(kwh=10)
    env = deliver(p, aid, 10)
    rpc = no_retry(p)
    faults.add(FaultRule("sendTransaction", ("timeout_after",)))
    with pytest.raises(BadResponseError):
        rpc.send_transaction(env)  # type: ignore[arg-type]
    assert faults.delivered["sendTransaction:timeout_after"] == 1
    assert rpc.send_transaction(env).status.value == "DUPLICATE"  # type: ignore[arg-type]
    got = p.d.server.get_transaction(env.hash_hex())  # type: ignore[attr-defined]
    assert got.status.value == "SUCCESS"
    assert got.result_meta_xdr is not None
    assert [t["transaction_id"] for t in p.d.history(p.provider.public_key)] == [1]


def test_try_again_later_and_503_apply_nothing(p2p: P2P, faults: RpcFaults) -> None:
    p = p2p
    aid = p.agreement(kwh=10)
    env = deliver(p, aid, 5)
    rpc = no_retry(p)
    faults.add(FaultRule("sendTransaction", ("try_again_later", "503")))
    assert rpc.send_transaction(env).status.value == "TRY_AGAIN_LATER"  # type: ignore[arg-type]
    with pytest.raises(BadResponseError):
        rpc.send_transaction(env)  # type: ignore[arg-type]
    assert p.d.server.get_transaction(env.hash_hex()).status.value == "NOT_FOUND"  # type: ignore[attr-defined]
    assert p.net.node.contract.state.transactions == {}
    assert rpc.send_transaction(env).status.value == "PENDING"  # type: ignore[arg-type]
    assert p.net.node.contract.state.agreements[aid].delivered_kwh == 5


def test_seeded_random_faults_repeat() -> None:
    def run() -> list[str]:
        f = RpcFaults([FaultRule("sendTransaction", probability=0.5, mode="503", seed=7)])
        return [f.next("sendTransaction") for _ in range(40)]

    first = run()
    assert first == run()
    assert 5 < first.count("503") < 35


def test_restart_keeps_contract_accounts_and_nonces(tmp_path: Path) -> None:
    clock = ManualClock(start=1_767_225_600.0)
    with run_network_thread(tmp_path / "net", clock) as net:
        d = Driver(net)
        gateway = d.account()
        provider, consumer = d.custodial_account(gateway), d.account()
        d.setup([provider.public_key, consumer.public_key],
                {provider.public_key: gateway, consumer.public_key: consumer})
        aid = d.create_agreement(provider.public_key, consumer.public_key, 10, 5, int(clock.now()) + 3600, gateway)
        args = [scval.to_uint64(aid), scval.to_uint64(4), scval.to_uint64(9), scval.to_address(provider.public_key)]
        env = d.build(gateway, "deliver_energy", args, {provider.public_key: gateway})
        assert d.server.send_transaction(env).status.value == "PENDING"
        admin = d.admin
    with run_network_thread(tmp_path / "net", clock) as net:
        d = Driver(net, admin)
        assert SorobanServer(net.rpc_url).send_transaction(env).status.value == "DUPLICATE"
        assert d.agreement(aid)["status"] == "Active"
        assert [t["energy_delivered_kwh"] for t in d.history(provider.public_key)] == [4]
