"""A local network with the seed-001 contract, a ledger file, and the gateway key both use."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from stellar_sdk import Keypair as SdkKeypair

from cloud_sync.keys import Keypair
from cloud_sync.soroban_rpc.rpc import RpcFaults
from cloud_sync.soroban_rpc.server import RunningNetwork
from cloud_sync.soroban_rpc.testing import Driver, run_network_thread
from gateway.clock import ManualClock
from gateway.config.p2p import SorobanConfig
from gateway.ledger.store import Ledger
from gateway.p2p.planner import Decision, Terms
from gateway.p2p.store import Agreement, P2PStore

T0 = 1_767_225_600
DAY = 86_400
GATEWAY_ID = "gw-p2p"


class StepClock(ManualClock):
    """A manual clock whose sleeps move it (the uplink's backoffs pass at once, in clock time)."""

    async def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)


@dataclass
class Net:
    net: RunningNetwork
    clock: StepClock
    d: Driver
    gateway: Keypair
    provider: SdkKeypair
    consumer: SdkKeypair
    faults: RpcFaults

    @property
    def sdk_gateway(self) -> SdkKeypair:
        return SdkKeypair.from_secret(self.gateway.secret)

    def cfg(self, **extra: object) -> SorobanConfig:
        return SorobanConfig.model_validate({"rpc_url": self.net.rpc_url, "contract_id": self.net.contract_id,
                                             "network_passphrase": self.net.network_passphrase, **extra})

    def agreement(self, kwh: int = 10, deadline_s: int = DAY) -> Agreement:
        now = int(self.clock.now())
        aid = self.d.create_agreement(self.provider.public_key, self.consumer.public_key, kwh, 50, now + deadline_s,
                                      self.sdk_gateway)
        return Agreement(Terms(aid, kwh, now, now + deadline_s), "solar-1", self.provider.public_key)

    def deliveries(self) -> list[dict[str, object]]:
        return self.d.history(self.provider.public_key)


@pytest.fixture
def step_clock() -> StepClock:
    return StepClock(start=float(T0))


@pytest.fixture
def rpc_faults() -> RpcFaults:
    return RpcFaults()


@pytest.fixture
def net(tmp_path: Path, step_clock: StepClock, rpc_faults: RpcFaults) -> Iterator[Net]:
    with run_network_thread(tmp_path / "net", step_clock, rpc_faults) as running:
        d = Driver(running)
        gateway = Keypair.random()
        d.ledger.friendbot(gateway.public_key)
        sdk_gateway = SdkKeypair.from_secret(gateway.secret)
        provider = d.custodial_account(sdk_gateway)
        consumer = d.account()
        d.setup([provider.public_key, consumer.public_key],
                {provider.public_key: sdk_gateway, consumer.public_key: consumer})
        yield Net(running, step_clock, d, gateway, provider, consumer, rpc_faults)


@pytest.fixture
async def ledger(tmp_path: Path, net: Net) -> AsyncIterator[Ledger]:
    led = await Ledger.open(tmp_path / "gw", gateway_id=GATEWAY_ID, keypair=net.gateway)
    try:
        yield led
    finally:
        await led.close()


async def insert(store: P2PStore, net: Net, a: Agreement, kwh: int, reading: int = 123_456) -> None:
    """A delivery record as the planner makes it (for the uplink's tests: no intervals needed)."""
    decision = Decision(a.terms.agreement_id, kwh, "quantity", (), 0, 0, reading, a.terms.start)
    await store.insert_record(decision, a, gateway=GATEWAY_ID, keypair=net.gateway, now=net.clock.now())
