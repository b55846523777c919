"""The daemon against real things on loopback: pymodbus TCP meters, mosquitto, HTTP."""

from __future__ import annotations

import asyncio
import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiomqtt
import httpx

from gateway.clock import SimulatedClock
from gateway.config import parse_config
from gateway.daemon import Running, run_daemon
from gateway.profiles import builtin_profile
from gateway.sim.load import LoadModel
from gateway.sim.modbus_sim import MeterSimulator, SimulatedMeter
from tests.conftest import Broker, free_port

SPEED = 300.0
PERIOD = 60


async def test_one_broken_meter_does_not_stop_the_others(tmp_path: Path, mosquitto: Broker) -> None:
    start = math.ceil(time.time() / 900) * 900 - 120
    clock = SimulatedClock(start=start, speed=SPEED, tick=PERIOD)
    profile = builtin_profile("eastron-sdm630")
    models = {m: LoadModel.for_meter(m, start - 3600) for m in ("good-1", "good-2", "broken", "mqtt-1")}
    sim_port = free_port()
    broken = SimulatedMeter("broken", 3, profile, models["broken"], failing=True)
    sim = MeterSimulator([SimulatedMeter("good-1", 1, profile, models["good-1"]),
                          SimulatedMeter("good-2", 2, profile, models["good-2"]), broken], clock, port=sim_port)
    dead_port = free_port()  # nothing listens here: a whole endpoint down
    cfg = parse_config(f"""
gateway_id = "gw-daemon-test"
data_dir = "{tmp_path / 'data'}"
[time]
trust = "always"
[web]
port = 0
[[buses]]
name = "line"
host = "127.0.0.1"
port = {sim_port}
timeout_s = 0.3
retries = 0
  [[buses.meters]]
  id = "good-1"
  unit_id = 1
  profile = "eastron-sdm630"
  poll_s = {PERIOD}
  [[buses.meters]]
  id = "good-2"
  unit_id = 2
  profile = "eastron-sdm630"
  poll_s = {PERIOD}
  [[buses.meters]]
  id = "broken"
  unit_id = 3
  profile = "eastron-sdm630"
  poll_s = {PERIOD}
[[buses]]
name = "unplugged"
host = "127.0.0.1"
port = {dead_port}
timeout_s = 0.3
  [[buses.meters]]
  id = "gone"
  unit_id = 1
  profile = "eastron-sdm630"
  poll_s = {PERIOD}
[mqtt]
port = {mosquitto.port}
  [[mqtt.meters]]
  id = "mqtt-1"
  topic = "site/mqtt-1"
  value_path = "ENERGY.Total"
  time_path = "Time"
""")
    stop = asyncio.Event()
    running: list[Running] = []
    await sim.start()
    daemon = asyncio.create_task(run_daemon(cfg, clock, stop, on_started=running.append, final_sync_s=0))
    try:
        async with asyncio.timeout(10):
            while not running:
                await asyncio.sleep(0.02)
        handle = running[0]
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as publisher:
            async with asyncio.timeout(10):  # the gateway subscribes (slow on a loaded box: wait for it)
                while not handle.status.mqtt_connected:
                    await asyncio.sleep(0.02)
            t = math.floor(clock.now() / PERIOD) * PERIOD
            for k in range(40):
                at = t + k * PERIOD
                await clock.sleep_until(at)
                doc = {"Time": at, "ENERGY": {"Total": models["mqtt-1"].register_wh(at) / 1000}}
                await publisher.publish("site/mqtt-1", json.dumps(doc), qos=1)
            await publisher.publish("site/mqtt-1", b"{not json", qos=1)
            await asyncio.sleep(0.5)
        status = handle.status.meters
        assert status["good-1"].health == "online"
        assert status["good-2"].health == "online"
        assert status["broken"].health == "offline"
        assert status["gone"].health == "offline"
        assert status["mqtt-1"].health == "online"
        assert status["good-1"].reads_ok >= 30, "healthy meters kept their schedule"
        assert status["mqtt-1"].rejected["malformed"] == 1
        assert handle.status.quarantine[-1].payload == b"{not json"
        assert handle.status.credits_created >= 6

        base = f"http://127.0.0.1:{handle.web_port}"
        async with httpx.AsyncClient(base_url=base) as http:
            assert (await http.get("/healthz")).status_code == 200
            assert (await http.get("/api/v1/meters")).status_code == 401
            auth = {"Authorization": f"Bearer {handle.web_token}"}
            meters = {m["meter"]: m for m in (await http.get("/api/v1/meters", headers=auth)).json()["meters"]}
            assert meters["broken"]["state"] == "offline"
            assert "exception 4" in meters["broken"]["last_error"]
            assert meters["good-1"]["last_interval"]["quality"] == "A"
            assert meters["good-1"]["register_wh"] > 0
            page = await http.get("/", headers=auth)
            assert "Meter broken" in page.text
            assert "is offline" in page.text
            refused = await http.get("/", params={"token": handle.web_token})
            assert refused.status_code == 303, "?token= no longer opens the page: people sign in"
            assert "set-cookie" not in refused.headers
            metrics = (await http.get("/metrics", headers=auth)).text
            assert 'gateway_meter_up{meter="good-1"} 1.0' in metrics
            assert 'gateway_meter_up{meter="broken"} 0.0' in metrics
            one_off = (await http.get("/api/v1/buses/line/read", params={"unit": 2, "profile": "eastron-sdm630"},
                                      headers=auth)).json()
            assert one_off["values"]["frequency"] == 50.0, "one-off reads go through the running scheduler"
            assert one_off["values"]["energy_import"] > 0
            bad_unit = await http.get("/api/v1/buses/line/read", params={"unit": 300, "profile": "eastron-sdm630"},
                                      headers=auth)
            assert bad_unit.status_code == 400, "an impossible unit id is refused, not sent down the line"
            async with httpx.AsyncClient(base_url=base) as stranger:  # no cookie from the page visit
                assert (await stranger.get("/api/v1/meters", params={"token": "töken"})).status_code == 401
            lines = {x["name"]: x for x in (await http.get("/api/v1/lines", headers=auth)).json()["lines"]}
            assert lines["line"]["transactions"] > 0
            assert lines["unplugged"]["connected"] is False
            assert 'gateway_line_utilisation{line="line"}' in metrics
            sync = (await http.get("/api/v1/sync", headers=auth)).json()
            assert sync["credits_total"] == handle.status.credits_created
    finally:
        stop.set()
        await asyncio.wait_for(daemon, 10)
        await sim.stop()


