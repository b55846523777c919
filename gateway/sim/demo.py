"""``meter-gateway demo``: the whole product on one box, no hardware, no services.

Starts simulated meters (Modbus TCP endpoints answering real firmware-profile
maps, plus an MQTT meter when a ``mosquitto`` binary is installed), the
reference billing receiver, and the real gateway daemon configured by a real
config file written into the data dir — all on loopback, on a simulated clock
running ``speed`` meter seconds per wall second.

Restarting on the same data dir continues where the last run stopped: the
simulated clock resumes after the last reading the ledger holds, and the
meters' registers are a deterministic function of time.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import hashlib
import json
import math
import os
import secrets
import shutil
import socket
import sqlite3
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import structlog

from cloud_sync.receiver import ReceiverStore
from cloud_sync.receiver import create_app as create_receiver
from gateway import identity
from gateway.channels import Channel
from gateway.clock import SimulatedClock
from gateway.config import load_config
from gateway.daemon import Running, run_daemon
from gateway.intervals import INTERVAL_S
from gateway.profiles import builtin_profile
from gateway.sim import children
from gateway.sim.demo_check import check_series, receiver_series
from gateway.sim.hints import bill_hint, cli_command
from gateway.sim.load import LoadModel
from gateway.sim.modbus_sim import MeterSimulator, SimulatedMeter
from gateway.web.server import free_port, make_server
from gateway.web.users import UserStore

log = structlog.get_logger("gateway.demo")

GATEWAY_ID = "demo-gateway"
DEMO_USER = "demo"
"""The technician account the demo creates, with a new random password printed at every start."""
DEMO_TIMEZONE = "Europe/Berlin"
STATE_FILE = "demo.json"
POLL_CHOICES = (10, 15, 30, 60, 300, 900)
MIN_TICK_WALL_S = 0.25
"""A simulated tick must last at least this long on the host, so a whole Modbus
transaction fits inside one tick and meter and gateway agree on its instant."""

# (bus name, [(meter id, unit id, profile)]): line-a is three meters behind one
# serial device server (a multi-drop RS-485 line), line-b a single TCP meter.
MODBUS_LAYOUT = (
    ("line-a", (("flat-1", 1, "eastron-sdm630"), ("flat-2", 2, "eastron-sdm630"), ("shop", 3, "eastron-sdm630"))),
    ("line-b", (("heat-pump", 1, "eastron-sdm630"),)),
)
MQTT_METER = "pv-house"
MQTT_TOPIC = "demo/pv-house/SENSOR"
PV_KWP = 5.0
"""The solar house's panels: about 4 kW at noon over a few hundred W of load, so it exports by day."""
PV_NOON_AFTER_S = 3 * 3600.0
"""The demo's sun peaks this long (meter time) after the demo's first start, so that even a short
first run sees the house feed in (a demo started at night would otherwise show no export for hours)."""
LATE_POLLS = (2, 3, 5)
"""How many polls late a held-back MQTT message arrives (``--late-mqtt``), in turn."""


def poll_period(speed: float) -> int:
    for period in POLL_CHOICES:
        if period / speed >= MIN_TICK_WALL_S:
            return period
    return POLL_CHOICES[-1]


@dataclass
class DemoState:
    epoch: float
    last_meter_t: float

    @classmethod
    def load_or_create(cls, data_dir: Path, now: float) -> DemoState:
        path = data_dir / STATE_FILE
        if path.exists():
            doc = json.loads(path.read_text())
            return cls(float(doc["epoch"]), float(doc["last_meter_t"]))
        epoch = math.floor(now / INTERVAL_S) * INTERVAL_S
        state = cls(epoch, epoch)
        # Saved at once: the meters' registers are a function of the epoch, so a
        # run killed before it ends must not lose it.
        state.save(data_dir)
        return state

    def save(self, data_dir: Path) -> None:
        # Durably: this file stands for the meters' own memory (their registers are a function of
        # the epoch), which a power cut of the gateway's box must not take away.
        _write_durably(data_dir / STATE_FILE, json.dumps({"epoch": self.epoch, "last_meter_t": self.last_meter_t}))


