"""The ``deliver_energy`` envelope: built, simulated, authorised offline, prepared and signed.

The gateway account is the transaction's source (it pays the fee, like the Stellar uplink's
payments; its sequence numbers are shared with that uplink, see :mod:`.uplink`). The provider's
address — the meter's custodial account, whose medium threshold the gateway's key meets as a
signer — must authorise the call (``provider.require_auth()``): simulation hands out its
``SorobanAuthorizationEntry`` (ADDRESS credentials, a fresh nonce) and the gateway signs it
offline with ``authorize_entry``. The entry stays valid past the envelope's own time bound,
so bytes resent until that bound can never fail on an expired authorisation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from stellar_sdk import Account, Keypair, TransactionBuilder, scval, xdr
from stellar_sdk.auth import authorize_entry
from stellar_sdk.soroban_server_async import SorobanServerAsync

from cloud_sync.soroban.errors import from_simulation

FUNCTION: Final = "deliver_energy"
BASE_FEE: Final = 100
"""Stroops bid per operation on top of the simulated resource fee."""
LEDGER_S: Final = 5
"""Seconds per ledger on Stellar (for turning the time bound into a ledger count)."""
AUTH_MARGIN_LEDGERS: Final = 60
"""Ledgers an authorisation outlives its envelope's time bound by (about five minutes)."""


class SimulationRefused(Exception):
    """The simulation failed: ``contract_error`` is the contract's error name, or None for anything else."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error
        self.contract_error = from_simulation(error)


@dataclass(frozen=True, slots=True)
class Delivery:
    agreement_id: int
    kwh: int
    meter_reading: int
    provider: str


@dataclass(frozen=True, slots=True)
class Envelope:
    hash: str
    xdr: str
    seq: int
    max_time: int


def arguments(d: Delivery) -> list[xdr.SCVal]:
    """``deliver_energy(agreement_id: u64, energy_delivered_kwh: u64, meter_reading: u64, provider: Address)``."""
    return [scval.to_uint64(d.agreement_id), scval.to_uint64(d.kwh), scval.to_uint64(d.meter_reading),
            scval.to_address(d.provider)]


async def build(server: SorobanServerAsync, *, gateway: Keypair, passphrase: str, contract_id: str,
                delivery: Delivery, timeout_s: int) -> Envelope:
    """A signed envelope ready to send (nothing is sent here); raises SimulationRefused."""
    account = await server.load_account(gateway.public_key)
    latest = await server.get_latest_ledger()
    max_time = int(latest.close_time) + timeout_s
    args = arguments(delivery)

    def draft(auth: list[xdr.SorobanAuthorizationEntry] | None) -> TransactionBuilder:
        return (TransactionBuilder(Account(gateway.public_key, account.sequence), passphrase, base_fee=BASE_FEE)
                .append_invoke_contract_function_op(contract_id, FUNCTION, args, auth=auth)
                .add_time_bounds(0, max_time))

    sim = await server.simulate_transaction(draft(None).build())
    if sim.error:
        raise SimulationRefused(sim.error)
    assert sim.results is not None
    until = latest.sequence + math.ceil(timeout_s / LEDGER_S) + AUTH_MARGIN_LEDGERS
    signed: list[xdr.SorobanAuthorizationEntry] = []
    for raw in sim.results[0].auth or []:
        entry = xdr.SorobanAuthorizationEntry.from_xdr(raw)
        if entry.credentials.type == xdr.SorobanCredentialsType.SOROBAN_CREDENTIALS_ADDRESS:
            entry = authorize_entry(entry, gateway, until, passphrase)
        signed.append(entry)
    tx = await server.prepare_transaction(draft(signed).build(), sim)
    tx.sign(gateway)
    return Envelope(tx.hash_hex(), tx.to_xdr(), tx.transaction.sequence, max_time)


async def recorded(server: SorobanServerAsync, *, gateway: Keypair, passphrase: str, contract_id: str,
                   delivery: Delivery) -> int | None:
    """The contract's transaction id of this very delivery if its history already holds it, else None.

    Asked (a read-only simulation of ``get_transaction_history``) before a record whose envelope was
    voided gets a new one: RPC forgets transactions after its retention window, the contract does not.
    """
    account = await server.load_account(gateway.public_key)
    tx = (TransactionBuilder(Account(gateway.public_key, account.sequence), passphrase, base_fee=BASE_FEE)
          .append_invoke_contract_function_op(contract_id, "get_transaction_history",
                                              [scval.to_address(delivery.provider)])
          .set_timeout(0).build())
    sim = await server.simulate_transaction(tx)
    if sim.error:
        if from_simulation(sim.error) is not None:
            return None  # e.g. ProsumerNotRegistered: it holds no delivery of this provider
        raise ValueError(f"cannot read the contract's history: {sim.error}")  # retried
    assert sim.results is not None
    assert sim.results[0].xdr is not None
    for item in scval.from_vec(xdr.SCVal.from_xdr(sim.results[0].xdr)):
        fields = {scval.from_symbol(k): v for k, v in scval.from_map(item).items()}
        try:
            same = (scval.from_uint64(fields["agreement_id"]) == delivery.agreement_id
                    and scval.from_uint64(fields["energy_delivered_kwh"]) == delivery.kwh
                    and scval.from_uint64(fields["meter_reading"]) == delivery.meter_reading)
            if same:
                return int(scval.from_uint64(fields["transaction_id"]))
        except (KeyError, ValueError):
            continue
    return None
