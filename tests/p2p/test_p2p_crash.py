"""SIGKILL safety: the uplink (and the planner) as a real process, killed and restarted on the same ledger.

The local network runs in this process (it survives every kill); the child talks to it over HTTP.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import select
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from stellar_sdk import Keypair as SdkKeypair

from cloud_sync.keys import Keypair
from cloud_sync.soroban_rpc.rpc import FaultRule, RpcFaults
from cloud_sync.soroban_rpc.server import RunningNetwork
from cloud_sync.soroban_rpc.testing import Driver, run_network_thread
from gateway.clock import ManualClock
from gateway.ledger.store import Ledger
from gateway.p2p.planner import Decision, Terms
from gateway.p2p.record import verify
from gateway.p2p.store import Agreement, P2PStore

CHILD = Path(__file__).with_name("uplink_child.py")
GATEWAY_ID = "gw-crash"
WAIT_S = 60.0
"""Host seconds a condition may take before the test gives up (far more than it needs)."""
DAY = 86_400
T0 = 1_767_225_600


@dataclass
class Rig:
    net: RunningNetwork
    d: Driver
    faults: RpcFaults
    gateway: Keypair
    provider: SdkKeypair
    consumer: SdkKeypair
    data: Path
    spec_path: Path

    def spec(self, agreements: list[dict[str, object]] | None = None) -> Path:
        key_file = self.data.parent / "gateway.key"
        key_file.write_text(self.gateway.secret)
        self.spec_path.write_text(json.dumps({
            "data_dir": str(self.data), "gateway_id": GATEWAY_ID, "key_file": str(key_file),
            "soroban": {"rpc_url": self.net.rpc_url, "contract_id": self.net.contract_id,
                        "network_passphrase": self.net.network_passphrase, "backoff_max_s": 1, "timeout_s": 10},
            "agreements": agreements or []}))
        return self.spec_path

    def start(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, str(CHILD), str(self.spec_path)], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, cwd=CHILD.parents[2])

    def agreement(self, kwh: int) -> int:
        now = int(self.net.node.ledger.latest_closed().closed_at)
        return self.d.create_agreement(self.provider.public_key, self.consumer.public_key, kwh, 50, now + DAY,
                                       SdkKeypair.from_secret(self.gateway.secret))

    def contract_deliveries(self) -> list[tuple[int, int]]:
        txs = self.net.node.contract.state.transactions.values()
        return sorted((t.agreement_id, t.energy_delivered_kwh) for t in txs)

    def rows(self, sql: str) -> list[tuple[object, ...]]:
        with sqlite3.connect(self.data / "ledger.db") as conn:
            return conn.execute(sql).fetchall()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    faults = RpcFaults()
    # The network's clock stands still (its ledger times are what bounds and deadlines are checked against).
    with run_network_thread(tmp_path / "net", ManualClock(start=float(T0)), faults) as net:
        d = Driver(net)
        gateway = Keypair.random()
        d.ledger.friendbot(gateway.public_key)
        sdk_gateway = SdkKeypair.from_secret(gateway.secret)
        provider = d.custodial_account(sdk_gateway)
        consumer = d.account()
        d.setup([provider.public_key, consumer.public_key],
                {provider.public_key: sdk_gateway, consumer.public_key: consumer})
        yield Rig(net, d, faults, gateway, provider, consumer, tmp_path / "gw", tmp_path / "spec.json")


def wait_until(what: str, ok: object) -> None:
    deadline = time.monotonic() + WAIT_S
    while not ok():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)


def kill(proc: subprocess.Popen[bytes]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def finish(rig: Rig) -> None:
    proc = rig.start()
    try:
        out, _ = proc.communicate(timeout=WAIT_S * 2)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert b"done" in out


def insert_record(rig: Rig, aid: int, kwh: int) -> None:
    async def go() -> None:
        ledger = await Ledger.open(rig.data, gateway_id=GATEWAY_ID, keypair=rig.gateway)
        try:
            a = Agreement(Terms(aid, kwh, 0, 2**40), "solar-1", rig.provider.public_key)
            await P2PStore(ledger).insert_record(Decision(aid, kwh, "quantity", (), 0, 0, 777, 0), a,
                                                 gateway=GATEWAY_ID, keypair=rig.gateway, now=time.time())
        finally:
            await ledger.close()
    asyncio.run(go())


def test_sigkill_between_send_and_confirmation(rig: Rig) -> None:
    """(c) the contract applied the delivery, the confirmation never came, the process died: once, still."""
    aid = rig.agreement(10)
    insert_record(rig, aid, 10)
    rig.spec()
    # The first two lookups answer (NOT_FOUND: not sent yet), every later one fails: the child sends and
    # then cannot learn the outcome.
    rig.faults.add(FaultRule("getTransaction", ("ok", "ok")))
    rig.faults.add(FaultRule("getTransaction", mode="503", probability=1.0))
    proc = rig.start()
    try:
        wait_until("the contract to apply the delivery", lambda: rig.contract_deliveries() == [(aid, 10)])
        wait_until("a failed confirmation", lambda: rig.faults.delivered["getTransaction:503"] >= 1)
    finally:
        kill(proc)
    assert rig.rows("SELECT state FROM p2p_txs") == [("pending",)]  # stored before the send, still unsettled
    assert rig.rows("SELECT state FROM p2p_deliveries") == [("pending",)]
    rig.faults.clear()
    before = len(rig.faults.calls)
    finish(rig)
    assert rig.faults.calls[before] == "getTransaction"  # after the restart: asked first, nothing sent blind
    assert "sendTransaction" not in rig.faults.calls[before:]
    assert rig.contract_deliveries() == [(aid, 10)]
    assert rig.rows("SELECT state, contract_tx_id FROM p2p_deliveries") == [("delivered", 1)]
    assert rig.rows("SELECT state FROM p2p_txs") == [("applied",)]


KILLS = 30
AGREEMENTS = 24
KILL_AFTER_S = (0.02, 0.35)
"""Host seconds after the child says it is ready (imports done, ledger open) before it is killed."""


def wait_ready(proc: subprocess.Popen[bytes]) -> bool:
    """Until the child has printed "ready" (True), or ended (False)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.1)
        if ready:
            line = proc.stdout.readline()
            if line.startswith(b"ready"):
                return True
            if not line:
                return False
    raise AssertionError("the child never got ready")


