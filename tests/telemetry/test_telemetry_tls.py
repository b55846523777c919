"""MQTT over TLS against a real mosquitto that asks for a client certificate.

The certificates are made here with the openssl CLI: a CA, the broker's (for 127.0.0.1), this box's client
certificate, and a stranger CA that signed nothing the broker shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import shutil
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import pytest
from stellar_sdk import Keypair

from gateway.config import host_problems, parse_config
from gateway.ledger.store import Ledger
from gateway.sim import children
from gateway.status import GatewayStatus, MeterStatus
from gateway.telemetry import publisher as publisher_module
from gateway.telemetry.publisher import ALARM, TelemetryPublisher
from tests.conftest import BROKER_START_S, BROKER_STOP_S, MOSQUITTO, free_port, wait_for_port

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
OPENSSL_S = 30.0
"""Bound on one openssl command (EC keys take milliseconds; this only catches a hung tool on a loaded box)."""
WAIT_S = 15.0
"""Bound on a TLS connect and its first deliveries on loopback under a loaded CI box."""
PREFIX = "meter-gateway/gw.tls"


def _openssl(cwd: Path, *args: str) -> None:
    if not Path(OPENSSL).exists():
        pytest.fail("the openssl CLI is required for the TLS tests: apt-get install -y openssl")
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True, timeout=OPENSSL_S)


def _ca(cwd: Path, name: str) -> None:
    _openssl(cwd, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.pem", "-subj", f"/CN={name}", "-days", "2")


def _leaf(cwd: Path, name: str, ca: str, extensions: str) -> None:
    (cwd / f"{name}.ext").write_text(extensions + "authorityKeyIdentifier=keyid\n", encoding="ascii")
    _openssl(cwd, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
    _openssl(cwd, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")


@dataclass
class TlsBroker:
    port: int
    certs: Path


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[TlsBroker]:
    """mosquitto with one TLS listener that refuses clients without a certificate signed by ``ca``."""
    certs = tmp_path / "certs"
    certs.mkdir()
    _ca(certs, "ca")
    _ca(certs, "stranger")
    _leaf(certs, "broker", "ca", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    _leaf(certs, "box", "ca", "extendedKeyUsage=clientAuth\n")
    port = free_port()
    conf = tmp_path / "mosquitto-tls.conf"
    conf.write_text(
        f"user {getpass.getuser()}\nper_listener_settings false\nallow_anonymous false\n"
        f"listener {port} 127.0.0.1\ncafile {certs}/ca.pem\ncertfile {certs}/broker.pem\n"
        f"keyfile {certs}/broker.key\nrequire_certificate true\nuse_identity_as_username true\n",
        encoding="ascii")
    if not Path(MOSQUITTO).exists():
        pytest.fail("mosquitto is required: run ./scripts/setup.sh (apt-get install -y mosquitto)")
    proc = children.spawn([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, BROKER_START_S)
        yield TlsBroker(port, certs)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=BROKER_STOP_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=BROKER_STOP_S)


def _config(tmp_path: Path, port: int, tls: str) -> str:
    # The meter's own [mqtt] broker is another one: telemetry's connection settings are its own.
    return f"""
gateway_id = "gw.tls"
data_dir = "{tmp_path / 'data'}"
[mqtt]
host = "127.0.0.1"
port = {free_port()}
  [[mqtt.meters]]
  id = "plug"
  topic = "tele/plug/SENSOR"
  format = "tasmota"
[telemetry]
host = "127.0.0.1"
port = {port}
intervals = false
  [telemetry.tls]
  {tls}
