"""Several receiver processes on one PostgreSQL: the same batch twice at once, and SIGKILL mid-batch.

Real receivers (``python -m cloud_sync.receiver --db postgresql://…``) as subprocesses on loopback,
started together on a fresh database (so they also migrate it together), a real server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from receiver_kit import GW, KEY, TOKEN, batch_bytes, honest_chain

from cloud_sync.credit import ChainTip, verify
from cloud_sync.receiver.pg_sandbox import PgSandbox
from cloud_sync.receiver.store_pg import APPLICATION_NAME
from gateway.web.server import free_port

START_S = 30.0
"""A receiver starts in about a second; this bounds a slow start on a loaded CI box."""
POST_TIMEOUT_S = 60.0
IN_FLIGHT_S = 30.0
"""How long to wait to see a receiver inside a batch's transaction (it enters it within a second)."""


class Receiver:
    def __init__(self, db: str, token_file: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "cloud_sync.receiver", "--db", db, "--port",
                                      str(self.port), "--enroll", f"{GW}={KEY.public_key}",
                                      "--token-file", str(token_file)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"receiver exited: {self.proc.communicate()[1]}"
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        raise AssertionError("receiver did not start")

    def stop(self) -> None:
        if self.proc.stderr is None or self.proc.stderr.closed:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.communicate()


@pytest.fixture
def receivers(pg_server: PgSandbox, tmp_path: Path) -> Iterator[tuple[str, list[Receiver]]]:
    db = pg_server.create_database()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    started = [Receiver(db, token_file), Receiver(db, token_file)]
    try:
        for receiver in started:
            receiver.wait_ready()
        yield db, started
    finally:
        for receiver in started:
            receiver.stop()


def _chains(meters: int, per_meter: int) -> dict[str, list[dict[str, Any]]]:
    return {f"m{i}": honest_chain(per_meter, meter=f"m{i}") for i in range(meters)}


def _batches(chains: dict[str, list[dict[str, Any]]], per_meter: int) -> list[list[dict[str, Any]]]:
    length = len(next(iter(chains.values())))
    return [[c for chain in chains.values() for c in chain[k:k + per_meter]] for k in range(0, length, per_meter)]


async def _post(http: httpx.AsyncClient, url: str, credits: list[Any], key: str) -> httpx.Response:
    return await http.post(f"{url}/v1/batches", content=batch_bytes(credits, key),
                           headers={"Idempotency-Key": key, "Content-Type": "application/json",
                                    "Authorization": f"Bearer {TOKEN}"})


async def _stored(db: str) -> list[tuple[str, int, str]]:
    conn = await asyncpg.connect(db)
    try:
        return [(r["meter"], r["seq"], r["wire"]) for r in
                await conn.fetch("SELECT meter, seq, wire FROM credits WHERE gateway = $1 ORDER BY meter, seq", GW)]
    finally:
        await conn.close()


def _check_chains(stored: list[tuple[str, int, str]], chains: dict[str, list[dict[str, Any]]]) -> None:
    """Every credit stored exactly once, in order, each a verified link of its meter's chain."""
    by_meter: dict[str, list[tuple[int, str]]] = {}
    for meter, seq, wire in stored:
        by_meter.setdefault(meter, []).append((seq, wire))
    assert set(by_meter) == set(chains)
    for meter, rows in by_meter.items():
        assert [seq for seq, _ in rows] == list(range(1, len(chains[meter]) + 1)), f"{meter}: once each, no gap"
        tip = None
        for (_, wire), sent in zip(rows, chains[meter], strict=True):
            item = json.loads(wire)
            assert item == sent
            body, digest = verify(item, expected_key=KEY.public_key, tip=tip)
            tip = ChainTip(body["seq"], digest)


async def test_two_receivers_given_the_same_batches_at_once_store_each_credit_once(
        receivers: tuple[str, list[Receiver]]) -> None:
    db, (one, two) = receivers
    chains = _chains(meters=5, per_meter=600)
    batches = _batches(chains, per_meter=200)  # 1000 credits each: both receivers are inside it together
    async with httpx.AsyncClient(timeout=POST_TIMEOUT_S) as http:
        for n, batch in enumerate(batches):
            # The same bytes under the same key to both, and under a second key to both: four at once.
            answers = await asyncio.gather(_post(http, one.url, batch, f"a{n}"), _post(http, two.url, batch, f"a{n}"),
                                           _post(http, one.url, batch, f"b{n}"), _post(http, two.url, batch, f"b{n}"))
            assert [a.status_code for a in answers] == [200] * 4, [a.text[:200] for a in answers]
            bodies = [a.json() for a in answers]
            fresh = [b for b in bodies if not b.get("replayed")]
            assert sum(b["accepted"] for b in fresh) == len(batch), "each credit accepted by exactly one answer"
            assert all(b["rejected"] == 0 for b in bodies)
            for b in fresh:
                assert b["accepted"] + b["duplicate"] == len(batch)
    _check_chains(await _stored(db), chains)


IN_VERIFICATION = "xact_start IS NOT NULL"
"""A batch's transaction is open: the gateway's row locked, its credits being read, verified or stored."""
IN_STORING = "query LIKE 'COPY%'"
"""The batch's verified credits are being (or have just been) copied in, before its answer is recorded."""


async def _kill_when(db: str, receiver: Receiver, sending: asyncio.Task[httpx.Response], moment: str,
                     delay_s: float) -> None:
    """SIGKILL ``receiver`` ``delay_s`` after one of its connections is at ``moment``; wait for the server to notice."""
    monitor = await asyncpg.connect(db)
    try:
        query = (f"SELECT pid FROM pg_stat_activity WHERE application_name = $1 "
                 f"AND datname = current_database() AND {moment}")
        async with asyncio.timeout(IN_FLIGHT_S):
            while not (backend := await monitor.fetchval(query, APPLICATION_NAME)):
                assert not sending.done(), "the batch finished before it was seen in flight"
        await asyncio.sleep(delay_s)
        os.kill(receiver.proc.pid, signal.SIGKILL)
        with contextlib.suppress(httpx.TransportError):  # killed before it answered (or, late, after)
            await sending
        async with asyncio.timeout(IN_FLIGHT_S):  # the server notices the dropped connection and rolls back
            while await monitor.fetchval("SELECT COUNT(*) FROM pg_stat_activity WHERE pid = $1", backend):
                await asyncio.sleep(0.02)
    finally:
        await monitor.close()


KILLS = ((IN_VERIFICATION, 0.0), (IN_STORING, 0.0), (IN_STORING, 0.01))
"""When each receiver dies: while it verifies, and at two moments between the start of storing and its commit."""


async def test_a_receiver_killed_mid_batch_loses_and_duplicates_nothing(
        receivers: tuple[str, list[Receiver]], tmp_path: Path) -> None:
    db, (victim, survivor) = receivers
    chains = _chains(meters=5, per_meter=500 * len(KILLS) + 100)
    batches = _batches(chains, per_meter=500)  # 2500 credits each: a quarter of a second inside the transaction
    outcomes = []
    async with httpx.AsyncClient(timeout=POST_TIMEOUT_S) as http:
        for n, (moment, delay_s) in enumerate(KILLS):
            if n:
                victim = Receiver(db, tmp_path / "token")
                victim.wait_ready()
            try:
                sending = asyncio.create_task(_post(http, victim.url, batches[n], f"k{n}"))
                await _kill_when(db, victim, sending, moment, delay_s)
            finally:
                victim.stop()
            stored = len(await _stored(db)) - n * len(batches[0])
            assert stored in (0, len(batches[n])), f"kill {n}: {stored} credits of the batch stored: all or nothing"
            outcomes.append(stored)
            # The gateway retries the same bytes, reaching the other receiver.
            answer = await _post(http, survivor.url, batches[n], f"k{n}")
            assert answer.status_code == 200, answer.text[:300]
            expected = {"accepted": len(batches[n])} if not stored else {"replayed": True}
            assert {k: answer.json().get(k) for k in expected} == expected
        for n, batch in enumerate(batches[len(KILLS):], len(KILLS)):
            assert (await _post(http, survivor.url, batch, f"k{n}")).json()["accepted"] == len(batch)
    assert outcomes[0] == 0, "killed while verifying: nothing stored"
    _check_chains(await _stored(db), chains)
