"""The one-off read API of a real daemon process under abuse: a flood, device files, secret files.

Before: 32 queued one-off reads turned every further one into a 500 with a full traceback in the log,
``?profile=/dev/zero`` grew the daemon by gigabytes in seconds, and a secret file's values came back
in the error. The daemon runs here as ``python -m gateway run`` with an address-space limit, so the
old behaviour fails the test instead of the machine.
"""

from __future__ import annotations

import asyncio
import collections
import math
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from gateway.clock import SystemClock
from gateway.profiles import builtin_profile
from gateway.sim.load import LoadModel
from gateway.sim.modbus_sim import MeterSimulator, SimulatedMeter
from tests.conftest import free_port

pytestmark = pytest.mark.slow

PY = sys.executable
SDM630 = builtin_profile("eastron-sdm630")
ADDRESS_SPACE_LIMIT = 3 * 1024**3
"""Enough for the daemon's threads and arenas; an unbounded read hits it within a second."""
MEMORY_MAX_MIB = 256
"""The systemd unit's MemoryMax: the daemon must stay under it whatever a client sends."""
FLOOD_S = 6.0
FLOOD_CLIENTS = 64
SLOW_UNIT = 9
START_S = 20.0
"""The daemon is up within a second or two; this bounds a broken start on a loaded box."""
STOP_S = 10.0
SECRET = "s3cr3t-Value-0042-do-not-echo"
CLIENT_KEEPALIVE_S = 2.0


def _limit_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_LIMIT, ADDRESS_SPACE_LIMIT))


def _config(tmp_path: Path, sim_port: int, web_port: int) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(f"""
gateway_id = "gw-web-flood"
data_dir = "{tmp_path / 'data'}"
[time]
trust = "always"
[logging]
format = "json"
[web]
port = {web_port}
profiles_dir = "{tmp_path / 'profiles'}"
[[buses]]
name = "line"
host = "127.0.0.1"
port = {sim_port}
timeout_s = 1.0
retries = 0
  [[buses.meters]]
  id = "m1"
  unit_id = 1
  profile = "eastron-sdm630"
  poll_s = 1
""")
    (tmp_path / "profiles").mkdir()
    return path