def _write_durably(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


@dataclass(frozen=True)
class Rehearsal:
    """Faults the demo produces on purpose, so crash tests (and the curious) see the hard paths run."""

    late_mqtt_every: int = 0
    """Publish every n-th MQTT message some polls late (see LATE_POLLS), after newer ones; 0: never."""
    min_free_mb: int | None = None
    """The gateway's ``[ledger] min_free_mb``; set above the free disk, it runs the low-disk path
    (pruning raw readings, returning pages) at every maintenance pass."""


def models(epoch: float) -> dict[str, LoadModel]:
    """The load model of every demo meter (tests use this to know the true registers)."""
    ids = [m for _, meters in MODBUS_LAYOUT for m, _, _ in meters]
    found = {meter: LoadModel.for_meter(meter, epoch) for meter in ids}
    found[MQTT_METER] = LoadModel.for_meter(MQTT_METER, epoch, pv_kwp=PV_KWP,
                                            pv_noon_s=(epoch + PV_NOON_AFTER_S) % 86_400)
    return found


def _ledger_resume_t(data_dir: Path) -> float | None:
    """The oldest of the meters' last readings in the ledger, or None before the first."""
    path = data_dir / "ledger.db"
    if not path.exists():
        return None
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        try:
            (value,) = db.execute("SELECT MIN(last_t_ms) FROM meters").fetchone()
        except sqlite3.OperationalError:
            return None
    return None if value is None else float(value) / 1000


def _secret_file(path: Path, make: str) -> str:
    if path.exists():
        return path.read_text().strip()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(make + "\n")
    return make


def _nmi(meter: str) -> str:
    """A stable made-up 10-character NMI per demo meter, so NEM12 exports work out of the box."""
    return "DEMO" + str(int.from_bytes(meter.encode(), "big") % 1_000_000).zfill(6)


def _config_text(data_dir: Path, buses: list[tuple[str, int]], period: int, web_port: int,
                 receiver_url: str, token_file: Path, mqtt_port: int | None, rehearse: Rehearsal, *,
                 stellar_lines: Sequence[str] = (), p2p_lines: Sequence[str] = ()) -> str:
    lines = [
        "# Written by `meter-gateway demo`: a real gateway config pointing at simulated meters.",
        f'gateway_id = "{GATEWAY_ID}"',
        f'site_timezone = "{DEMO_TIMEZONE}"',
        f'data_dir = "{data_dir}"',
        "",
        "[time]",
        '# Simulated time is trusted by construction; on a real box leave the default ("ntp").',
        'trust = "always"',
        "",
        "[web]",
        'listen = "127.0.0.1"',
        f"port = {web_port}",
        "",
        "[billing]",
        'tariff = "residential"',
        "",
        "[tariffs.residential]",
        'currency = "USD"',
        'fixed_charges = [{ label = "Readiness to Serve", amount = "15.00" }]',
        'kwh_surcharges = [{ label = "PSCR Surcharge", rate = "0.00125" }]',
        'fixed_surcharges = [{ label = "SAF Surcharge", amount = "7.00" }]',
        "[tariffs.residential.energy]",
        'kind = "tiered"',
        'tiers = [{ up_to_kwh = "500", rate = "0.10" }, { rate = "0.12" }]',
        "",
        "[uplinks.billing_api]",
        f'url = "{receiver_url}"',
        f'token_file = "{token_file}"',
        "batch_size = 200",
        f"max_batch_age_s = {period}",
        "",
    ]
    if rehearse.min_free_mb is not None:
        lines += ["[ledger]", "# --min-free-mb: rehearse the low-disk path.",
                  f"min_free_mb = {rehearse.min_free_mb}", ""]
    for (name, meters), (_, port) in zip(MODBUS_LAYOUT, buses, strict=True):
        lines += ["[[buses]]", f'name = "{name}"', 'kind = "tcp"', 'host = "127.0.0.1"', f"port = {port}",
                  "timeout_s = 0.5", "retries = 0", ""]
        for meter, unit, profile in meters:
            lines += ["[[buses.meters]]", f'id = "{meter}"', f"unit_id = {unit}", f'profile = "{profile}"',
                      f"poll_s = {period}", f'nmi = "{_nmi(meter)}"', ""]
    if mqtt_port is not None:
        lines += ["[mqtt]", 'host = "127.0.0.1"', f"port = {mqtt_port}", "",
                  "[[mqtt.meters]]", f'id = "{MQTT_METER}"', f'topic = "{MQTT_TOPIC}"', 'format = "json"',
                  'value_path = "ENERGY.Total"', 'export_path = "ENERGY.ExportActive"', 'time_path = "Time"',
                  'unit = "kWh"', f'nmi = "{_nmi(MQTT_METER)}"',
                  "max_power_w = 13800  # a 60 A single-phase house meter: the plausibility ceiling",
                  *([f'serial = "{_serial(MQTT_METER)}"'] if stellar_lines else []), ""]
    if stellar_lines:  # Stellar: the demo plays the utility that onboarded this gateway (gateway/sim/demo_stellar.py)
        lines += ["# Consumption tokenized on a local Stellar ledger: each meter's account is credited.",
                  *stellar_lines]
    if p2p_lines:
        lines += ["", *p2p_lines]
    return "\n".join(lines)


def _serial(meter: str) -> int:
    """A stable made-up 8-digit serial number per demo meter (what its serial register answers).

    Here, not in demo_stellar: a demo without Stellar must not import stellar-sdk for it.
    """
    return 10_000_000 + int.from_bytes(hashlib.sha256(meter.encode()).digest()[:4], "big") % 90_000_000


@dataclass
class DemoResult:
    data_dir: Path
    start_meter_t: float
    end_meter_t: float
    period: int
    series: dict[tuple[str, Channel], dict[str, Any]] = field(default_factory=dict)
    """Per (meter, channel): the receiver's credits against the true register (:func:`series_report`)."""
    stellar: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per meter: credited Wh, on-chain balance, exact (empty with --no-stellar)."""
    p2p: dict[str, Any] = field(default_factory=dict)
    """The energy-sharing agreement: the contract's view and the gateway's delivery record (empty without)."""


async def _mosquitto(port: int, data_dir: Path) -> subprocess.Popen[bytes] | None:
    binary = shutil.which("mosquitto")
    if not binary:
        return None
    conf = data_dir / "mosquitto.conf"
    # user: started as root, mosquitto would switch to its own user, and the kernel forgets a
    # child's parent-death signal when it changes credentials (see gateway.sim.children).
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    f"user {getpass.getuser()}\n")
    # Dies with the demo, even when the demo is SIGKILLed.
    proc = children.spawn([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return proc
        await asyncio.sleep(0.05)
    proc.kill()
    proc.wait()
    return None


async def _publish(port: int, clock: SimulatedClock, model: LoadModel, period: int, late_every: int = 0) -> None:
    """An MQTT meter: Tasmota-style JSON with its own timestamp, every poll period.

    With ``late_every``, every n-th message is held back and published after newer ones, like a
    bridge flushing its buffer after an outage: late and out of order. Whether the gateway places
    or refuses it, no energy may be lost or counted twice.
    """
    t = math.floor(clock.now() / period) * period + period
    made = 0
    held: list[tuple[float, str]] = []
    while True:
        try:
            async with aiomqtt.Client("127.0.0.1", port, identifier="demo-pv-house") as client:
                while True:
                    await clock.sleep_until(t)
                    energy = {"Total": round(model.import_wh(t) / 1000, 3), "Power": round(model.net_w(t))}
                    if model.solar:  # Tasmota's field for the exported active energy, kWh like Total
                        energy["ExportActive"] = round(model.export_wh(t) / 1000, 3)
                    doc = json.dumps({"Time": t, "ENERGY": energy})
                    made += 1
                    if late_every and made % late_every == 0:
                        held.append((t + period * LATE_POLLS[made // late_every % len(LATE_POLLS)], doc))
                    else:
                        await client.publish(MQTT_TOPIC, doc, qos=1)
                    for due in [h for h in held if h[0] <= t]:
                        await client.publish(MQTT_TOPIC, due[1], qos=1)
                        held.remove(due)
                    t += period
        except aiomqtt.MqttError:
            await asyncio.sleep(0.5)


def receiver_summary(receiver_db: Path) -> dict[str, list[dict[str, Any]]]:
    """Import credits the reference receiver holds, per meter, in seq order (what Stellar credits)."""
    return {meter: credits for (meter, channel), credits in receiver_series(receiver_db).items()
            if channel is Channel.IMPORT}


def check_conservation(receiver_db: Path, epoch: float,
                       channel: Channel = Channel.IMPORT) -> dict[str, dict[str, Any]]:
    """Per meter: one channel's credits against its true register (see :func:`series_report`)."""
    return {meter: report for (meter, ch), report in check_series(receiver_db, models(epoch)).items()
            if ch is channel}


async def run_demo(data_dir: Path, *, speed: float, duration: float | None, stop: asyncio.Event,
                   web_port: int = 8080, announce: bool = True, receiver_url: str | None = None,
                   receiver_token_file: Path | None = None, rehearse: Rehearsal | None = None,
                   stellar: bool = True, horizon_url: str | None = None) -> DemoResult:
    """Run the demo until ``stop`` (or ``duration`` wall seconds).

    With ``receiver_url`` the credits go to a billing API already running
    elsewhere (the crash tests keep one alive across gateway kills) instead of
    the demo's own reference receiver. ``rehearse`` makes it produce faults on purpose.
    """
    rehearse = rehearse or Rehearsal()
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    state = DemoState.load_or_create(data_dir, time.time())
    period = poll_period(speed)
    # Resume just after the meter that was read least recently, so that no meter
    # sees a gap spanning a quarter-hour boundary (which it would have to estimate).
    resume = _ledger_resume_t(data_dir) or max(state.last_meter_t, state.epoch)
    start = math.floor(resume / period) * period + period
    clock = SimulatedClock(start=start, speed=speed, tick=period)
    truth = models(state.epoch)

    keypair = identity.load_or_create(data_dir)
    store = receiver = None
    if receiver_url is None:
        token_file = data_dir / "billing-api.token"
        api_token = _secret_file(token_file, os.urandom(18).hex())
        store = ReceiverStore(data_dir / "receiver.db", {GATEWAY_ID: keypair.public_key})
        receiver_port = free_port()
        receiver_url = f"http://127.0.0.1:{receiver_port}"
        receiver = make_server(create_receiver(store, api_token), "127.0.0.1", receiver_port)
    else:
        if receiver_token_file is None:
            raise ValueError("an external receiver needs its token file")
        token_file = receiver_token_file

    sims: list[MeterSimulator] = []
    bus_ports: list[tuple[str, int]] = []
    for name, meters in MODBUS_LAYOUT:
        port = free_port()
        sim_meters = [SimulatedMeter(meter, unit, builtin_profile(profile), truth[meter], serial=_serial(meter))
                      for meter, unit, profile in meters]
        sims.append(MeterSimulator(sim_meters, clock, port=port))
        bus_ports.append((name, port))
    mqtt_port = free_port()
    broker = await _mosquitto(mqtt_port, data_dir)
    if not web_port or not _port_free(web_port):
        web_port = free_port()
    stellar_stack = contextlib.AsyncExitStack()
    chain = None
    if stellar:
        from gateway.sim.demo_stellar import demo_ledger

        chain = await stellar_stack.enter_async_context(demo_ledger(data_dir, keypair.to_sdk(), horizon_url))
    agreement = None
    if chain and chain.network and broker:  # the solar house is the MQTT meter
        from gateway.sim import demo_p2p

        agreement = await demo_p2p.set_up(chain.network, chain.utility, keypair.to_sdk(), _serial(MQTT_METER),
                                          state.epoch, data_dir / "horizon")
    config_path = data_dir / "gateway.toml"
    config_path.write_text(_config_text(data_dir, bus_ports, period, web_port, receiver_url, token_file,
                                        mqtt_port if broker else None, rehearse,
                                        stellar_lines=chain.config_lines() if chain else (),
                                        p2p_lines=agreement.config_lines(chain.network, MQTT_METER)
                                        if agreement and chain and chain.network else ()))
    cfg = load_config(config_path)
    demo_password = secrets.token_urlsafe(12)
    UserStore(data_dir).set_password(DEMO_USER, demo_password, create=True, replace=True)

    def started(running: Running) -> None:
        if not announce:
            return
        print(f"\nDemo running: {len(truth) - (0 if broker else 1)} simulated meters, "
              f"{speed:g} meter seconds per second, polls every {period} s of meter time.")
        print(f"  status page : http://127.0.0.1:{running.web_port}/  sign in as {DEMO_USER}, password "
              f"{demo_password}")
        print("                (a new password at every start; on a box: meter-gateway user add NAME --config FILE)")
        print(f"  JSON API    : curl -H 'Authorization: Bearer {running.web_token}' "
              f"http://127.0.0.1:{running.web_port}/api/v1/meters")
        print(f"  projection  : curl -H 'Authorization: Bearer {running.web_token}' "
              f"http://127.0.0.1:{running.web_port}/api/v1/meters/flat-1/projection")
        print(f"  data dir    : {data_dir}  (gateway.toml, ledger.db, receiver.db)")
        print("  afterwards  : the bill command for this run's days is printed when the demo stops")
        if not broker:
            print("  MQTT meter  : skipped (install mosquitto to include it)")
        if agreement:
            print(f"  sharing     : {MQTT_METER} delivers {agreement.kwh} kWh to a neighbour (agreement "
                  f"{agreement.agreement_id}); curl -H 'Authorization: Bearer {running.web_token}' "
                  f"http://127.0.0.1:{running.web_port}/api/v1/p2p")
        if chain:
            print(f"  Stellar     : {chain.url} (local ledger, '{chain.passphrase}'); accounts: meter-gateway "
                  f"stellar accounts --data-dir {data_dir}")
        print("  stop        : Ctrl-C\n", flush=True)

    tasks: list[asyncio.Task[Any]] = []
    stellar_result: dict[str, dict[str, Any]] = {}
    p2p_result: dict[str, Any] = {}
    try:
        for sim in sims:
            await sim.start()
        if receiver is not None:
            tasks.append(asyncio.create_task(receiver.serve(), name="receiver"))
            while not receiver.started:  # noqa: ASYNC110 - uvicorn has no started event
                await asyncio.sleep(0.01)
        if broker:
            tasks.append(asyncio.create_task(_publish(mqtt_port, clock, truth[MQTT_METER], period,
                                                      rehearse.late_mqtt_every)))
        if duration is not None:
            loop = asyncio.get_running_loop()
            loop.call_later(duration, stop.set)
        await run_daemon(cfg, clock, stop, on_started=started)
        if chain:
            from gateway.sim.demo_stellar import outbox_wh, stellar_report

            credited = ({m: sum(c["wh"] for c in cs) for m, cs in receiver_summary(data_dir / "receiver.db").items()}
                        if store is not None else outbox_wh(data_dir))
            stellar_result = await stellar_report(data_dir, chain, credited)
        if agreement and chain and chain.network:
            from gateway.sim import demo_p2p

            p2p_result = demo_p2p.report(chain.network, agreement, data_dir)
    finally:
        end = clock.now()
        state.last_meter_t = max(end, state.last_meter_t)
        state.save(data_dir)
        if receiver is not None:
            receiver.should_exit = True
        for task in tasks:
            if task.get_name() != "receiver":
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for sim in sims:
            await sim.stop()
        if broker:
            broker.terminate()
            broker.wait(timeout=5)
        if store is not None:
            store.close()
        await stellar_stack.aclose()
    if announce:
        print("Bill what the demo measured: "
              + bill_hint(cli_command(), config_path, state.epoch, end, DEMO_TIMEZONE, "flat-1"), flush=True)
    if store is None:
        if announce and chain and stellar_result:
            from gateway.sim.demo_stellar import print_report

            print_report(stellar_result, chain, "the outbox")
        return DemoResult(data_dir, start, end, period, stellar=stellar_result, p2p=p2p_result)
    result = DemoResult(data_dir, start, end, period, check_series(data_dir / "receiver.db", truth),
                        stellar=stellar_result, p2p=p2p_result)
    if announce:
        print(f"Demo stopped after {(end - start) / 3600:.1f} h of meter time. The reference receiver holds, "
              "per meter and channel:")
        for (meter, channel), r in sorted(result.series.items()):
            verdict = "exact" if r["exact"] and r["contiguous"] else "MISMATCH"
            print(f"  {meter:10s} {channel.value:6s} credits {r['first_seq']}..{r['last_seq']}: "
                  f"{r['credited_wh']} Wh credited, register moved {r['register_delta_wh']} Wh -> {verdict}")
    if announce and chain and stellar_result:
        from gateway.sim.demo_stellar import print_report

        print_report(stellar_result, chain, "the reference receiver")
    if announce and p2p_result:
        from gateway.sim.demo_p2p import print_report as print_sharing

        print_sharing(p2p_result, MQTT_METER)
    return result


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
