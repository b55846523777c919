"""The demo's energy sharing (seed 001): a solar house delivers to its neighbour through the contract.

The demo plays the utility that brokered the deal, on its own local network (the Horizon stand-in's
ledger with the Soroban RPC stand-in and its contract on the same port, ``cloud_sync.soroban_rpc``):

1. it makes the solar house's custodial account itself, exactly as the gateway's provisioning would
   (``cloud_sync.stellar.txbuild.account_transaction``: the serial as account data, the platform and
   the gateway as signers). The gateway adopts it at start (it looks for an account of the meter's
   serial before making one), so the account credited for the house's consumption is the one that
   provides its energy in the contract;
2. it initialises the contract, registers the house and a neighbour as prosumers (the gateway key
   authorises for the house: it is a signer of the house's account) and creates one agreement;
3. the gateway is configured with the agreement (``[[p2p.agreements]]``) and the contract
   (``[soroban]``), like an installer would write them.

Once set up (``p2p.json`` beside the network's data) a restart reuses all of it. At the end the demo
reads the agreement from the contract and the delivery record from the gateway's ledger.

The contract's clock is the network's, in real time, while the meters run on the demo's fast clock:
the window is a month of meter time from the demo's first start (48 min of wall time at 900x), and
the contract's deadline the same instant, so it is far ahead on the network's clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stellar_sdk import Keypair

if TYPE_CHECKING:
    from cloud_sync.soroban_rpc.server import RunningNetwork
    from gateway.sim.utility import Utility

STATE_FILE = "p2p.json"
AGREEMENT_KWH = 2
"""What the house agrees to deliver: a couple of hours of its midday surplus."""
PRICE_PER_KWH = 50
"""In the contract's token units."""
WINDOW_S = 30 * 86_400
STARTING_BALANCE_XLM = "3"
TX_VALID_S = 300
"""The account transaction's time bound on the network's clock (it is submitted at once)."""
TX_VALID_LEDGERS = 100


@dataclass(frozen=True)
class DemoAgreement:
    gateway: str
    agreement_id: int
    provider: str
    consumer: str
    kwh: int
    price_per_kwh: int
    start: int
    deadline: int
    admin_secret: str
    """Demo only (like the utility's keys file): the contract admin that reads the agreement at the end."""

    def config_lines(self, net: RunningNetwork, provider_meter: str) -> list[str]:
        def iso(t: int) -> str:
            return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

        return ["# Energy sharing: the agreement as the contract holds it (mirrored by the utility).",
                "[[p2p.agreements]]", f"id = {self.agreement_id}", f'provider_meter = "{provider_meter}"',
                f'provider = "{self.provider}"', f'consumer = "{self.consumer}"', f"kwh = {self.kwh}",
                f"price_per_kwh = {self.price_per_kwh}", f"start = {iso(self.start)}",
                f"deadline = {iso(self.deadline)}", "",
                "[soroban]", f'rpc_url = "{net.rpc_url}"', f'contract_id = "{net.contract_id}"',
                f'network_passphrase = "{net.network_passphrase}"', "backoff_max_s = 5", ""]


def _provision(net: RunningNetwork, utility: Utility, gateway: Keypair, serial: int) -> str:
    """The house's custodial account, made as the gateway makes one (so that the gateway adopts it)."""
    from cloud_sync.stellar.txbuild import Bounds, account_transaction

    ledger = net.node.ledger
    record = ledger.account(gateway.public_key)
    if record is None:
        raise RuntimeError("the gateway account is not funded: onboarding did not run")
    latest = ledger.latest_closed()
    device = Keypair.random()
    tx = account_transaction(gateway, device, record.account.seq_num + 1, serial=str(serial), asset=utility.asset,
                             platform_signer=utility.platform.public_key, starting_balance=STARTING_BALANCE_XLM,
                             bounds=Bounds(latest.sequence + TX_VALID_LEDGERS, latest.closed_at + TX_VALID_S),
                             base_fee=latest.row.base_fee,
                             passphrase=net.network_passphrase)
    submitted = ledger.submit(tx.envelope)
    if not submitted.successful:
        raise RuntimeError(f"the solar house's account was not made: {submitted.result_xdr}")
    return device.public_key


