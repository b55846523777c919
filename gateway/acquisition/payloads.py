"""MQTT payload → cumulative energy reading (pure).

Every way a payload can be wrong becomes a :class:`PayloadError` with a short
machine-readable reason, so the source can count and quarantine it; nothing
here can take the daemon down.

Formats:

* ``json``: any JSON document; ``value_path`` is a dotted path to the register
  (list indices as numbers), ``time_path`` optionally to the meter's timestamp.
* ``number``: the payload is the register as plain text.
* ``tasmota``: Tasmota's energy monitoring telemetry (``tele/<device>/SENSOR``):
  ``{"Time": "2024-05-01T12:00:00", "ENERGY": {"Total": 123.456, ...}}`` with
  Total in kWh and Time in the device's local time without an offset.
* ``tasmota-sml``: Tasmota's SML script output for electronic meters read
  through an optical head: ``{"Time": ..., "<name>": {"<field>": 123.4}}``.
  The names come from the user's script, so ``value_path`` is required.

Power (a live value, not billing data) comes from ``power_path`` in W, for Tasmota ``ENERGY.Power`` unless
set otherwise. A payload without it, or with something unusable there, still gives its energy: power is
then simply not shown.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from gateway.config import MqttMeterConfig
from gateway.errors import PayloadError

MAX_REGISTER_WH = 2**53
"""Larger values are garbage (and would not fit the ledger's 64-bit integers once scaled)."""
_TO_WH = {"Wh": 1.0, "kWh": 1000.0, "MWh": 1_000_000.0}
TASMOTA_VALUE_PATH = "ENERGY.Total"
TASMOTA_TIME_PATH = "Time"
TASMOTA_POWER_PATH = "ENERGY.Power"
MAX_JSON_DEPTH = 32
"""Deeper documents are refused before parsing: no meter nests that deep, and it bounds the parser's work."""


def _dig(doc: Any, path: str) -> Any:
    node = doc
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise PayloadError(f"no field {path!r} in payload", "missing_field")
    return node


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise PayloadError(f"{what} is {type(value).__name__}, expected a number", "wrong_type")
    try:
        number = float(value)
    except ValueError:
        raise PayloadError(f"{what} {str(value)[:40]!r} is not a number", "wrong_type") from None
    except OverflowError:  # an integer with hundreds of digits
        raise PayloadError(f"{what} is too large for any register", "out_of_range") from None
    if not math.isfinite(number):
        raise PayloadError(f"{what} is not finite", "not_finite")
    return number


def _timestamp(value: Any, what: str, zone: str) -> float:
    """Unix seconds, or ISO 8601 text (naive text is local time in ``zone``)."""
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            try:
                when = datetime.fromisoformat(value)
            except ValueError:
                raise PayloadError(f"{what} {value[:40]!r} is neither Unix seconds nor ISO 8601", "bad_time") from None
            if when.tzinfo is None:
                when = when.replace(tzinfo=ZoneInfo(zone))
            return when.timestamp()
        value = number
    stamp = _number(value, what)
    if stamp > 1e11:
        stamp /= 1000  # milliseconds, as some firmware sends
    return stamp


def _depth_ok(text: str) -> bool:
    depth = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return False
        elif ch in "]}":
            depth -= 1
    return True


@dataclass(frozen=True, slots=True)
class Parsed:
    wh: int
    """The register in whole Wh."""
    stamp: float | None
    """The meter's own timestamp, if the payload has one."""
    power_w: float | None = None
    """Instantaneous power, if the payload carries it where ``power_path`` says."""


def parse_energy(meter: MqttMeterConfig, payload: bytes, *, max_bytes: int) -> tuple[int, float | None]:
    """Return (register in whole Wh, meter's own timestamp if the payload has one)."""
    parsed = parse_payload(meter, payload, max_bytes=max_bytes)
    return parsed.wh, parsed.stamp


def _power(meter: MqttMeterConfig, doc: Any) -> float | None:
    path = meter.power_path or (TASMOTA_POWER_PATH if meter.format == "tasmota" else None)
    if path is None:
        return None
    try:
        return _number(_dig(doc, path), path)
    except PayloadError:
        return None


def parse_payload(meter: MqttMeterConfig, payload: bytes, *, max_bytes: int) -> Parsed:
    """The register, the meter's timestamp and the power of one payload; PayloadError if it has no usable energy."""
    if len(payload) > max_bytes:
        raise PayloadError(f"payload of {len(payload)} bytes exceeds the {max_bytes}-byte limit", "oversized")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise PayloadError("payload is not UTF-8 text", "malformed") from None
    stamp: float | None = None
    power: float | None = None
    if meter.format == "number":
        value = _number(text.strip(), "payload")
    else:
        if not _depth_ok(text):
            raise PayloadError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels", "malformed")
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PayloadError(f"payload is not JSON: {exc.msg}", "malformed") from None
        except ValueError as exc:  # e.g. an integer longer than Python's conversion limit
            raise PayloadError(f"payload is not usable JSON: {str(exc)[:80]}", "malformed") from None
        tasmota = meter.format in ("tasmota", "tasmota-sml")
        value_path = meter.value_path or TASMOTA_VALUE_PATH
        time_path = meter.time_path or (TASMOTA_TIME_PATH if tasmota else None)
        value = _number(_dig(doc, value_path), value_path)
        if time_path:
            stamp = _timestamp(_dig(doc, time_path), time_path, meter.time_zone)
        power = _power(meter, doc)
    if value < 0:
        raise PayloadError(f"energy {value} is negative", "negative")
    wh = value * _TO_WH[meter.unit]
    if wh > MAX_REGISTER_WH:
        raise PayloadError(f"energy {value} {meter.unit} is beyond any real register", "out_of_range")
    return Parsed(round(wh), stamp, power)