def has_export_series(tmp: Path) -> bool:
    """Whether this ledger stores export intervals (the "channels" work: intervals.channel)."""
    async def probe() -> bool:
        led = await Ledger.open(tmp, gateway_id=GATEWAY_ID, keypair=Keypair.random())
        try:
            return any(r[1] == "channel" for r in await led.read_rows("PRAGMA table_info(intervals)"))
        finally:
            await led.close()
    return asyncio.run(probe())


@pytest.mark.parametrize("made_by", ["planner", "direct"])
def test_crash_loop_each_agreement_delivered_once(rig: Rig, made_by: str, tmp_path: Path) -> None:
    """30 SIGKILLs while records are made (by the planner from export readings the child commits, or
    directly) and sent over an RPC that times out after applying, says TRY_AGAIN_LATER and 503."""
    if made_by == "planner" and not has_export_series(tmp_path / "probe"):
        pytest.skip("this ledger has no export intervals yet (intervals.channel lands with the channels work)")
    rnd = random.Random(9)
    kwhs = [1 + i % 3 for i in range(AGREEMENTS)]  # 48 kWh in all
    ids = [rig.agreement(k) for k in kwhs]
    now = int(time.time())
    t0 = (now - 2 * DAY) // 900 * 900
    agreements = [{"id": aid, "kwh": k, "start": t0, "deadline": now + 30 * DAY, "meter": "solar-1",
                   "provider": rig.provider.public_key} for aid, k in zip(ids, kwhs, strict=True)]
    rig.spec(agreements if made_by == "planner" else [])
    spec = json.loads(rig.spec_path.read_text())
    # 600 readings, 5 minutes apart, 100 Wh each: 199 export intervals of 300 Wh (59.7 kWh).
    spec["feed"] = ({"kind": "readings", "meter": "solar-1", "t0": t0, "step_s": 300, "readings": 600,
                     "wh0": 5_000_000, "wh_per_step": 100, "per_commit": 12} if made_by == "planner" else
                    {"kind": "records", "agreements": agreements})
    spec["pause_s"] = 0.05
    rig.spec_path.write_text(json.dumps(spec))
    for rule in (FaultRule("sendTransaction", mode="timeout_after", probability=0.25, seed=1),
                 FaultRule("sendTransaction", mode="try_again_later", probability=0.2, seed=2),
                 FaultRule("getTransaction", mode="503", probability=0.2, seed=3),
                 FaultRule("simulateTransaction", mode="503", probability=0.1, seed=4)):
        rig.faults.add(rule)
    kills = 0
    midway = 0
    """Kills with records decided and not all delivered yet: the window this test is about."""
    while kills < KILLS:
        proc = rig.start()
        if not wait_ready(proc):
            proc.wait()
            break
        time.sleep(rnd.uniform(*KILL_AFTER_S))
        if proc.poll() is not None:
            proc.wait()
            break  # it finished: the work was too short for the kills asked for
        kill(proc)
        kills += 1
        if 0 < len(rig.contract_deliveries()) < AGREEMENTS:
            midway += 1
    assert kills == KILLS, f"the child finished all work after only {kills} kills"
    decided = rig.rows("SELECT COUNT(*) FROM p2p_deliveries")[0][0]
    delivered = len(rig.contract_deliveries())
    rig.faults.clear()
    finish(rig)
    # Each agreement once on the contract, with the agreed kWh; nothing else delivered.
    assert rig.contract_deliveries() == sorted(zip(ids, kwhs, strict=True))
    rows = rig.rows("SELECT agreement_id, state, contract_tx_id, body, signature FROM p2p_deliveries ORDER BY id")
    assert [(r[0], r[1]) for r in rows] == [(aid, "delivered") for aid in ids]
    assert len({r[2] for r in rows}) == AGREEMENTS
    assert rig.rows("SELECT COUNT(*) FROM p2p_txs WHERE state='applied'") == [(AGREEMENTS,)]
    assert rig.rows("SELECT COUNT(*) FROM p2p_txs WHERE state='pending'") == [(0,)]
    for row in rows:
        assert verify(str(row[3]).encode(), str(row[4]), rig.gateway.public_key)
    if made_by == "planner":
        # No Wh created or lost along the meter's chain.
        bodies = [json.loads(str(r[3])) for r in rows]
        carry = 0
        for body in bodies:
            assert body["carry_in_wh"] == carry
            assert (body["carry_in_wh"] + body["covered_wh"]
                    == body["energy_delivered_kwh"] * 1000 + body["carry_out_wh"])
            carry = body["carry_out_wh"]
        covered = rig.rows("SELECT COALESCE(SUM(wh), 0) FROM intervals WHERE meter='solar-1' AND channel='export' "
                           "AND start < (SELECT MAX(covered_until) FROM p2p_deliveries)")[0][0]
        assert covered == sum(kwhs) * 1000 + carry
    assert midway >= KILLS // 2, f"only {midway} kills landed between the first and the last delivery"
    print(f"kills={kills} midway={midway} decided_at_last_kill={decided} delivered_at_last_kill={delivered} "
          f"faults={dict(rig.faults.delivered)}")
