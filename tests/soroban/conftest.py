"""The local network (Horizon + Soroban RPC) in a thread, and a driver using the unmodified stellar-sdk."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from stellar_sdk import Keypair

from cloud_sync.soroban_rpc.rpc import RpcFaults
from cloud_sync.soroban_rpc.server import RunningNetwork
from cloud_sync.soroban_rpc.testing import Driver, run_network_thread
from gateway.clock import ManualClock

T0 = 1_767_225_600
DAY = 86_400


@dataclass
class P2P:
    """A contract with two registered prosumers; the provider is a custodial account the gateway signs for."""

    net: RunningNetwork
    clock: ManualClock
    d: Driver
    gateway: Keypair
    provider: Keypair
    consumer: Keypair

    def agreement(self, kwh: int = 10, price: int = 50, deadline_s: int = DAY) -> int:
        return self.d.create_agreement(self.provider.public_key, self.consumer.public_key, kwh, price,
                                       int(self.clock.now()) + deadline_s, self.gateway)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=float(T0))


@pytest.fixture
def faults() -> RpcFaults:
    return RpcFaults()


@pytest.fixture
def network(tmp_path: Path, clock: ManualClock, faults: RpcFaults) -> Iterator[RunningNetwork]:
    with run_network_thread(tmp_path / "net", clock, faults) as net:
        yield net


@pytest.fixture
def p2p(network: RunningNetwork, clock: ManualClock) -> P2P:
    d = Driver(network)
    gateway = d.account()
    provider = d.custodial_account(gateway)
    consumer = d.account()
    d.setup([provider.public_key, consumer.public_key],
            {provider.public_key: gateway, consumer.public_key: consumer})
    return P2P(network, clock, d, gateway, provider, consumer)
