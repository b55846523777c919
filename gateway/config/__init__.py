"""Load and check the gateway's TOML configuration.

Every problem is collected, not just the first: an installer on a ladder
wants the whole list in one go. Each problem names its path in the file
(``buses[0].meters[2].profile``), its line, what is wrong and a hint.
"""

from __future__ import annotations

import tomllib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gateway.config.model import (
    BillingApiConfig,
    BusConfig,
    GatewayConfig,
    LoggingConfig,
    ModbusMeterConfig,
    MqttConfig,
    MqttMeterConfig,
    WebConfig,
)
from gateway.config.toml_lines import Path as KeyPath
from gateway.config.toml_lines import key_lines, line_for
from gateway.errors import ConfigError, ProfileError

__all__ = [
    "BillingApiConfig",
    "BusConfig",
    "ConfigProblem",
    "GatewayConfig",
    "InvalidConfig",
    "LoggingConfig",
    "ModbusMeterConfig",
    "MqttConfig",
    "MqttMeterConfig",
    "WebConfig",
    "load_config",
    "parse_config",
]

_HINTS = {
    "extra_forbidden": "remove it or check its spelling against examples/gateway.toml",
    "missing": "add this key",
    "literal_error": "use one of the values listed",
    "string_pattern_mismatch": "use letters, digits, '.', '_' and '-' only",
    "greater_than_equal": "raise the value",
    "less_than_equal": "lower the value",
    "greater_than": "raise the value",
    "int_parsing": "write a whole number without quotes",
    "float_parsing": "write a number without quotes",
    "int_type": "write a whole number without quotes",
}


@dataclass(frozen=True)
class ConfigProblem:
    path: str
    line: int | None
    message: str
    hint: str = ""

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        hint = f" (hint: {self.hint})" if self.hint else ""
        return f"{where}{self.path}: {self.message}{hint}"


class InvalidConfig(ConfigError):
    """The file has one or more problems; ``problems`` lists every one."""

    def __init__(self, source: str, problems: list[ConfigProblem]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s)\n{lines}")


def _dotted(loc: KeyPath) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _semantic_problems(cfg: GatewayConfig, base_dir: Path) -> list[tuple[KeyPath, str, str]]:
    """Checks that need the whole file or the profile library."""
    # Imported here: the profile library is heavier than the schema and
    # only needed once the schema is known to be right.
    from gateway.profiles import resolve_profile

    found: list[tuple[KeyPath, str, str]] = []
    seen = Counter(cfg.all_meter_ids())
    for b, bus in enumerate(cfg.buses):
        units = Counter(m.unit_id for m in bus.meters)
        for m, meter in enumerate(bus.meters):
            where: KeyPath = ("buses", b, "meters", m)
            try:
                resolve_profile(meter.profile, base_dir)
            except ProfileError as exc:
                found.append(
                    ((*where, "profile"), str(exc), "run 'meter-gateway profiles list' for built-in ids")
                )
            if seen[meter.id] > 1:
                found.append(((*where, "id"), f"meter id {meter.id!r} is used more than once",
                              "every meter needs its own id"))
            if units[meter.unit_id] > 1:
                found.append(((*where, "unit_id"),
                              f"unit_id {meter.unit_id} is used by more than one meter on bus {bus.name!r}",
                              "give each device on a bus its own address (meter-gateway scan finds them)"))
    names = Counter(bus.name for bus in cfg.buses)
    for b, bus in enumerate(cfg.buses):
        if names[bus.name] > 1:
            found.append((("buses", b, "name"), f"bus name {bus.name!r} is used more than once", ""))
    if cfg.mqtt:
        for m, mqtt_meter in enumerate(cfg.mqtt.meters):
            if seen[mqtt_meter.id] > 1:
                found.append(((("mqtt", "meters", m, "id")),
                              f"meter id {mqtt_meter.id!r} is used more than once",
                              "every meter needs its own id"))
    return found


def parse_config(text: str, *, source: str = "<config>", base_dir: Path | None = None) -> GatewayConfig:
    """Validate TOML text; raise :class:`InvalidConfig` listing every problem."""
    base = base_dir or Path.cwd()
    try:
        raw: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = getattr(exc, "lineno", None)
        raise InvalidConfig(
            source, [ConfigProblem("(syntax)", line, f"not valid TOML: {exc}", "check quotes and brackets")]
        ) from None
    lines = key_lines(text)
    try:
        cfg = GatewayConfig.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            msg = err["msg"]
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, "):]
            problems.append(ConfigProblem(_dotted(loc), line_for(lines, loc), msg, _HINTS.get(err["type"], "")))
        raise InvalidConfig(source, problems) from None
    if not cfg.data_dir.is_absolute():
        cfg = cfg.model_copy(update={"data_dir": (base / cfg.data_dir).resolve()})
    semantic = _semantic_problems(cfg, base)
    if semantic:
        raise InvalidConfig(
            source, [ConfigProblem(_dotted(loc), line_for(lines, loc), msg, hint) for loc, msg, hint in semantic]
        )
    return cfg


def load_config(path: str | Path) -> GatewayConfig:
    """Read and validate a config file. Relative paths in it are relative to the file."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidConfig(str(file), [ConfigProblem("(file)", None, f"cannot read: {exc.strerror}")]) from None
    return parse_config(text, source=str(file), base_dir=file.resolve().parent)
