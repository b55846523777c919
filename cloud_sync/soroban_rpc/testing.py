"""Start the local network in a thread and drive the contract with the unmodified stellar-sdk.

For tests (ours and the gateway's p2p uplink tests)::

    from cloud_sync.soroban_rpc.testing import run_network_thread, Driver

    with run_network_thread(tmp_path / "net", clock) as net:       # Horizon + Soroban RPC, one port
        d = Driver(net)                                              # admin keypair, friendbot, helpers
        provider = d.custodial_account(gateway_kp)                   # gateway = signer on it
        consumer = d.account()
        d.setup([provider.public_key, consumer.public_key], {provider.public_key: gateway_kp})
        agreement_id = d.create_agreement(provider.public_key, consumer.public_key, 10, 50, deadline, gateway_kp)
        # ... the code under test talks to net.rpc_url (SorobanServer) with contract net.contract_id
        d.agreement(agreement_id)                                    # the contract's view, as a dict

``Driver.invoke`` is the whole client flow: load_account, append_invoke_contract_function_op,
simulate, authorize_entry for each address entry, prepare_transaction, sign, send, getTransaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stellar_sdk import Keypair, SorobanServer, TransactionBuilder, scval, xdr

from cloud_sync.horizon.ledger import LocalLedger
from cloud_sync.soroban_rpc.client import InvokeFailed, build, invoke

__all__ = ["Driver", "InvokeFailed", "run_network_thread"]
from cloud_sync.soroban_rpc.node import SorobanNode
from cloud_sync.soroban_rpc.rpc import RpcFaults
from cloud_sync.soroban_rpc.scval import decode_struct
from cloud_sync.soroban_rpc.server import RunningNetwork, serve_network
from gateway.clock import Clock, SystemClock

START_S = 10.0


@contextlib.contextmanager
def run_network_thread(data_dir: Path, clock: Clock | None = None,
                       faults: RpcFaults | None = None) -> Iterator[RunningNetwork]:
    """Serve a local network (Horizon + Soroban RPC) from its own thread until the block ends."""
    data_dir.mkdir(parents=True, exist_ok=True)
    ledger = LocalLedger(data_dir, clock or SystemClock())
    node = SorobanNode(ledger, data_dir)
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        stop = asyncio.Event()
        box["stop"], box["loop"] = stop, asyncio.get_running_loop()
        async with serve_network(node, faults=faults) as running:
            box["running"] = running
            ready.set()
            await stop.wait()

    def target() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            box["error"] = exc
            ready.set()

    thread = threading.Thread(target=target, name="local-soroban", daemon=True)
    thread.start()
    if not ready.wait(START_S) or "error" in box:
        node.close()
        ledger.close()
        raise RuntimeError(f"the local network did not start: {box.get('error')!r}")
    try:
        yield box["running"]
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(START_S)
        node.close()
        ledger.close()


@dataclass
class Driver:
    net: RunningNetwork
    admin: Keypair = field(default_factory=Keypair.random)

    def __post_init__(self) -> None:
        self.server = SorobanServer(self.net.rpc_url)
        self.ledger = self.net.node.ledger
        if self.ledger.account(self.admin.public_key) is None:
            self.ledger.friendbot(self.admin.public_key)

    @property
    def passphrase(self) -> str:
        return self.net.network_passphrase

    def account(self) -> Keypair:
        kp = Keypair.random()
        self.ledger.friendbot(kp.public_key)
        return kp

    def custodial_account(self, gateway: Keypair, platform: Keypair | None = None) -> Keypair:
        """A meter's account as provisioning makes it (cloud_sync.stellar.txbuild): master weight 0, the
        platform a HIGH signer, the gateway a LOW/MEDIUM signer — so the gateway alone can authorise
        the provider's ``deliver_energy``. Returns the account's (now powerless) master keypair."""
        from cloud_sync.stellar.txbuild import (
            GATEWAY_WEIGHT,
            HIGH_THRESHOLD,
            LOW_THRESHOLD,
            MED_THRESHOLD,
            PLATFORM_WEIGHT,
        )

        owner = self.account()
        platform = platform or Keypair.random()
        acc = self.ledger.account(owner.public_key)
        assert acc is not None
        tx = (TransactionBuilder(_sdk_account(owner.public_key, acc.account.seq_num), self.passphrase, base_fee=100)
              .append_ed25519_public_key_signer(platform.public_key, PLATFORM_WEIGHT)
              .append_ed25519_public_key_signer(gateway.public_key, GATEWAY_WEIGHT)
              .append_set_options_op(master_weight=0, low_threshold=LOW_THRESHOLD, med_threshold=MED_THRESHOLD,
                                     high_threshold=HIGH_THRESHOLD)
              .set_timeout(0).build())
        tx.sign(owner)
        sub = self.ledger.submit(tx.to_xdr())
        assert sub.successful, sub.result_xdr
        return owner

    def invoke(self, source: Keypair, function: str, args: list[xdr.SCVal],
               signers: Mapping[str, Keypair] | None = None) -> xdr.SCVal:
        """The full stellar-sdk flow; returns the contract's return value or raises InvokeFailed."""
        return invoke(self.server, self.passphrase, self.net.contract_id, source, function, args, signers)

    def build(self, source: Keypair, function: str, args: list[xdr.SCVal],
              signers: Mapping[str, Keypair] | None = None) -> Any:
        """A signed, prepared envelope (simulated, auth entries signed offline by ``signers``)."""
        return build(self.server, self.passphrase, self.net.contract_id, source, function, args, signers)

    # -- the admin path ---------------------------------------------------------------------
    def setup(self, prosumers: list[str], signers: Mapping[str, Keypair]) -> None:
        """initialize (admin, a token address) once, then register each prosumer."""
        if self.net.node.contract.state.admin is None:
            token = scval.to_address(self.net.contract_id)
            self.invoke(self.admin, "initialize", [scval.to_address(self.admin.public_key), token])
        for p in prosumers:
            if p not in self.net.node.contract.state.prosumers:
                self.invoke(self.admin, "register_prosumer", [scval.to_address(p)], signers)

    def create_agreement(self, provider: str, consumer: str, kwh: int, price_per_kwh: int, deadline: int,
                         provider_signer: Keypair) -> int:
        value = self.invoke(self.admin, "create_agreement",
                            [scval.to_address(provider), scval.to_address(consumer), scval.to_uint64(kwh),
                             scval.to_uint64(price_per_kwh), scval.to_uint64(deadline)], {provider: provider_signer})
        return scval.from_uint64(value)

    def mint(self, to: str, amount: int) -> None:
        self.invoke(self.admin, "mint", [scval.to_address(to), scval.to_uint64(amount)])

    def agreement(self, agreement_id: int) -> dict[str, Any]:
        return decode_struct(self.invoke(self.admin, "get_agreement", [scval.to_uint64(agreement_id)]))

    def history(self, prosumer: str) -> list[dict[str, Any]]:
        value = self.invoke(self.admin, "get_transaction_history", [scval.to_address(prosumer)])
        return [decode_struct(v) for v in scval.from_vec(value)]


def _sdk_account(account_id: str, seq: int) -> Any:
    from stellar_sdk import Account

    return Account(account_id, seq)
