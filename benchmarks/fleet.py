"""A fleet draining into the receiver on PostgreSQL: one receiver process, then two, on one database.

One command: ``.venv/bin/python benchmarks/fleet.py`` (``--quick`` for a smaller fleet; ``--help``)

N simulated gateways, each with its own ed25519 key, meters and backlog of signed, hash-chained
credits — built and serialised into batches *before* the timed part, as a box's outbox holds them —
drain concurrently (one asyncio task per gateway, one batch in flight each, as the uplink does) into
``python -m cloud_sync.receiver --db postgresql://…`` processes on loopback, on a real PostgreSQL
server (``cloud_sync.receiver.pg_sandbox``: Debian's binaries, fsync on, a fresh database per run).
Each gateway authenticates with its own enrolled token. With two receivers, batches alternate
between them (a round-robin load balancer). Every credit is verified (enrolled key, signature,
hash, domain, chain link, interval history) before it is stored.

Printed: credits/s with one and with two receivers and the ratio; the verification cost per credit
measured in-process on one core (and ed25519 alone); CPU time per credit of the receivers, the
PostgreSQL server and the senders during each run (from /proc), which says what bounds the rate;
and the check: every credit stored exactly once (0 lost, 0 duplicated, every chain 1..n).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # works without the editable install too

import asyncpg
import httpx
from stellar_sdk import Keypair

from benchmarks._common import REPO, T0_S, child_env
from cloud_sync.credit import GENESIS_HASH, CreditBody, sign
from cloud_sync.receiver.enrolment import new_token, token_digest
from cloud_sync.receiver.pg_sandbox import PgSandbox
from cloud_sync.receiver.snapshot import MemoryView
from cloud_sync.receiver.store_pg import PgStore
from cloud_sync.receiver_intake import Batch, examine_batch
from gateway.web.server import free_port

START_S = 30.0
"""A receiver process answers /healthz within a couple of seconds."""
POST_TIMEOUT_S = 120.0
"""A batch of 500 credits is answered in tens of milliseconds; this only bounds a stuck run."""
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Gateway:
    name: str
    token: str
    key: Keypair
    batches: list[tuple[str, bytes]]
    """(Idempotency-Key, body) in outbox order, serialised once as the box stores them."""
    credits: int


def build_gateway(index: int, credits: int, meters: int, batch_size: int) -> Gateway:
    """A gateway's backlog: ``credits`` interval credits over ``meters`` meters, signed and batched."""
    name = f"gw-{index:04d}"
    key = Keypair.from_raw_ed25519_seed(hashlib.sha256(f"fleet-bench-{index}".encode()).digest())
    per_meter = credits // meters
    wire: list[str] = []
    for m in range(meters):
        prev, register = GENESIS_HASH, 1_000_000 + 7919 * m
        for seq in range(1, per_meter + 1):
            wh = 100 + (seq * 37 + m) % 400
            body = CreditBody(gateway=name, gateway_key=key.public_key, meter=f"m{m:03d}", seq=seq,
                              start=T0_S + 900 * (seq - 1), end=T0_S + 900 * seq, wh=wh, quality="A",
                              register_start_wh=register, register_end_wh=register + wh, prev_hash=prev,
                              created_ms=(T0_S + 900 * seq) * 1000)
            signed = sign(body, key)
            wire.append(signed.wire_json())
            prev, register = signed.hash, register + wh
    # Outbox order: by time, meters interleaved, as the ledger creates them.
    order = sorted(range(len(wire)), key=lambda i: (i % per_meter, i // per_meter))
    ordered = [wire[i] for i in order]
    batches = []
    for first in range(0, len(ordered), batch_size):
        chunk = ordered[first:first + batch_size]
        batch_key = f"{name}:billing_api:{first + 1}-{first + len(chunk)}"
        head = json.dumps({"gateway": name, "batch": batch_key}, separators=(",", ":"))[:-1]
        batches.append((batch_key, f'{head},"credits":[{",".join(chunk)}]}}'.encode()))
    return Gateway(name, "", key, batches, len(ordered))


def verification_cost(gateway: Gateway) -> tuple[float, float]:
    """µs per credit of the receiver's whole examination (in-process, one core) and of ed25519 alone."""
    key, body = gateway.batches[0]
    credits = json.loads(body)["credits"]
    view = MemoryView({}, {}, {})
    started = time.perf_counter()
    result = examine_batch(Batch(gateway.name, key, credits), gateway.key.public_key, view)
    examined = time.perf_counter() - started
    assert result["accepted"] == len(credits), result
    from cloud_sync.credit import DOMAIN, canonical_bytes

    messages = [(DOMAIN + canonical_bytes(c["credit"]), __import__("base64").b64decode(c["signature"]))
                for c in credits]
    verifier = Keypair.from_public_key(gateway.key.public_key)
    started = time.perf_counter()
    for message, signature in messages:
        verifier.verify(message, signature)
    signatures = time.perf_counter() - started
    return examined / len(credits) * 1e6, signatures / len(credits) * 1e6


def _stat(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes (all their threads)."""
    return sum(int(f[11]) + int(f[12]) for f in map(_stat, pids) if f) / TICKS


def postgres_cpu_seconds(sandbox: PgSandbox) -> float:
    """The server's CPU: the postmaster, its exited children (cutime, cstime) and the live ones."""
    server = sandbox.server_pid
    own = _stat(server)
    total = sum(int(x) for x in own[11:15]) if own else 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) and int(fields[1]) == server:
            total += int(fields[11]) + int(fields[12])
    return total / TICKS


class Receivers:
    def __init__(self, db: str, count: int, log_dir: Path) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.urls: list[str] = []
        for n in range(count):
            port = free_port()
            log = (log_dir / f"receiver-{n}.log").open("wb")
            self.procs.append(subprocess.Popen([sys.executable, "-m", "cloud_sync.receiver", "--db", db,
                                                "--port", str(port)], cwd=REPO, env=child_env(), stdout=log,
                                               stderr=subprocess.STDOUT))
            self.urls.append(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + START_S
        for proc, url in zip(self.procs, self.urls, strict=True):
            while True:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"receiver at {url} did not start; see {log_dir}")
                try:
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.05)

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def drain(gateways: list[Gateway], urls: list[str]) -> float:
    """Every gateway sends its batches in order, one in flight; seconds until the last is answered."""
    async def one(index: int, gateway: Gateway, http: httpx.AsyncClient) -> None:
        for n, (key, body) in enumerate(gateway.batches):
            url = urls[(index + n) % len(urls)]
            response = await http.post(f"{url}/v1/batches", content=body, headers={
                "Idempotency-Key": key, "Content-Type": "application/json",
                "Authorization": f"Bearer {gateway.token}"})
            answer = response.json()
            if response.status_code != 200 or answer["rejected"] or answer["duplicate"]:
                raise RuntimeError(f"{gateway.name} batch {key}: HTTP {response.status_code} {response.text[:300]}")

    limits = httpx.Limits(max_connections=len(gateways) * len(urls), max_keepalive_connections=len(gateways))
    async with httpx.AsyncClient(timeout=POST_TIMEOUT_S, limits=limits) as http:
        started = time.perf_counter()
        async with asyncio.TaskGroup() as tasks:
            for index, gateway in enumerate(gateways):
                tasks.create_task(one(index, gateway, http))
        return time.perf_counter() - started


async def enrol_all(db: str, gateways: list[Gateway]) -> None:
    store = await PgStore.open(db)
    try:
        for gateway in gateways:
            gateway.token = new_token()
            await store.enrol(gateway.name, gateway.key.public_key, token_digest(gateway.token), 0)
    finally:
        await store.close()


async def check(db: str, gateways: list[Gateway], meters: int) -> tuple[int, int, int, float]:
    """(stored, lost, duplicated, bytes on disk per credit), and every meter's chain is exactly 1..n."""
    conn = await asyncpg.connect(db)
    try:
        await conn.execute("VACUUM ANALYZE credits")
        size = await conn.fetchval("SELECT pg_total_relation_size('credits')")
        stored = await conn.fetchval("SELECT COUNT(*) FROM credits")
        distinct = await conn.fetchval("SELECT COUNT(*) FROM (SELECT DISTINCT gateway, meter, seq FROM credits) d")
        chains = await conn.fetch("SELECT gateway, meter, COUNT(*) AS n, MIN(seq) AS a, MAX(seq) AS b FROM credits "
                                  "GROUP BY gateway, meter")
    finally:
        await conn.close()
    per_meter = {g.name: g.credits // meters for g in gateways}
    broken = [r for r in chains if not (r["a"] == 1 and r["b"] == r["n"] == per_meter[r["gateway"]])]
    if broken or len(chains) != len(gateways) * meters:
        raise RuntimeError(f"chains not stored exactly once: {len(chains)} meters, e.g. {broken[:3]}")
    sent = sum(g.credits for g in gateways)
    return int(stored), sent - int(distinct), int(stored) - int(distinct), size / max(1, stored)


def run(sandbox: PgSandbox, gateways: list[Gateway], meters: int, count: int, log_dir: Path) -> dict[str, float]:
    db = sandbox.create_database(f"fleet_{count}")
    asyncio.run(enrol_all(db, gateways))
    receivers = Receivers(db, count, log_dir)
    try:
        pids = [p.pid for p in receivers.procs]
        before = (cpu_seconds(pids), postgres_cpu_seconds(sandbox), time.process_time())
        elapsed = asyncio.run(drain(gateways, receivers.urls))
        sender_after, receivers_after = time.process_time(), cpu_seconds(pids)
    finally:
        receivers.stop()
    time.sleep(0.5)  # the receivers' server connections end and are reaped: their CPU moves to cutime
    after = (receivers_after, postgres_cpu_seconds(sandbox), sender_after)
    stored, lost, duplicated, per_credit = asyncio.run(check(db, gateways, meters))
    total = sum(g.credits for g in gateways)
    return {"elapsed": elapsed, "rate": total / elapsed, "stored": stored, "lost": lost, "duplicated": duplicated,
            "bytes": per_credit,
            "receiver_us": (after[0] - before[0]) / total * 1e6, "pg_us": (after[1] - before[1]) / total * 1e6,
            "sender_us": (after[2] - before[2]) / total * 1e6}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gateways", type=int, default=20)
    parser.add_argument("--credits", type=int, default=5000, help="backlog per gateway")
    parser.add_argument("--meters", type=int, default=10, help="meters per gateway")
    parser.add_argument("--batch-size", type=int, default=500, help="the uplink's default batch_size")
    parser.add_argument("--quick", action="store_true", help="10 gateways x 2000 credits")
    args = parser.parse_args()
    if args.quick:
        args.gateways, args.credits = 10, 2000
    started = time.perf_counter()
    gateways = [build_gateway(i, args.credits, args.meters, args.batch_size) for i in range(args.gateways)]
    total = sum(g.credits for g in gateways)
    print(f"fleet: {args.gateways} gateways x {args.credits} credits ({args.meters} meters each), batches of "
          f"{args.batch_size}: {total} credits signed and batched in {time.perf_counter() - started:.1f} s "
          "(not timed)")
    examined_us, ed25519_us = verification_cost(gateways[0])
    print(f"verification per credit, in-process on one core: {examined_us:.0f} µs for the receiver's whole "
          f"examination (ed25519 alone {ed25519_us:.0f} µs)")
    with PgSandbox(fsync=True) as sandbox:
        print(f"PostgreSQL {sandbox.bindir.parent.name} on 127.0.0.1:{sandbox.port} (fsync on, a fresh database "
              f"per run), {os.cpu_count()} cores shared by the senders, the receivers and the server")
        results = {}
        for count in (1, 2):
            result = run(sandbox, gateways, args.meters, count, sandbox.root)
            results[count] = result
            print(f"{count} receiver{'s' if count > 1 else ' '}: {total} credits in {result['elapsed']:.2f} s = "
                  f"{result['rate']:,.0f} credits/s; CPU per credit: receivers {result['receiver_us']:.0f} µs, "
                  f"PostgreSQL {result['pg_us']:.0f} µs, senders {result['sender_us']:.0f} µs; "
                  f"{result['lost']} lost, {result['duplicated']} duplicated")
    ratio = results[2]["rate"] / results[1]["rate"]
    print(f"ratio two/one receivers: {ratio:.2f}")
    cores = os.cpu_count() or 1
    for count, r in results.items():
        cpu = r["receiver_us"] + r["pg_us"] + r["sender_us"]
        used = cpu * r["rate"] / 1e6
        print(f"bound ({count} receiver{'s' if count > 1 else ''}): {cpu:.0f} µs of CPU per credit in all; the run got "
              f"{used:.2f} of the {cores} cores (the rest went to other work on the machine); on {cores} idle cores "
              f"this cost allows about {cores / cpu * 1e6:,.0f} credits/s"
              + ("" if count > 1 else "; one receiver is one Python process, so it also stops at one core's "
                 f"receiver work, about {1e6 / r['receiver_us']:,.0f} credits/s"))
    print(f"storage: {results[1]['bytes']:,.0f} bytes on disk per credit (table, TOAST and both indexes)")
    print(f"of a credit's receiver CPU, verification is {examined_us:.0f} µs (ed25519 {ed25519_us:.0f} µs): the rest "
          "is HTTP, JSON decoding, the stored copy and the database round trips")
    ok = all(r["lost"] == 0 and r["duplicated"] == 0 for r in results.values())
    print("check: " + ("0 lost, 0 duplicated in both runs; every chain 1..n" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