"""


@contextlib.asynccontextmanager
async def _publisher(tmp_path: Path, port: int, tls: str) -> AsyncIterator[TelemetryPublisher]:
    cfg = parse_config(_config(tmp_path, port, tls), base_dir=tmp_path)  # TLS paths relative to the config
    status = GatewayStatus(cfg.gateway_id, "G", time.time())
    status.meters["plug"] = MeterStatus("plug", "mqtt", "tele/plug/SENSOR")
    status.meters["plug"].read_ok(time.time())
    status.meters["plug"].set_value("power_total", 512.0, "W", time.time())
    ledger = await Ledger.open(cfg.data_dir, gateway_id=cfg.gateway_id, keypair=Keypair.random())
    publisher = TelemetryPublisher.configured(cfg, {}, status, ledger, _Clock())
    task = asyncio.create_task(publisher.run())
    try:
        yield publisher
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await ledger.close()


class _Clock:
    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


async def _until(check: object, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"waited {WAIT_S} s for {what}")
        await asyncio.sleep(0.05)


BOX_TLS = 'ca_file = "certs/ca.pem"\n  cert_file = "certs/box.pem"\n  key_file = "certs/box.key"'


async def test_telemetry_over_tls_with_a_client_certificate(tmp_path: Path, tls_broker: TlsBroker) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(_config(tmp_path, tls_broker.port, BOX_TLS), encoding="utf-8")
    assert [p for p in host_problems(path, parse_config(path.read_text(), base_dir=tmp_path))
            if p.path.startswith("telemetry")] == []
    context = ssl.create_default_context(cafile=str(tls_broker.certs / "ca.pem"))
    context.load_cert_chain(str(tls_broker.certs / "box.pem"), str(tls_broker.certs / "box.key"))
    got: dict[str, bytes] = {}
    async with aiomqtt.Client("127.0.0.1", tls_broker.port, identifier="tls-subscriber",
                              tls_context=context) as client:
        await client.subscribe("homeassistant/#", qos=1)
        await client.subscribe(f"{PREFIX}/#", qos=1)
        async with _publisher(tmp_path, tls_broker.port, BOX_TLS) as publisher:
            async with asyncio.timeout(WAIT_S):
                async for message in client.messages:
                    got[str(message.topic)] = bytes(message.payload)  # type: ignore[arg-type]
                    if f"{PREFIX}/plug/power_total" in got and f"{PREFIX}/plug/availability" in got:
                        break
            assert publisher.state.connected
            assert publisher.state.failures == 0
            assert publisher.broker.where == f"127.0.0.1:{tls_broker.port} (TLS)"
    assert got[f"{PREFIX}/status"] == b"online"
    assert got[f"{PREFIX}/plug/power_total"] == b"512"
    config = json.loads(got["homeassistant/sensor/gw_tls/plug_power_total/config"])
    assert (config["device_class"], config["unit_of_measurement"]) == ("power", "W")


@pytest.mark.parametrize(("tls", "why"), [
    # The broker's certificate is not signed by the CA this box trusts: a man in the middle, or the wrong file.
    ('ca_file = "certs/stranger.pem"\n  cert_file = "certs/box.pem"\n  key_file = "certs/box.key"',
     "certificate verify failed"),
    # The broker asks for a client certificate and this box gives none (TLS 1.3: it says so after the handshake,
    # so paho waits for the CONNACK until the connect timeout).
    ('ca_file = "certs/ca.pem"', "refusing this box's client certificate"),
], ids=["stranger-ca", "no-client-certificate"])
# paho drops the socket of a failed TLS handshake without closing it (client._ssl_wrap_socket); CPython closes it
# at once as it is freed, with a ResourceWarning that is paho's, not ours.
@pytest.mark.filterwarnings(r"ignore:Exception ignored in.*ssl\.SSLSocket:pytest.PytestUnraisableExceptionWarning")
async def test_tls_is_refused_without_the_right_ca_or_client_certificate(
        tmp_path: Path, tls_broker: TlsBroker, monkeypatch: pytest.MonkeyPatch, tls: str, why: str) -> None:
    monkeypatch.setattr(publisher_module, "CONNECT_TIMEOUT_S", 2.0)
    async with _publisher(tmp_path, tls_broker.port, tls) as publisher:
        await _until(lambda: publisher.state.failures >= 1, "a refused connection")
        assert not publisher.state.connected
        assert publisher.state.discovery_published == 0
        alarm = publisher.status.alarms[ALARM]
        assert f"127.0.0.1:{tls_broker.port} (TLS)" in alarm
        assert why in alarm, alarm


def test_check_config_names_tls_files_it_cannot_read(tmp_path: Path) -> None:
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.pem").write_text("x", encoding="ascii")
    path = tmp_path / "gateway.toml"
    path.write_text(_config(tmp_path, 8883, BOX_TLS), encoding="utf-8")
    cfg = parse_config(path.read_text(), base_dir=tmp_path)
    assert cfg.telemetry is not None
    assert cfg.telemetry.tls is not None
    assert cfg.telemetry.tls.ca_file == tmp_path / "certs" / "ca.pem"
    problems = {p.path: p for p in host_problems(path, cfg)}
    assert "telemetry.tls.ca_file" not in problems
    assert {"telemetry.tls.cert_file", "telemetry.tls.key_file"} <= set(problems), problems
    assert problems["telemetry.tls.key_file"].line is not None
    assert "does not exist" in problems["telemetry.tls.key_file"].message
