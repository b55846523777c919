"""Telemetry as plain data: discovery configs, payloads, what each meter publishes, the drop-oldest queue."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import cast

import pytest

from gateway.channels import Channel
from gateway.clock import ManualClock
from gateway.config import parse_config
from gateway.errors import ConfigError
from gateway.ledger.store import Ledger
from gateway.profiles import builtin_profile
from gateway.status import GatewayStatus, LiveValue, MeterStatus
from gateway.telemetry.model import (
    MeterTelemetry,
    Topics,
    describe,
    discovery_config,
    interval_message,
    label,
    value_payload,
)
from gateway.telemetry.publisher import TelemetryPublisher
from gateway.telemetry.queue import LiveQueue


def test_each_meter_publishes_what_it_gives(tmp_path: Path) -> None:
    cfg = parse_config(f"""
gateway_id = "gw"
data_dir = "{tmp_path}"
[[buses]]
name = "b"
host = "127.0.0.1"
  [[buses.meters]]
  id = "abb"
  unit_id = 1
  profile = "abb-b23"
  quantities = ["frequency", "power_factor"]
  [[buses.meters]]
  id = "default"
  unit_id = 2
  profile = "eastron-sdm630"
[mqtt]
  [[mqtt.meters]]
  id = "plug"
  topic = "tele/plug/SENSOR"
  format = "tasmota"
  [[mqtt.meters]]
  id = "shelly"
  topic = "shelly/em"
  value_path = "total"
  [[mqtt.meters]]
  id = "shelly-p"
  topic = "shelly/em2"
  value_path = "total"
  power_path = "power"
""", base_dir=tmp_path)
    meters = {m.meter: m for m in describe(cfg, {"abb": builtin_profile("abb-b23"),
                                                  "default": builtin_profile("eastron-sdm630")})}
    # Both energy registers where the profile maps them (each a channel), whatever the list says.
    assert meters["abb"].units == {"energy_import": "Wh", "energy_export": "Wh", "frequency": "Hz",
                                   "power_factor": ""}
    assert (meters["abb"].manufacturer, meters["abb"].model) == ("ABB", "B23")
    assert meters["default"].units == {"energy_import": "Wh", "energy_export": "Wh", "power_total": "W",
                                       "voltage_l1": "V"}
    # Tasmota's ENERGY.ExportActive is read out of the box (a device that measures export sends it).
    assert meters["plug"].units == {"energy_import": "Wh", "energy_export": "Wh", "power_total": "W"}
    assert meters["shelly"].units == {"energy_import": "Wh"}
    assert meters["shelly-p"].units == {"energy_import": "Wh", "power_total": "W"}


def test_discovery_fields_by_quantity() -> None:
    topics = Topics("site/gw.1", "homeassistant", "gw.1")
    meter = MeterTelemetry("m.1", {}, None, None, None)
    pf = discovery_config(topics, meter, "power_factor", "")
    assert pf["device_class"] == "power_factor"
    assert "unit_of_measurement" not in pf
    assert pf["device"] == {"identifiers": ["meter-gateway_gw_1_m_1"], "name": "Meter m.1"}
    varh = discovery_config(topics, meter, "reactive_energy_import", "varh")
    assert "device_class" not in varh
    assert (varh["state_class"], varh["unit_of_measurement"]) == ("total_increasing", "varh")
    assert topics.discovery("m.1", "voltage_l2") == "homeassistant/sensor/gw_1/m_1_voltage_l2/config"
    assert label("voltage_l2") == "Voltage L2"
    assert label("energy_export") == "Energy export"
    assert json.dumps(pf)  # plain JSON


def test_payloads() -> None:
    assert value_payload(5_123_456.0) == b"5123456"
    assert value_payload(230.70000000000002) == b"230.7"
    assert value_payload(0.4347826) == b"0.4348"
    wire = json.dumps({"credit": {"meter": "m", "seq": 7, "kind": "correction", "start": 1_767_225_600,
                                  "end": 1_767_226_500, "wh": -3, "quality": "A", "corrects": 5,
                                  "register_end_wh": 1200}, "hash": "ab" * 32, "signature": "x"})
    message = interval_message(42, wire)
    body = json.loads(message.payload)
    assert (message.credit_id, message.meter) == (42, "m")
    assert message.channel is Channel.IMPORT, "a credit without a channel (v1) is import"
    assert body == {"meter": "m", "channel": "import", "seq": 7, "kind": "correction", "start": "2026-01-01T00:00:00Z",
                    "end": "2026-01-01T00:15:00Z", "start_ts": 1_767_225_600, "end_ts": 1_767_226_500, "wh": -3,
                    "quality": "A", "corrects": 5, "register_end_wh": 1200, "hash": "ab" * 32}


def test_the_queue_keeps_the_newest_and_counts_what_it_drops() -> None:
    queue = LiveQueue(10)
    status = MeterStatus("m", "modbus", "b#1")
    status.value_sink = queue.offer
    for i in range(25):
        status.set_value("power_total", float(i), "W", float(i))
    assert status.values["power_total"] == LiveValue(24.0, "W", 24.0)
    assert queue.dropped == 15
    taken = queue.take(100)
    assert [item.value.value for item in taken] == [float(i) for i in range(15, 25)]
    assert not queue.ready.is_set()


def test_telemetry_and_mqtt_libraries_load_only_when_used() -> None:
    """A box without [telemetry] never imports it; the broker settings module pulls in neither aiomqtt nor ssl
    (the budget watcher imports it on every box, and another branch keeps aiomqtt out of RTU-only boxes).
    Counted past ``import gateway``, which loads structlog (and with it asyncio, which loads ssl) for every module."""
    probe = ("import sys, gateway; had = set(sys.modules); import gateway.brokers; "
             "loaded = [m for m in ('aiomqtt', 'paho', 'ssl') if m in sys.modules and m not in had]; "
             "import gateway.daemon; loaded += [m for m in sys.modules if m.startswith('gateway.telemetry')]; "
             "print(','.join(loaded))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == ""


def test_topic_prefix_qos_and_retain_come_from_the_config(tmp_path: Path) -> None:
    text = f"""
