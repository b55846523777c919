"""Custodial meter accounts: their shape on chain, serials read from the meter, and one account per meter
however often provisioning is killed."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import random
import signal
import sys
from pathlib import Path

import pytest
from stellar_sdk import Account, Keypair, Signer, TransactionBuilder

from cloud_sync.horizon.faults import FaultMode, FaultRule
from cloud_sync.stellar.provision import MeterSerials, SerialUnavailable
from cloud_sync.stellar.txbuild import GATEWAY_WEIGHT, PLATFORM_WEIGHT
from gateway.acquisition.modbus import ModbusBus
from gateway.clock import SystemClock
from gateway.config import parse_config
from gateway.intervals import Reading
from gateway.profiles import builtin_profile
from gateway.sim.load import LoadModel
from gateway.sim.modbus_sim import MeterSimulator, SimulatedMeter
from gateway.status import GatewayStatus
from tests.conftest import free_port
from tests.stellar.gateway_harness import GW, Tenant, account, records, run_until, tenant

PROVISION_START_S = 30.0
"""How long a ``stellar provision`` run may take to reach its first submit (imports on a loaded box)."""

SDM630_SERIAL = 23_456_789


async def serial_accounts(t: Tenant) -> dict[str, list[str]]:
    """serial → the accounts on chain that hold it and are controlled by the platform (fully made or not)."""
    out: dict[str, list[str]] = {}
    for rec in await records(t.url, "/accounts", signer=t.utility.platform.public_key):
        serial = rec.get("data", {}).get("serial")
        if serial is not None:
            out.setdefault(base64.b64decode(serial).decode(), []).append(rec["account_id"])
    return out


async def test_a_meter_account_holds_its_serial_and_only_the_platform_controls_it(tmp_path: Path) -> None:
    async with tenant(tmp_path) as t:
        await run_until(t.uplink(["m1"]), lambda: _active(t, 1))
        account_id = (await t.accounts())["m1"]
        doc = await account(t.url, account_id)
        assert base64.b64decode(doc["data"]["serial"]) == b"SN-m1"
        signers = {s["key"]: s["weight"] for s in doc["signers"]}
        assert signers == {account_id: 0, t.utility.platform.public_key: PLATFORM_WEIGHT,
                           t.keypair.public_key: GATEWAY_WEIGHT}, "master weight 0: the device key is worthless"
        assert doc["thresholds"] == {"low_threshold": 1, "med_threshold": 1, "high_threshold": 2}
        assert any(b.get("asset_code") == t.cfg.asset_code for b in doc["balances"])
        native = next(b for b in doc["balances"] if b["asset_type"] == "native")
        assert native["balance"] == "3.0000000", "the seed's starting balance"

        def set_options(signer: Keypair, target: str, weight: int) -> bool:
            seq = t.running.ledger.account(t.keypair.public_key).account.seq_num
            tx = (TransactionBuilder(Account(t.keypair.public_key, seq), t.cfg.network_passphrase, base_fee=100)
                  .append_set_options_op(signer=Signer.ed25519_public_key(target, weight), source=account_id)
                  .set_timeout(60).build())
            tx.sign(t.keypair)
            if signer is not t.keypair:
                tx.sign(signer)
            return t.running.ledger.submit(tx.to_xdr()).successful

        assert not set_options(t.keypair, t.utility.platform.public_key, 0), \
            "the gateway alone cannot remove the platform (HIGH)"
        assert not set_options(t.keypair, t.keypair.public_key, 2), "nor raise its own weight"
        # The platform takes the gateway's authority away with one HIGH set_options (README, Stellar).
        assert set_options(t.utility.platform, t.keypair.public_key, 0)
        signers = {s["key"]: s["weight"] for s in (await account(t.url, account_id))["signers"]}
        assert t.keypair.public_key not in signers


async def _active(t: Tenant, n: int) -> bool:
    return len(await t.accounts()) >= n


async def test_the_serial_is_read_from_the_meter_through_its_line_scheduler(tmp_path: Path) -> None:
    port = free_port()
    clock = SystemClock()
    profile = builtin_profile("eastron-sdm630")
    sim = MeterSimulator([SimulatedMeter(m, unit, profile, LoadModel.for_meter(m, clock.now()), serial=serial)
                          for m, unit, serial in (("a", 1, SDM630_SERIAL), ("b", 2, 555))], clock, port=port)
    text = (f'gateway_id = "{GW}"\n[stellar]\nhorizon_url = "http://127.0.0.1:1"\nnetwork_passphrase = "x"\n'
            f'asset_code = "KWH"\nasset_issuer = "{Keypair.random().public_key}"\n'
            f'platform_signer = "{Keypair.random().public_key}"\nrate = "0.001"\n'
            f'[[buses]]\nname = "l"\nhost = "127.0.0.1"\nport = {port}\ntimeout_s = 0.5\n'
            '[[buses.meters]]\nid = "a"\nunit_id = 1\nprofile = "eastron-sdm630"\n'
            '[[buses.meters]]\nid = "b"\nunit_id = 2\nprofile = "eastron-sdm630"\nserial = "99"\n')
    cfg = parse_config(text)
    await sim.start()
    status = GatewayStatus(GW, "", clock.now())

    async def discard(_: Reading) -> None:
        return None

    bus = ModbusBus(cfg.buses[0].model_copy(update={"meters": ()}), {}, clock, discard, status, use_lock=False)
    task = asyncio.create_task(bus.run())
    try:
        serials = MeterSerials(cfg, {"a": builtin_profile("eastron-sdm630"), "b": builtin_profile("eastron-sdm630")},
                               {"l": bus}.get)
        assert await serials("a") == str(SDM630_SERIAL)
        with pytest.raises(SerialUnavailable, match="reports serial 555 but its config says 99"):
            await serials("b")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sim.stop()


def _config(t: Tenant, tmp_path: Path, meters: list[str], sim_port: int) -> Path:
    path = tmp_path / "gateway.toml"
    lines = [f'gateway_id = "{GW}"', f'data_dir = "{tmp_path / "gateway"}"',
             *t.utility.config_lines(t.url, t.cfg.network_passphrase), "backoff_max_s = 1",
             "[[buses]]", 'name = "line"', 'host = "127.0.0.1"', f"port = {sim_port}", "timeout_s = 0.5",
             "[[buses.meters]]", 'id = "sdm"', "unit_id = 1", 'profile = "eastron-sdm630"',
             "[mqtt]", *[x for m in meters for x in ("[[mqtt.meters]]", f'id = "{m}"', f'topic = "{m}"',
                                                     'format = "number"', f'serial = "SN-{m}"')]]
    path.write_text("\n".join(lines) + "\n")
    return path


async def test_killing_provisioning_mid_way_and_rerunning_gives_exactly_one_account_per_meter(
        tmp_path: Path) -> None:
    meters = [f"m{i}" for i in range(1, 7)]
    sim_port = free_port()
    clock = SystemClock()
    sim = MeterSimulator([SimulatedMeter("sdm", 1, builtin_profile("eastron-sdm630"),
                                         LoadModel.for_meter("sdm", clock.now()), serial=SDM630_SERIAL)],
                         clock, port=sim_port)
    await sim.start()
    try:
        async with tenant(tmp_path) as t:
            (tmp_path / "gateway").mkdir(exist_ok=True)
            key = tmp_path / "gateway" / "gateway.key"
            key.write_text(t.keypair.secret + "\n")
            key.chmod(0o600)
            config = _config(t, tmp_path, meters, sim_port)
            # Answers lost after applying, refusals before: a kill lands between a submit and its record.
            t.running.faults.add(FaultRule("/transactions", (FaultMode.TIMEOUT_504_AFTER, FaultMode.OK,
                                                             FaultMode.RESET_AFTER, FaultMode.UNAVAILABLE_503),
                                           method="POST", repeat=True))
            rng = random.Random(8)
            cmd = [sys.executable, "-m", "gateway", "stellar", "provision", "--config", str(config)]
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            mid_way = 0
            for _ in range(6):
                proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.DEVNULL,
                                                            stderr=asyncio.subprocess.DEVNULL, env=env)
                loop = asyncio.get_running_loop()
                seen = t.running.faults.seen["/transactions"]
                # Kill once it has submitted something, then after 0-2 more submits or a random while:
                # timed from its first submit, not from its start (a loaded box takes seconds to import).
                started = loop.time() + PROVISION_START_S
                while t.running.faults.seen["/transactions"] == seen and loop.time() < started \
                        and proc.returncode is None:
                    await asyncio.sleep(0.01)
                deadline, more = loop.time() + rng.uniform(0.0, 1.5), rng.randrange(0, 3)
                while t.running.faults.seen["/transactions"] <= seen + more and loop.time() < deadline \
                        and proc.returncode is None:
                    await asyncio.sleep(0.01)
                with contextlib.suppress(ProcessLookupError):  # on a quiet box it may have finished first
                    proc.send_signal(signal.SIGKILL)
                await proc.wait()
                pending = await t.ledger.read_rows("SELECT COUNT(*) FROM stellar_txs WHERE state='pending'")
                mid_way += pending[0][0]
            assert mid_way >= 1, "some kill landed between storing an envelope and knowing its fate"
            t.running.faults.clear()
            proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE,
                                                        stderr=asyncio.subprocess.PIPE, env=env)
            out, err = await proc.communicate()
            assert proc.returncode == 0, (out.decode(), err.decode()[-2000:])
            assert out.decode().count(" active") == len(meters) + 1
            on_chain = await serial_accounts(t)
            expected = {f"SN-{m}" for m in meters} | {str(SDM630_SERIAL)}
            assert set(on_chain) == expected
            assert all(len(accounts) == 1 for accounts in on_chain.values()), on_chain
            assert sorted(a for accounts in on_chain.values() for a in accounts) == sorted(
                (await t.accounts()).values()), "every account on chain is the one the ledger knows"
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway", "stellar", "accounts", "--config", str(config), "--json",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
            out, err = await proc.communicate()
            listed = {r["meter"]: r for r in json.loads(out)}
            assert set(listed) == {*meters, "sdm"}, err.decode()
            assert listed["sdm"]["serial"] == str(SDM630_SERIAL)
            assert all(r["state"] == "active" and r["balance"] == "0.0000000" for r in listed.values())
    finally:
        await sim.stop()


async def test_an_account_made_before_the_ledger_was_lost_is_adopted_not_duplicated(tmp_path: Path) -> None:
    async with tenant(tmp_path) as t:
        await run_until(t.uplink(["m1"]), lambda: _active(t, 1))
        first = (await t.accounts())["m1"]
        async with t.ledger.write_transaction() as db:  # the box's ledger file was lost and restored empty
            await db.execute("DELETE FROM stellar_accounts")
            await db.execute("DELETE FROM stellar_txs")
        await run_until(t.uplink(["m1"]), lambda: _active(t, 1))
        assert (await t.accounts())["m1"] == first
        assert (await serial_accounts(t))["SN-m1"] == [first]
