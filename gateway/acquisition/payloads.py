"""MQTT payload → cumulative energy reading (pure).

Every way a payload can be wrong becomes a :class:`PayloadError` with a short
machine-readable reason, so the source can count and quarantine it; nothing
here can take the daemon down.
"""

from __future__ import annotations

import json
import math
from typing import Any

from gateway.config import MqttMeterConfig
from gateway.errors import PayloadError

_TO_WH = {"Wh": 1.0, "kWh": 1000.0, "MWh": 1_000_000.0}


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
        raise PayloadError(f"{what} {value!r} is not a number", "wrong_type") from None
    if not math.isfinite(number):
        raise PayloadError(f"{what} is not finite", "not_finite")
    return number


def parse_energy(meter: MqttMeterConfig, payload: bytes, *, max_bytes: int) -> tuple[int, float | None]:
    """Return (register in whole Wh, meter's own timestamp if the payload has one)."""
    if len(payload) > max_bytes:
        raise PayloadError(f"payload of {len(payload)} bytes exceeds the {max_bytes}-byte limit", "oversized")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise PayloadError("payload is not UTF-8 text", "malformed") from None
    stamp: float | None = None
    if meter.format == "number":
        value = _number(text.strip(), "payload")
    else:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PayloadError(f"payload is not JSON: {exc.msg}", "malformed") from None
        assert meter.value_path is not None
        value = _number(_dig(doc, meter.value_path), meter.value_path)
        if meter.time_path:
            stamp = _number(_dig(doc, meter.time_path), meter.time_path)
    if value < 0:
        raise PayloadError(f"energy {value} is negative", "negative")
    return round(value * _TO_WH[meter.unit]), stamp