def _memory_mib(pid: int) -> dict[str, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024
    return fields


async def _wait_up(http: httpx.AsyncClient, proc: asyncio.subprocess.Process, log: Path) -> None:
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            pytest.fail(f"the daemon exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if (await http.get("/healthz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    pytest.fail("the daemon's web server did not come up")


async def test_read_flood_device_files_and_secrets_against_a_real_daemon(tmp_path: Path) -> None:
    clock = SystemClock()
    epoch = math.floor(clock.now())
    slow = SimulatedMeter("slow", SLOW_UNIT, SDM630, LoadModel.for_meter("slow", epoch), answer_delay_s=0.3)
    sim = MeterSimulator([SimulatedMeter("m1", 1, SDM630, LoadModel.for_meter("m1", epoch)), slow], clock,
                         port=free_port())
    await sim.start()
    web_port = free_port()
    config = _config(tmp_path, sim.port, web_port)
    secret = tmp_path / "secret.toml"
    secret.write_text(f'id = "{SECRET}"\nmodel = ["{SECRET}"]\n')
    log = tmp_path / "daemon.log"
    env = {**os.environ, "MALLOC_ARENA_MAX": "2"}
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(PY, "-m", "gateway", "run", "--config", str(config), stdout=out,
                                                    stderr=subprocess.STDOUT, env=env,
                                                    preexec_fn=_limit_address_space)
    try:
        # keepalive_expiry below the server's 5-s keep-alive: a connection left idle for about 5 s (the pool
        # prefers its oldest ones) would otherwise be reused just as the server closes it, and the request
        # fails with "Server disconnected without sending a response" (seen once in CI under load).
        limits = httpx.Limits(max_connections=FLOOD_CLIENTS + 4, keepalive_expiry=CLIENT_KEEPALIVE_S)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{web_port}", timeout=60, limits=limits) as http:
            await _wait_up(http, proc, log)
            token = (tmp_path / "data" / "web.token").read_text().strip()
            http.headers["Authorization"] = f"Bearer {token}"
            before = _memory_mib(proc.pid)
            log_before = log.stat().st_size

            statuses: collections.Counter[int] = collections.Counter()
            retry_after: set[str] = set()
            others: collections.Counter[int] = collections.Counter()
            stop_at = time.monotonic() + FLOOD_S

            async def client() -> None:
                while time.monotonic() < stop_at:
                    answer = await http.get("/api/v1/buses/line/read",
                                            params={"unit": SLOW_UNIT, "profile": "eastron-sdm630"})
                    statuses[answer.status_code] += 1
                    if answer.status_code == 429:
                        retry_after.add(answer.headers.get("retry-after", ""))

            async def technician() -> None:
                while time.monotonic() < stop_at:
                    others[(await http.get("/api/v1/meters")).status_code] += 1
                    await asyncio.sleep(0.2)

            # A TaskGroup, not gather: if one request fails, the others are cancelled with the test instead of
            # running on into the next test on this worker.
            async with asyncio.TaskGroup() as flood:
                for _ in range(FLOOD_CLIENTS):
                    flood.create_task(client())
                flood.create_task(technician())
            flood_log = log.stat().st_size - log_before
            after_flood = _memory_mib(proc.pid)

            refusals = {}
            for ref in ("/dev/zero", "/dev/urandom", str(secret), "../secret.toml",
                        str(tmp_path / "data" / "gateway.key"), str(tmp_path / "data" / "web.token")):
                t0 = time.monotonic()
                answer = await http.get("/api/v1/buses/line/read", params={"unit": 1, "profile": ref})
                refusals[ref] = (answer.status_code, round(time.monotonic() - t0, 2), answer.text)
            after_all = _memory_mib(proc.pid)
            still = (await http.get("/api/v1/meters")).status_code
    except Exception:
        print(f"the daemon's log, last 3000 characters:\n{log.read_text(errors='replace')[-3000:]}")
        raise
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(proc.wait(), STOP_S)
        except TimeoutError:
            proc.kill()
            code = await proc.wait()
        await sim.stop()
    text = log.read_text(errors="replace")
    print(f"flood: {dict(statuses)}, Retry-After {sorted(retry_after)}, other requests {dict(others)}; "
          f"log {flood_log} bytes; memory before {before}, after flood {after_flood}, after device files "
          f"{after_all}; refusals { {k: v[:2] for k, v in refusals.items()} }")
    assert statuses[500] == 0, f"{statuses[500]} answers were 500s"
    assert set(statuses) <= {200, 429, 504}, statuses
    assert statuses[429] > 0, "the flood was refused at once"
    assert statuses[200] > 0, "while reads kept being served"
    assert retry_after
    assert all(v.isdigit() and int(v) >= 1 for v in retry_after), retry_after
    assert set(others) == {200}, f"the rest of the API kept answering: {others}"
    assert "Traceback" not in text
    assert flood_log < 16_384, f"the flood wrote {flood_log} bytes of log"
    for ref, (status, _, body) in refusals.items():
        assert status == 400, (ref, status, body[:300])
        assert SECRET not in body, ref
        assert token not in body, ref
    assert after_all["VmHWM"] < MEMORY_MAX_MIB, after_all
    assert after_all["VmRSS"] - before["VmRSS"] < 64, (before, after_all)
    assert still == 200
    assert code == 0, text[-3000:]


def test_a_token_file_others_can_read_stops_the_daemon_with_the_fix(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    token = data / "web.token"
    token.write_text("a-token-an-installer-left-readable\n")
    token.chmod(0o644)
    config = tmp_path / "gateway.toml"
    config.write_text(f'gateway_id = "gw-mode"\ndata_dir = "{data}"\n[time]\ntrust = "always"\n'
                      f"[web]\nport = {free_port()}\n")
    try:
        result = subprocess.run([PY, "-m", "gateway", "run", "--config", str(config)], capture_output=True,
                                text=True, timeout=START_S)
    except subprocess.TimeoutExpired:
        pytest.fail("the daemon started with a web token other users can read")
    assert result.returncode == 2, result
    assert f"chmod 600 {token}" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