gateway_id = "gw"
data_dir = "{tmp_path}"
[[buses]]
name = "b"
host = "127.0.0.1"
  [[buses.meters]]
  id = "m"
  unit_id = 1
  profile = "eastron-sdm630"
[telemetry]
topic_prefix = "site/{{gateway_id}}/meters"
qos = 2
retain = false
discovery_prefix = "ha"
"""
    cfg = parse_config(text)
    status = GatewayStatus("gw", "G", 0.0)
    publisher = TelemetryPublisher.configured(cfg, {"m": builtin_profile("eastron-sdm630")}, status,
                                              cast(Ledger, None), ManualClock())
    assert publisher._value_message("m", "power_total", LiveValue(5.0, "W", 0.0)) == (
        "site/gw/meters/m/power_total", b"5", 2, False)
    assert publisher.topics.status == "site/gw/meters/status"
    assert publisher.topics.discovery("m", "power_total") == "ha/sensor/gw/m_power_total/config"
    assert status.telemetry is publisher.state
    with pytest.raises(ConfigError, match="plain topic"):
        parse_config(text.replace("site/{gateway_id}/meters", "site/#"))


def test_each_channel_has_its_own_interval_topic_and_key() -> None:
    """Import keeps the topic it always had; export goes one level below it, so one meter's two channels never
    share a topic, and each message says its channel (sequence numbers count per (meter, channel))."""
    topics = Topics("site/gw", "homeassistant", "gw")
    assert topics.interval("m") == topics.interval("m", Channel.IMPORT) == "site/gw/m/interval"
    assert topics.interval("m", Channel.EXPORT) == "site/gw/m/interval/export"

    def wire(seq: int, channel: str | None) -> str:
        credit = {"meter": "m", "seq": seq, "start": 1_767_225_600, "end": 1_767_226_500, "wh": 40, "quality": "A",
                  "register_end_wh": 1200, **({"channel": channel} if channel else {})}
        return json.dumps({"credit": credit, "hash": "cd" * 32, "signature": "x"})

    old, imp, exp = (interval_message(i, wire(1, c)) for i, c in ((1, None), (2, "import"), (3, "export")))
    assert (old.channel, imp.channel, exp.channel) == (Channel.IMPORT, Channel.IMPORT, Channel.EXPORT)
    keys = {(b["meter"], b["channel"], b["seq"]) for b in (json.loads(m.payload) for m in (imp, exp))}
    assert keys == {("m", "import", 1), ("m", "export", 1)}, "the same seq on two channels: two keys"
    assert json.loads(old.payload)["channel"] == "import"
    with pytest.raises(ValueError, match="unknown channel"):
        interval_message(4, wire(1, "reactive"))