def _set_up(net: RunningNetwork, utility: Utility, gateway: Keypair, serial: int, epoch: float) -> DemoAgreement:
    from cloud_sync.soroban_rpc.testing import Driver

    provider = _provision(net, utility, gateway, serial)
    admin = Keypair.random()
    driver = Driver(net, admin)
    neighbour = driver.account()
    driver.setup([provider, neighbour.public_key], {provider: gateway, neighbour.public_key: neighbour})
    start = int(epoch)
    deadline = start + WINDOW_S
    agreement_id = driver.create_agreement(provider, neighbour.public_key, AGREEMENT_KWH, PRICE_PER_KWH, deadline,
                                           provider_signer=gateway)
    return DemoAgreement(gateway.public_key, agreement_id, provider, neighbour.public_key, AGREEMENT_KWH,
                         PRICE_PER_KWH, start, deadline, admin.secret)


async def set_up(net: RunningNetwork, utility: Utility, gateway: Keypair, serial: int, epoch: float,
                 state_dir: Path) -> DemoAgreement:
    """The agreement of this demo's network, made once (idempotent across restarts)."""
    path = state_dir / STATE_FILE
    if path.exists():
        doc = json.loads(path.read_text())
        if doc.get("gateway") == gateway.public_key:
            return DemoAgreement(**doc)
    # The SDK's client is synchronous and the network answers from this very loop: off the loop.
    made = await asyncio.to_thread(_set_up, net, utility, gateway, serial, epoch)
    path.write_text(json.dumps(asdict(made)) + "\n")
    return made


def contract_agreement(net: RunningNetwork, agreement_id: int) -> dict[str, Any] | None:
    """The agreement as the contract holds it now (read from the node's state: no transaction)."""
    found = net.node.contract.state.agreements.get(agreement_id)
    if found is None:
        return None
    return {"status": found.status.value, "kwh": found.energy_amount_kwh, "delivered_kwh": found.delivered_kwh,
            "provider": found.provider, "consumer": found.consumer}


def delivery_records(data_dir: Path) -> list[dict[str, Any]]:
    path = data_dir / "ledger.db"
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        try:
            rows = db.execute("SELECT agreement_id, kwh, meter_reading, carry_out_wh, state, tx_hash, error_name "
                              "FROM p2p_deliveries ORDER BY id").fetchall()
        except sqlite3.OperationalError:
            return []
    keys = ("agreement_id", "kwh", "meter_reading", "carry_out_wh", "state", "tx_hash", "error_name")
    return [dict(zip(keys, r, strict=True)) for r in rows]


def report(net: RunningNetwork, agreement: DemoAgreement, data_dir: Path) -> dict[str, Any]:
    records = [r for r in delivery_records(data_dir) if r["agreement_id"] == agreement.agreement_id]
    return {"agreement_id": agreement.agreement_id, "kwh": agreement.kwh,
            "contract": contract_agreement(net, agreement.agreement_id), "records": records}


def print_report(found: dict[str, Any], provider_meter: str) -> None:
    contract = found["contract"] or {}
    print(f"Energy sharing: agreement {found['agreement_id']}, {provider_meter} delivers {found['kwh']} kWh "
          f"to its neighbour:")
    if not found["records"]:
        print("  no delivery record yet (the agreed energy has not been exported yet: run the demo longer)")
    for r in found["records"]:
        sent = f"sent in {r['tx_hash'][:12]}…" if r["tx_hash"] else "not sent yet"
        if r["error_name"]:
            sent = f"refused by the contract: {r['error_name']}"
        print(f"  delivery record: {r['kwh']} kWh at export register {r['meter_reading']} Wh "
              f"({r['carry_out_wh']} Wh carried on), {r['state']}, {sent}")
    print(f"  on the contract: status {contract.get('status', 'unknown')}, delivered "
          f"{contract.get('delivered_kwh', 0)} of {contract.get('kwh', found['kwh'])} kWh")
