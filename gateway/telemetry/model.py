"""What telemetry publishes, as plain data: topics, discovery configs, value and interval payloads (pure).

Home Assistant discovery fields follow the MQTT integration's documentation: the config topic
``<discovery_prefix>/<component>/<node_id>/<object_id>/config`` (ids from ``[a-zA-Z0-9_-]``), a sensor's
``name``, ``unique_id``, ``state_topic``, ``device_class``, ``state_class``, ``unit_of_measurement``,
``suggested_display_precision``, ``availability`` (a list of ``topic`` entries with their
``payload_available`` / ``payload_not_available``; ``availability_mode = all``: the gateway *and* the meter
must be online), the ``device`` it belongs to (``identifiers``,
``name``, ``manufacturer``, ``model``, ``serial_number``) and the ``origin`` of the message.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from gateway.acquisition.modbus import WANTED, polled_quantities
from gateway.acquisition.payloads import has_export
from gateway.channels import Channel, parse_channel
from gateway.config import GatewayConfig
from gateway.profiles import Profile

ONLINE, OFFLINE = "online", "offline"
RESERVED = frozenset({"interval", "availability", "status"})
"""Topic levels telemetry uses itself under a meter; no profile quantity has these names."""

# (device_class, state_class, display precision) by unit; energy counters only ever rise.
_BY_UNIT: Mapping[str, tuple[str | None, str, int | None]] = {
    "Wh": ("energy", "total_increasing", 0),
    "W": ("power", "measurement", 0),
    "V": ("voltage", "measurement", 1),
    "A": ("current", "measurement", 2),
    "Hz": ("frequency", "measurement", 2),
    "VA": ("apparent_power", "measurement", 0),
    "var": ("reactive_power", "measurement", 0),
    "varh": (None, "total_increasing", 0),
    "VAh": (None, "total_increasing", 0),
}
_LABELS = {"energy_import": "Energy import", "energy_export": "Energy export", "power_total": "Power",
           "power_factor": "Power factor", "frequency": "Frequency"}
_ID_RE = re.compile(r"[^A-Za-z0-9_-]")


def _version() -> str:
    try:
        return metadata.version("meter-gateway")
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True, slots=True)
class MeterTelemetry:
    """One meter as telemetry describes it: what it publishes for it, and how HA should name the device."""

    meter: str
    units: dict[str, str]
    """Quantity → unit, in publishing order."""
    manufacturer: str | None = None
    model: str | None = None
    serial: str | None = None
    """The NMI when there is one: what a utility knows the meter by."""


def describe(cfg: GatewayConfig, profiles: Mapping[str, Profile]) -> list[MeterTelemetry]:
    """Every configured meter with the quantities it gives: Modbus as polled (the same selection the bus
    makes: both energy registers where the profile maps them), MQTT its registers (export where the mapping
    has one, or may: Tasmota's ENERGY.ExportActive) and, when its payload carries it, its power."""
    out: list[MeterTelemetry] = []
    for bus in cfg.buses:
        for meter in bus.meters:
            profile = profiles[meter.id]
            polled = polled_quantities(meter.quantities or WANTED, profile)
            out.append(MeterTelemetry(meter.id, {name: q.unit for name, q in polled.items()},
                                      profile.manufacturer, profile.model, meter.nmi))
    for mqtt_meter in cfg.mqtt.meters if cfg.mqtt else ():
        units = {"energy_import": "Wh"}
        if has_export(mqtt_meter):
            units["energy_export"] = "Wh"
        if mqtt_meter.power_path or mqtt_meter.format == "tasmota":
            units["power_total"] = "W"
        out.append(MeterTelemetry(mqtt_meter.id, units, None, "MQTT meter", mqtt_meter.nmi))
    return out


def object_id(text: str) -> str:
    """A discovery topic level: only ``[A-Za-z0-9_-]`` (a meter id's '.' becomes '_')."""
    return _ID_RE.sub("_", text)


@dataclass(frozen=True, slots=True)
class Topics:
    prefix: str
    discovery_prefix: str = "homeassistant"
    gateway_id: str = ""

    @property
    def status(self) -> str:
        return f"{self.prefix}/status"

    def value(self, meter: str, quantity: str) -> str:
        return f"{self.prefix}/{meter}/{quantity}"

    def availability(self, meter: str) -> str:
        return f"{self.prefix}/{meter}/availability"

    def interval(self, meter: str, channel: Channel = Channel.IMPORT) -> str:
        """Import keeps the topic it always had; another channel is a level below it (``.../interval/export``),
        so ``<prefix>/<meter>/interval/#`` gets every channel and the import subscribers see no new messages."""
        base = f"{self.prefix}/{meter}/interval"
        return base if channel is Channel.IMPORT else f"{base}/{channel.value}"

    def discovery(self, meter: str, quantity: str) -> str:
        return f"{self.discovery_prefix}/sensor/{object_id(self.gateway_id)}/{object_id(f'{meter}_{quantity}')}/config"


def label(quantity: str) -> str:
    """ "voltage_l1" → "Voltage L1": the entity name HA shows under the meter's device."""
    if quantity in _LABELS:
        return _LABELS[quantity]
    words = quantity.split("_")
    return " ".join(w.upper() if re.fullmatch(r"l[123]", w) else w.capitalize() for w in words)


def discovery_config(topics: Topics, meter: MeterTelemetry, quantity: str, unit: str) -> dict[str, Any]:
    """The retained discovery message of one sensor (field names as the module docstring lists them)."""
    device_class, state_class, precision = _BY_UNIT.get(unit, (None, "measurement", None))
    if quantity == "power_factor":
        device_class = "power_factor"
    gw = topics.gateway_id
    config: dict[str, Any] = {
        "name": label(quantity),
        "unique_id": f"meter-gateway_{object_id(gw)}_{object_id(meter.meter)}_{quantity}",
        "state_topic": topics.value(meter.meter, quantity),
        "state_class": state_class,
        "availability": [{"topic": topic, "payload_available": ONLINE, "payload_not_available": OFFLINE}
                         for topic in (topics.status, topics.availability(meter.meter))],
        "availability_mode": "all",
        "device": {
            "identifiers": [f"meter-gateway_{object_id(gw)}_{object_id(meter.meter)}"],
            "name": f"Meter {meter.meter}",
            **({"manufacturer": meter.manufacturer} if meter.manufacturer else {}),
            **({"model": meter.model} if meter.model else {}),
            **({"serial_number": meter.serial} if meter.serial else {}),
        },
        "origin": {"name": "meter-gateway", "sw_version": _version()},
    }
    if device_class is not None:
        config["device_class"] = device_class
    if unit:
        config["unit_of_measurement"] = unit
    if precision is not None:
        config["suggested_display_precision"] = precision
    return config


def discovery_messages(topics: Topics, meters: Iterable[MeterTelemetry]) -> list[tuple[str, bytes]]:
    return [(topics.discovery(m.meter, quantity), json.dumps(discovery_config(topics, m, quantity, unit),
                                                             sort_keys=True).encode())
            for m in meters for quantity, unit in m.units.items()]


def value_payload(value: float) -> bytes:
    """A plain number, as HA and most consumers read a state: whole values without a fraction (a Wh
    register), others to four decimals (enough for W, V, A, Hz) without trailing zeros."""
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value)).encode()
    return f"{value:.4f}".rstrip("0").rstrip(".").encode()


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class IntervalMessage:
    credit_id: int
    meter: str
    payload: bytes = field(repr=False)
    channel: Channel = Channel.IMPORT


def interval_message(credit_id: int, wire: str) -> IntervalMessage:
    """A closed interval (or a correction of one) from its credit as the outbox stores it.

    The credit's channel (absent from v1 credits: import) goes into the body and picks the topic:
    sequence numbers count per (meter, channel), so ``(meter, channel, seq)`` identifies a message.
    """
    signed = json.loads(wire)
    credit = signed["credit"]
    channel = parse_channel(str(credit.get("channel", Channel.IMPORT.value)))
    body = {
        "meter": credit["meter"], "channel": channel.value, "seq": credit["seq"],
        "kind": credit.get("kind", "interval"),
        "start": _iso(credit["start"]), "end": _iso(credit["end"]), "start_ts": credit["start"],
        "end_ts": credit["end"], "wh": credit["wh"], "quality": credit["quality"],
        "corrects": credit.get("corrects"), "register_end_wh": credit["register_end_wh"], "hash": signed["hash"],
    }
    return IntervalMessage(credit_id, str(credit["meter"]), json.dumps(body, sort_keys=True).encode(), channel)
