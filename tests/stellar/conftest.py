"""Harnesses for the local ledger: the pure rules over a dict, and the HTTP server in a thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from stellar_sdk import Account as SdkAccount
from stellar_sdk import Asset as SdkAsset
from stellar_sdk import Keypair, Network, TransactionBuilder, TransactionEnvelope, xdr

from cloud_sync.horizon import codes
from cloud_sync.horizon.context import LedgerContext
from cloud_sync.horizon.entries import Account, Asset, TrustLine, account_key, trustline_key
from cloud_sync.horizon.envelope import decode_envelope, frame_of, network_id
from cloud_sync.horizon.faults import FaultPlan
from cloud_sync.horizon.ledger import LocalLedger
from cloud_sync.horizon.server import RunningLedger, serve_ledger
from cloud_sync.horizon.state import MemoryState
from cloud_sync.horizon.transaction import TxOutcome, apply_transaction
from gateway.clock import Clock, SystemClock

PASSPHRASE = Network.STANDALONE_NETWORK_PASSPHRASE
T0 = 1_767_225_600
XLM = 10_000_000
SERVER_START_S = 10.0


def names(outcome: TxOutcome) -> tuple[str, list[str]]:
    """(transaction code, operation codes) as Horizon names them, read back from the result XDR."""
    parsed = xdr.TransactionResult.from_xdr(outcome.result.to_xdr())
    got = codes.result_codes(parsed)
    return got["transaction"], got.get("operations", [])


@dataclass
class Net:
    """The pure rules over an in-memory state, one open ledger that the test moves by hand."""

    base_fee: int = 100
    base_reserve: int = 5_000_000
    seq: int = 10
    close_time: int = T0
    passphrase: str = PASSPHRASE
    root: Keypair = field(default_factory=Keypair.random)
    fee_pool: int = 0

    def __post_init__(self) -> None:
        self.total = 10**18
        self.state = MemoryState([Account(self.root.public_key, self.total, 0)])

    @property
    def ledger(self) -> LedgerContext:
        return LedgerContext(network_id(PASSPHRASE), self.seq, self.close_time, self.base_fee, self.base_reserve)

    def close(self, ledgers: int = 1, seconds: int = 5) -> None:
        self.seq += ledgers
        self.close_time += seconds * ledgers

    def account(self, account_id: str | Keypair) -> Account | None:
        key = account_id.public_key if isinstance(account_id, Keypair) else account_id
        entry = self.state.get_entry(account_key(key))
        assert entry is None or isinstance(entry, Account)
        return entry

    def line(self, holder: Keypair, asset: Asset) -> TrustLine | None:
        entry = self.state.get_entry(trustline_key(holder.public_key, asset))
        assert entry is None or isinstance(entry, TrustLine)
        return entry

    def balance(self, kp: Keypair) -> int:
        acc = self.account(kp)
        assert acc is not None
        return acc.balance

    def tx(self, source: Keypair | str, *, fee: int | None = None, seq: int | None = None,
           passphrase: str | None = None) -> TransactionBuilder:
        key = source.public_key if isinstance(source, Keypair) else source
        acc = self.account(key)
        current = seq if seq is not None else (acc.seq_num if acc else 0)
        return TransactionBuilder(SdkAccount(key, current), passphrase or self.passphrase,
                                  base_fee=fee if fee is not None else self.base_fee).add_time_bounds(0, 0)

    def submit(self, envelope: TransactionEnvelope | Any, *signers: Keypair) -> TxOutcome:
        for kp in signers:
            envelope.sign(kp)
        frame = frame_of(decode_envelope(envelope.to_xdr()), network_id(PASSPHRASE))
        outcome = apply_transaction(self.state, self.ledger, frame)
        if outcome.included:
            self.state.apply(outcome.changes)
            self.fee_pool += outcome.fee_charged
        return outcome

    def fund(self, kp: Keypair | None = None, xlm: str = "100") -> Keypair:
        kp = kp or Keypair.random()
        out = self.submit(self.tx(self.root).append_create_account_op(kp.public_key, xlm).build(), self.root)
        assert names(out) == ("tx_success", ["op_success"]), names(out)
        return kp

    def trust(self, holder: Keypair, asset: Asset, limit: str | None = None) -> TxOutcome:
        return self.submit(self.tx(holder).append_change_trust_op(SdkAsset(asset.code, asset.issuer), limit)
                           .build(), holder)


@pytest.fixture
def net() -> Net:
    return Net()


@dataclass
class ThreadedLedger:
    """A ledger served from its own thread and loop, so synchronous stellar-sdk calls can reach it."""

    url: str
    running: RunningLedger
    ledger: LocalLedger

    @property
    def faults(self) -> FaultPlan:
        return self.running.faults


def run_ledger_thread(data_dir: Path, clock: Clock | None = None, **options: Any) -> Iterator[ThreadedLedger]:
    ledger = LocalLedger(data_dir, clock or SystemClock(), **options)
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        stop = asyncio.Event()
        box["stop"], box["loop"] = stop, asyncio.get_running_loop()
        async with serve_ledger(ledger) as running:
            box["running"] = running
            ready.set()
            await stop.wait()

    def target() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:
            box["error"] = exc
            ready.set()

    thread = threading.Thread(target=target, name="local-ledger", daemon=True)
    thread.start()
    assert ready.wait(SERVER_START_S), "the local ledger did not start"
    if "error" in box:
        raise box["error"]
    try:
        yield ThreadedLedger(box["running"].url, box["running"], ledger)
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(SERVER_START_S)
        ledger.close()


@pytest.fixture
def horizon(tmp_path: Path) -> Iterator[ThreadedLedger]:
    yield from run_ledger_thread(tmp_path / "ledger")
