"""Draining a Stellar backlog: 10 000 credits paid to their meters' accounts, 100 payments per transaction.

One command: ``.venv/bin/python benchmarks/stellar_sync.py`` (``--credits N``, ``--meters M``)

A local ledger runs as its own process (``meter-gateway stellar ledger``, real time, a ledger every
5 s). The tenant is onboarded and every meter's account made first (not measured). Then, each in
a child process of its own so their peak RSS (VmHWM) compares like with like:

* gateway: opens the ledger file and runs ``StellarUplink.drain`` until the backlog is 0 — per
  transaction: a batch recorded, the network's latest ledger and the account's sequence read, 100
  payments built and signed, the envelope stored (fsync) before it is submitted, settled (fsync);
* baseline: a raw loop POSTing pre-built, pre-signed envelopes of 100 payments each (the issuer
  paying the same accounts), one after another, to the same ledger — no ledger file, no reads.

The baseline runs before and after the gateway (their mean is the baseline). Printed: credits/s
both ways, their ratio (the target is at least 0.5: the gateway's bookkeeping costs at most as much
as the network's own work), operations per transaction, and the peak RSS of each child.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # works without the editable install too

from benchmarks._common import GATEWAY_ID, T0_S, child_env, peak_rss_kb

LEDGER_START_S = 30.0
"""A cold start imports stellar-sdk, starlette and uvicorn: seconds on a loaded box."""
DRAIN_DEADLINE_S = 1800.0


def _start_ledger(data_dir: Path) -> tuple[subprocess.Popen[str], str, str]:
    proc = subprocess.Popen([sys.executable, "-m", "cloud_sync.horizon", "--listen", "127.0.0.1:0",
                             "--data-dir", str(data_dir)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env={**child_env(), "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    url = passphrase = ""
    deadline = time.monotonic() + LEDGER_START_S
    while time.monotonic() < deadline and not (url and passphrase):
        line = proc.stdout.readline()
        if line.startswith("local ledger: "):
            url = line.split(": ", 1)[1].strip()
        elif line.startswith("network passphrase: "):
            passphrase = line.split(": ", 1)[1].strip()
    if not url:
        proc.kill()
        raise SystemExit("the local ledger did not start")
    return proc, url, passphrase


def _meters(n: int) -> list[str]:
    return [f"m{i:03d}" for i in range(n)]


async def _prepare(work: Path, url: str, passphrase: str, credits: int, n_meters: int) -> dict[str, Any]:
    from stellar_sdk import Keypair

    from cloud_sync.stellar.uplink import StellarUplink
    from gateway.clock import SystemClock
    from gateway.config import StellarConfig
    from gateway.intervals import Reading
    from gateway.ledger.store import Ledger
    from gateway.sim.utility import Utility, onboard

    keypair = Keypair.random()
    utility = Utility(Keypair.random(), Keypair.random(), Keypair.random())
    await onboard(utility, url, passphrase, keypair.public_key, gateway_key=keypair, allowance="900000000")
    cfg = {"horizon_url": url, "network_passphrase": passphrase, "asset_code": utility.asset_code,
           "asset_issuer": utility.issuer.public_key, "platform_signer": utility.platform.public_key,
           "rate": "0.001"}
    meters = _meters(n_meters)
    ledger = await Ledger.open(work / "gateway", gateway_id=GATEWAY_ID, keypair=keypair)
    try:
        per_meter = credits // n_meters
        for meter in meters:  # a reading on every boundary: one credit per interval
            readings = [Reading(meter, (T0_S + k * 900) * 1000, 100_000 + 137 * k) for k in range(per_meter + 1)]
            await ledger.commit_readings(readings, now_ms=int(time.time() * 1000))

        async def serial(meter: str) -> str:
            return f"SN-{meter}"

        uplink = StellarUplink(StellarConfig.model_validate(cfg), ledger, SystemClock(), keypair, meters=meters,
                               serials=serial)
        shown = await uplink.provision(meters)
        accounts = {m: a.account for m, a in shown.items()}
        assert all(a.state == "active" for a in shown.values()), shown
        backlog = (await ledger.uplink_summary("stellar")).backlog
    finally:
        await ledger.close()
    return {"config": cfg, "gateway_secret": keypair.secret, "issuer_secret": utility.issuer.secret,
            "accounts": accounts, "meters": meters, "backlog": backlog, "gateway_dir": str(work / "gateway")}


async def _drain(spec: dict[str, Any]) -> dict[str, Any]:
    from stellar_sdk import Keypair

    from cloud_sync.stellar.uplink import StellarUplink
    from gateway.clock import SystemClock
    from gateway.config import StellarConfig
    from gateway.ledger.store import Ledger

    keypair = Keypair.from_secret(spec["gateway_secret"])
    ledger = await Ledger.open(Path(spec["gateway_dir"]), gateway_id=GATEWAY_ID, keypair=keypair)
    try:
        async def serial(meter: str) -> str:
            return f"SN-{meter}"

        uplink = StellarUplink(StellarConfig.model_validate(spec["config"]), ledger, SystemClock(), keypair,
                               meters=spec["meters"], serials=serial)
        t0 = time.perf_counter()
        paid = await uplink.drain(DRAIN_DEADLINE_S)
        seconds = time.perf_counter() - t0
        left = (await ledger.uplink_summary("stellar")).backlog
        rows = await ledger.read_rows("SELECT COUNT(*) FROM stellar_txs WHERE purpose='credit' AND state='applied'")
    finally:
        await ledger.close()
    return {"credits": paid, "seconds": seconds, "left": left, "transactions": int(rows[0][0]),
            "peak_rss_kb": peak_rss_kb()}


async def _raw(spec: dict[str, Any]) -> dict[str, Any]:
    import httpx
    from stellar_sdk import Account, Asset, Keypair, TransactionBuilder

    cfg = spec["config"]
    issuer = Keypair.from_secret(spec["issuer_secret"])
    asset = Asset(cfg["asset_code"], cfg["asset_issuer"])
    accounts = list(spec["accounts"].values())
    n_tx = spec["backlog"] // 100
    async with httpx.AsyncClient(timeout=60) as http:
        doc = (await http.get(f"{cfg['horizon_url']}/accounts/{issuer.public_key}")).json()
        seq = int(doc["sequence"])
        envelopes = []
        for i in range(n_tx):
            builder = TransactionBuilder(Account(issuer.public_key, seq + i), cfg["network_passphrase"],
                                         base_fee=100).set_timeout(3600)
            for k in range(100):
                builder.append_payment_op(accounts[(i * 100 + k) % len(accounts)], asset, "0.1370000")
            tx = builder.build()
            tx.sign(issuer)
            envelopes.append(tx.to_xdr())
        t0 = time.perf_counter()
        for envelope in envelopes:
            resp = await http.post(f"{cfg['horizon_url']}/transactions", data={"tx": envelope})
            assert resp.status_code == 200, resp.text[:300]
        seconds = time.perf_counter() - t0
    return {"credits": n_tx * 100, "seconds": seconds, "transactions": n_tx, "peak_rss_kb": peak_rss_kb()}


def _child(kind: str, spec_path: Path) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--child", kind, str(spec_path)], capture_output=True, text=True,
                         env=child_env(), check=False)
    if out.returncode != 0:
        raise SystemExit(f"{kind} child failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--credits", type=int, default=10_000)
    parser.add_argument("--meters", type=int, default=20)
    parser.add_argument("--child", nargs=2, metavar=("KIND", "SPEC"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, spec_file = args.child
        from gateway import logs

        logs.configure("error", "json")
        spec = json.loads(Path(spec_file).read_text())
        result = asyncio.run(_drain(spec) if kind == "drain" else _raw(spec))
        print(json.dumps(result))
        return

    work = Path(tempfile.mkdtemp(prefix="stellar-bench-"))
    ledger, url, passphrase = _start_ledger(work / "horizon")
    try:
        from gateway import logs

        logs.configure("error", "json")
        t0 = time.perf_counter()
        spec = asyncio.run(_prepare(work, url, passphrase, args.credits, args.meters))
        print(f"prepared {spec['backlog']} credits of {args.meters} meters, accounts made, in "
              f"{time.perf_counter() - t0:.1f} s (not measured)")
        spec_path = work / "spec.json"
        spec_path.write_text(json.dumps(spec))
        raw_1 = _child("raw", spec_path)
        gateway = _child("drain", spec_path)
        raw_2 = _child("raw", spec_path)
    finally:
        ledger.terminate()
        ledger.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)
    raw_rate = (raw_1["credits"] / raw_1["seconds"] + raw_2["credits"] / raw_2["seconds"]) / 2
    rate = gateway["credits"] / gateway["seconds"]
    ops = gateway["credits"] / max(gateway["transactions"], 1)
    print(f"gateway uplink : {gateway['credits']} credits in {gateway['seconds']:.1f} s = {rate:.0f} credits/s, "
          f"{gateway['transactions']} transactions ({ops:.0f} payments each), backlog left {gateway['left']}")
    print(f"raw submit loop: {raw_1['credits'] / raw_1['seconds']:.0f} and {raw_2['credits'] / raw_2['seconds']:.0f} "
          f"credits/s (pre-built envelopes of 100 payments, same ledger)")
    print(f"ratio {rate / raw_rate:.2f} (target >= 0.5)")
    print(f"peak RSS: gateway drainer {gateway['peak_rss_kb'] / 1024:.1f} MiB, raw loop "
          f"{max(raw_1['peak_rss_kb'], raw_2['peak_rss_kb']) / 1024:.1f} MiB")
    if gateway["left"] or rate / raw_rate < 0.5 or gateway["transactions"] > -(-gateway["credits"] // 100):
        raise SystemExit(1)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