async def test_a_bus_cancelled_while_it_stops_its_waits_does_not_run_on() -> None:
    """The daemon's stop cancels every bus; one cancelled while tidying up a wait used to swallow it.

    The bus then ran on, the stop waited for it forever and SIGTERM was ignored (seen with a full
    disk, when the writer's failure made the daemon cancel its buses).
    """
    from gateway.acquisition.modbus import _first_of

    release = asyncio.Event()

    async def slow_to_end() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await release.wait()  # a wait that takes a moment to end once cancelled
            raise

    task = asyncio.create_task(_first_of(asyncio.sleep(0), slow_to_end()))
    await asyncio.sleep(0.05)  # the first wait is over: the helper now waits for the other to end
    task.cancel()
    release.set()
    await asyncio.wait([task], timeout=2)
    assert task.cancelled(), "the cancellation reached the bus instead of being swallowed"


def _ready_child(daemon: str) -> subprocess.Popen[str]:
    """A process running ``daemon`` (the source of ``async def daemon(stop)``) under the CLI's signal
    handling, once it has printed ``ready``."""
    script = ("import asyncio, time\nfrom gateway import logs\nfrom gateway.cli import _run_until_signal\n"
              "logs.configure('info', 'json')\n" + daemon + "_run_until_signal(daemon)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"the child did not start: {err[-2000:]}")
    return proc


def test_sigterm_ends_the_process_within_the_deadline_even_if_the_stop_hangs(tmp_path: Path) -> None:
    """The last net under "SIGTERM always exits within 5 s": a stop stuck anywhere (here a blocked loop)."""
    with _ready_child(
        "async def daemon(stop):\n"
        "    print('ready', flush=True)\n"
        "    await stop.wait()\n"
        "    time.sleep(60)  # a stop that never ends: the loop itself is stuck\n"
    ) as proc:
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
        took = time.monotonic() - sent
        err = proc.stderr.read() if proc.stderr else ""
    assert took < 5.0, f"exit took {took:.1f} s"
    assert code == 1
    assert "shutdown_forced" in err


def test_sigusr1_prints_every_task_and_the_daemon_goes_on(tmp_path: Path) -> None:
    """On site, a daemon that seems stuck can say what each task waits on without being stopped."""
    with _ready_child(
        "async def waits_for_the_meter():\n"
        "    await asyncio.sleep(3600)\n"
        "async def daemon(stop):\n"
        "    asyncio.create_task(waits_for_the_meter(), name='bus:rs485-1')\n"
        "    print('ready', flush=True)\n"
        "    await stop.wait()\n"
        "    print('stopped', flush=True)\n"
    ) as proc:
        proc.send_signal(signal.SIGUSR1)
        time.sleep(0.5)
        assert proc.poll() is None, "SIGUSR1 must not end the daemon"
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, err
    assert out.split() == ["stopped"]
    assert "task bus:rs485-1:" in err
    assert "in waits_for_the_meter" in err, err
