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

Export (feed-in) is a channel of its own (:mod:`gateway.channels`): ``export_path`` points at the
cumulative exported energy in the same payload and unit; for ``tasmota`` it is ``ENERGY.ExportActive``
(Tasmota's exported active energy, in kWh like Total) unless set otherwise, and a Tasmota device that does
not send it (most plugs measure one direction) simply has no export value. Each channel's value is
judged on its own: a malformed export value is a problem of that channel (the source quarantines the
payload for it) and the import value of the same payload still counts, and the other way round. Only
a payload with no usable value at all, or a broken document or timestamp, is refused as a whole.

Power (a live value, not billing data) comes from ``power_path`` in W, for Tasmota ``ENERGY.Power`` unless
set otherwise. A payload without it, or with something unusable there, still gives its energy: power is
then simply not shown.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from gateway.channels import Channel
from gateway.config import MqttMeterConfig
from gateway.errors import PayloadError

MAX_REGISTER_WH = 2**53
"""Larger values are garbage (and would not fit the ledger's 64-bit integers once scaled)."""
_TO_WH = {"Wh": 1.0, "kWh": 1000.0, "MWh": 1_000_000.0}
TASMOTA_VALUE_PATH = "ENERGY.Total"
TASMOTA_EXPORT_PATH = "ENERGY.ExportActive"
"""Tasmota's exported active energy (``D_JSON_EXPORT_ACTIVE``), sent by energy drivers that measure export."""
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
    registers: dict[Channel, int]
    """Each channel's register in whole Wh that the payload gives usably (at least one)."""
    stamp: float | None
    """The meter's own timestamp, if the payload has one."""
    power_w: float | None = None
    """Instantaneous power, if the payload carries it where ``power_path`` says."""
    problems: dict[Channel, PayloadError] = field(default_factory=dict)
    """Channels whose value is there but unusable (or missing where the config requires it)."""

    @property
    def wh(self) -> int | None:
        """The import register, if the payload gave a usable one."""
        return self.registers.get(Channel.IMPORT)


def parse_energy(meter: MqttMeterConfig, payload: bytes, *, max_bytes: int) -> tuple[int, float | None]:
    """Return (import register in whole Wh, meter's own timestamp if the payload has one)."""
    parsed = parse_payload(meter, payload, max_bytes=max_bytes)
    if parsed.wh is None:
        raise parsed.problems[Channel.IMPORT]
    return parsed.wh, parsed.stamp


def export_path(meter: MqttMeterConfig) -> tuple[str | None, bool]:
    """Where the export value is, and whether it must be there (configured) or may be absent (Tasmota's default)."""
    if meter.export_path:
        return meter.export_path, True
    if meter.format == "tasmota":
        return TASMOTA_EXPORT_PATH, False
    return None, False


def has_export(meter: MqttMeterConfig) -> bool:
    """Whether the meter can have an export channel (configured, or a Tasmota device that may send it)."""
    return export_path(meter)[0] is not None


def _wh(meter: MqttMeterConfig, value: float, what: str) -> int:
    if value < 0:
        raise PayloadError(f"{what} {value} is negative", "negative")
    wh = value * _TO_WH[meter.unit]
    if wh > MAX_REGISTER_WH:
        raise PayloadError(f"{what} {value} {meter.unit} is beyond any real register", "out_of_range")
    return round(wh)


def _power(meter: MqttMeterConfig, doc: Any) -> float | None:
    path = meter.power_path or (TASMOTA_POWER_PATH if meter.format == "tasmota" else None)
    if path is None:
        return None
    try:
        return _number(_dig(doc, path), path)
    except PayloadError:
        return None


def parse_payload(meter: MqttMeterConfig, payload: bytes, *, max_bytes: int) -> Parsed:
    """Each channel's register, the meter's timestamp and the power of one payload.

    PayloadError when the payload as a whole is unusable (size, encoding, JSON, timestamp) or no
    channel has a usable value (the import channel's error, else the export's); otherwise the
    channels that failed are in ``problems``.
    """
    if len(payload) > max_bytes:
        raise PayloadError(f"payload of {len(payload)} bytes exceeds the {max_bytes}-byte limit", "oversized")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise PayloadError("payload is not UTF-8 text", "malformed") from None
    stamp: float | None = None
    power: float | None = None
    registers: dict[Channel, int] = {}
    problems: dict[Channel, PayloadError] = {}
    if meter.format == "number":
        registers[Channel.IMPORT] = _wh(meter, _number(text.strip(), "payload"), "energy")
        return Parsed(registers, None)
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
    try:
        registers[Channel.IMPORT] = _wh(meter, _number(_dig(doc, value_path), value_path), "energy")
    except PayloadError as exc:
        problems[Channel.IMPORT] = exc
    path, required = export_path(meter)
    if path is not None:
        try:
            node = _dig(doc, path)
        except PayloadError as exc:
            if required:  # configured, so it belongs there; Tasmota's default field is sent by some drivers only
                problems[Channel.EXPORT] = exc
        else:
            try:
                registers[Channel.EXPORT] = _wh(meter, _number(node, path), "exported energy")
            except PayloadError as exc:
                problems[Channel.EXPORT] = exc
    if not registers:
        raise problems.get(Channel.IMPORT) or problems[Channel.EXPORT]
    if time_path:
        stamp = _timestamp(_dig(doc, time_path), time_path, meter.time_zone)
    power = _power(meter, doc)
    return Parsed(registers, stamp, power, problems)

