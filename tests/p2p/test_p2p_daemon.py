"""The daemon end to end: export readings through its writer → intervals → the planner's record → the
Soroban uplink → the contract, each task as the daemon runs it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from stellar_sdk import Keypair as SdkKeypair

from cloud_sync.keys import Keypair
from cloud_sync.soroban_rpc.testing import Driver, run_network_thread
from gateway import identity
from gateway.channels import Channel
from gateway.clock import ManualClock, SystemClock
from gateway.config import parse_config
from gateway.daemon import Running, run_daemon
from gateway.intervals import Reading

T0 = 1_767_225_600
WAIT_S = 60.0


async def test_daemon_delivers_an_agreement_from_export_readings(tmp_path: Path) -> None:
    data = tmp_path / "gw"
    key: Keypair = identity.load_or_create(data)
    sdk_key = SdkKeypair.from_secret(key.secret)
    with run_network_thread(tmp_path / "net", ManualClock(start=float(T0))) as net:
        d = Driver(net)
        d.ledger.friendbot(key.public_key)
        provider = d.custodial_account(sdk_key)
        consumer = d.account()
        d.setup([provider.public_key, consumer.public_key],
                {provider.public_key: sdk_key, consumer.public_key: consumer})
        aid = d.create_agreement(provider.public_key, consumer.public_key, 2, 50, T0 + 86_400, sdk_key)
        now = int(time.time())
        t0 = (now - 3 * 3600) // 900 * 900
        cfg = parse_config(f"""
gateway_id = "gw-p2p-daemon"
data_dir = "{data}"
[time]
trust = "always"
[web]
enabled = false
[[buses]]
name = "rs485"
kind = "rtu"
device = "{data}/no-such-tty"
  [[buses.meters]]
  id = "solar-1"
  unit_id = 1
  profile = "eastron-sdm630"
[p2p]
check_every_s = 1
[[p2p.agreements]]
id = {aid}
provider_meter = "solar-1"
provider = "{provider.public_key}"
consumer = "{consumer.public_key}"
kwh = 2
price_per_kwh = 50
start = {time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0))}
deadline = {time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 30 * 86_400))}
[soroban]
rpc_url = "{net.rpc_url}"
contract_id = "{net.contract_id}"
network_passphrase = "{net.network_passphrase}"
backoff_max_s = 1
""")
        stop = asyncio.Event()
        started: list[Running] = []
        daemon = asyncio.create_task(run_daemon(cfg, SystemClock(), stop, on_started=started.append,
                                                final_sync_s=0))
        try:
            async with asyncio.timeout(WAIT_S):
                while not started:
                    await asyncio.sleep(0.02)
                for k in range((now - t0) // 300 + 1):  # 250 Wh every 5 minutes: 750 Wh per interval
                    await started[0].writer.submit(Reading("solar-1", (t0 + k * 300) * 1000, 1_000_000 + k * 250,
                                                           channel=Channel.EXPORT))
                while not net.node.contract.state.transactions:
                    await asyncio.sleep(0.05)
                rows: list[tuple[object, ...]] = []
                while not rows:  # the settle is committed just after the contract applied
                    rows = await started[0].ledger.read_rows(
                        "SELECT state, kwh, carry_out_wh, contract_tx_id FROM p2p_deliveries")
                    rows = [r for r in rows if r[0] == "delivered"]
                    await asyncio.sleep(0.02)
        finally:
            stop.set()
            await daemon
    (tx,) = net.node.contract.state.transactions.values()
    assert (tx.agreement_id, tx.energy_delivered_kwh, tx.provider) == (aid, 2, provider.public_key)
    assert tx.meter_reading == 1_000_000 + 9 * 250  # the export register at the third interval's end
    assert rows == [("delivered", 2, 250, tx.transaction_id)]
