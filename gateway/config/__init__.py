"""Load and check the gateway's TOML configuration.

Every problem is collected, not just the first: an installer on a ladder
wants the whole list in one go. Each problem names its path in the file
(``buses[0].meters[2].profile``), its line, what is wrong and a hint.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.config.model import (
    BillingApiConfig,
    BillingConfig,
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
from gateway.schema import ValidationError

if TYPE_CHECKING:
    from gateway.config.stellar import StellarConfig

__all__ = [
    "BillingApiConfig",
    "BillingConfig",
    "BusConfig",
    "ConfigProblem",
    "GatewayConfig",
    "InvalidConfig",
    "LoggingConfig",
    "ModbusMeterConfig",
    "MqttConfig",
    "MqttMeterConfig",
    "StellarConfig",
    "WebConfig",
    "ceiling_report",
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
    "float_type": "write a number without quotes, e.g. 60",
}
URL_HINT = ("a URL is the scheme http:// or https://, then the host name or address, an optional :port and "
            "path, e.g. https://billing.example.com/api")


def _hint(loc: tuple[Any, ...], error_type: str) -> str:
    if loc and loc[-1] == "url" and error_type == "string_pattern_mismatch":
        return URL_HINT  # the generic pattern hint (letters, digits, ...) would mislead here
    return _HINTS.get(error_type, "")


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


def _list(node: Any, key: str) -> list[Any]:
    value = node.get(key) if isinstance(node, dict) else None
    return value if isinstance(value, list) else []


def _semantic_problems(raw: dict[str, Any], base_dir: Path) -> list[tuple[KeyPath, str, str]]:
    """Checks across the file and against the profile library.

    They run on the raw document, so they are reported together with schema
    errors instead of only after those are fixed.
    """
    # Imported here: the profile library is only needed for this check.
    from gateway.acquisition.portlock import endpoint_key
    from gateway.profiles import resolve_profile

    found: list[tuple[KeyPath, str, str]] = []
    where_ids: list[tuple[KeyPath, Any]] = []
    buses = _list(raw, "buses")
    bus_names = Counter(b.get("name") for b in buses if isinstance(b, dict))
    lines: dict[str, Any] = {}
    for b, bus in enumerate(buses):
        if isinstance(bus, dict) and bus_names[bus.get("name")] > 1:
            found.append((("buses", b, "name"), f"bus name {bus.get('name')!r} is used more than once", ""))
        if isinstance(bus, dict):
            # Two buses on one line would be two masters: the second could never take the line.
            device, host, port = bus.get("device"), bus.get("host"), bus.get("port") or 502
            key = (endpoint_key(device=device) if isinstance(device, str) and device else
                   endpoint_key(host=host, port=port) if isinstance(host, str) and host else None)
            if key is not None and key in lines:
                found.append((("buses", b, "device" if device else "host"),
                              f"bus {bus.get('name')!r} uses the same line as bus {lines[key]!r}",
                              "put all meters of one line under one [[buses]] entry"))
            elif key is not None:
                lines[key] = bus.get("name")
        meters = _list(bus, "meters")
        units = Counter(m.get("unit_id") for m in meters if isinstance(m, dict))
        for m, meter in enumerate(meters):
            if not isinstance(meter, dict):
                continue
            where: KeyPath = ("buses", b, "meters", m)
            where_ids.append((where, meter.get("id")))
            profile = meter.get("profile")
            if isinstance(profile, str) and profile:
                try:
                    resolved = resolve_profile(profile, base_dir)
                except ProfileError as exc:
                    found.append(((*where, "profile"), str(exc).splitlines()[0],
                                  "run 'meter-gateway profiles list' for built-in ids"))
                else:
                    if "energy_import" not in resolved.quantities:
                        found.append(((*where, "profile"), f"profile {profile!r} has no energy_import quantity, "
                                      "so this meter would never be read",
                                      "map the meter's cumulative import energy register as energy_import"))
                    found.extend(_quantity_problems(where, meter.get("quantities"), profile, resolved.quantities))
            unit = meter.get("unit_id")
            if isinstance(unit, int) and units[unit] > 1:
                found.append(((*where, "unit_id"),
                              f"unit_id {unit} is used by more than one meter on bus {bus.get('name')!r}",
                              "give each device on a bus its own address (meter-gateway scan finds them)"))
    mqtt = raw.get("mqtt")
    topics: list[tuple[str, Any]] = []
    for m, meter in enumerate(_list(mqtt, "meters")):
        if isinstance(meter, dict):
            where_ids.append((("mqtt", "meters", m), meter.get("id")))
            topic = meter.get("topic")
            if not isinstance(topic, str):
                continue
            # A message goes to the first meter whose pattern matches it.
            earlier = next((other for pattern, other in topics if _topic_covers(pattern, topic)), None)
            if earlier is not None:
                found.append((("mqtt", "meters", m, "topic"),
                              f"topic {topic!r} is already matched by meter {earlier!r}, so this meter "
                              "would never get a message", "give each meter its own topic, or list the "
                              "specific topic before a wildcard one"))
            topics.append((topic, meter.get("id")))
    ids = Counter(meter_id for _, meter_id in where_ids if isinstance(meter_id, str))
    for where, meter_id in where_ids:
        if isinstance(meter_id, str) and ids[meter_id] > 1:
            found.append(((*where, "id"), f"meter id {meter_id!r} is used more than once",
                          "every meter needs its own id"))
    found.extend(_billing_problems(raw, [where for where, _ in where_ids]))
    # These sections' modules are imported only for a file that has them ([p2p]'s imports pydantic).
    if "stellar" in raw:
        from gateway.config.stellar import stellar_problems

        found.extend(stellar_problems(raw, base_dir))
    if "p2p" in raw:
        from gateway.config.p2p import p2p_problems

        found.extend(p2p_problems(raw, {i for _, i in where_ids if isinstance(i, str)}))
    return found


def _quantity_problems(where: KeyPath, wanted: Any, profile: str,
                       known: Mapping[str, object]) -> list[tuple[KeyPath, str, str]]:
    """Quantities a meter asks for that its profile does not map: each would never be polled."""
    if not isinstance(wanted, list):
        return []
    unknown = [name for name in wanted if isinstance(name, str) and name not in known]
    if not unknown:
        return []
    names = ", ".join(repr(name) for name in unknown)
    return [((*where, "quantities"), f"profile {profile!r} has no quantity {names}; it has: {', '.join(sorted(known))}",
             "choose from the profile's list ('meter-gateway read ... --profile P' prints each with its value)")]


def _topic_covers(pattern: str, topic: str) -> bool:
    """Whether every message ``topic`` (itself possibly a pattern) can match also matches ``pattern``."""
    p, t = pattern.split("/"), topic.split("/")
    for i, level in enumerate(p):
        if level == "#":
            return True
        if i >= len(t) or t[i] == "#" or (level != "+" and (t[i] == "+" or level != t[i])):
            return False
    return len(p) == len(t)


def _billing_problems(raw: dict[str, Any], meters: list[KeyPath]) -> list[tuple[KeyPath, str, str]]:
    """Tariff names that point nowhere, budgets without a tariff or finer than its currency, alerts
    without a broker: each would otherwise surface only when the first bill or alert is due."""
    tariffs = raw.get("tariffs")
    tariffs = tariffs if isinstance(tariffs, dict) else {}
    billing = raw.get("billing")
    billing = billing if isinstance(billing, dict) else {}
    known = ", ".join(repr(name) for name in tariffs) or "none defined"
    hint = "define it as a [tariffs.NAME] table or correct the name"
    found: list[tuple[KeyPath, str, str]] = []
    default = billing.get("tariff")
    if isinstance(default, str) and default not in tariffs:
        found.append((("billing", "tariff"), f"no tariff named {default!r} (tariffs: {known})", hint))
    if billing.get("alert_topic") is not None and not isinstance(raw.get("mqtt"), dict):
        found.append((("billing", "alert_topic"), "budget alerts are published to the [mqtt] broker, but there is "
                       "no [mqtt] section", "add [mqtt] with the broker's host and port, or remove alert_topic"))
    for where in meters:
        node: Any = raw
        for part in where:
            node = node[part]
        name = node.get("tariff")
        if isinstance(name, str) and name not in tariffs:
            found.append(((*where, "tariff"), f"no tariff named {name!r} (tariffs: {known})", hint))
            continue
        budget = node.get("budget")
        if not isinstance(budget, str):
            continue
        effective = name if isinstance(name, str) else default
        if not isinstance(effective, str):
            found.append(((*where, "budget"), "a budget needs a tariff to price the projection against",
                          "set tariff = \"NAME\" on this meter or [billing] tariff for all meters"))
            continue
        tariff = tariffs.get(effective)
        minor = tariff.get("minor_units", 2) if isinstance(tariff, dict) else 2
        decimals = len(budget.partition(".")[2].rstrip("0"))
        if isinstance(minor, int) and decimals > minor:
            found.append(((*where, "budget"), f"budget {budget!r} has more decimal places than tariff "
                          f"{effective!r} allows ({minor})", "round it to the currency's smallest unit"))
    return found


def parse_config(text: str, *, source: str = "<config>", base_dir: Path | None = None) -> GatewayConfig:
    """Validate TOML text; raise :class:`InvalidConfig` listing every problem."""
    base = base_dir or Path.cwd()
    try:
        raw: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # Python 3.11's TOMLDecodeError carries the position only in its message.
        found = re.search(r"at line (\d+)", str(exc))
        line = int(found.group(1)) if found else None
        raise InvalidConfig(
            source, [ConfigProblem("(syntax)", line, f"not valid TOML: {exc}", "check quotes and brackets")]
        ) from None
    lines = key_lines(text)
    problems: list[ConfigProblem] = []
    cfg: GatewayConfig | None = None
    try:
        cfg = GatewayConfig.model_validate(raw)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            hint = str((err.get("ctx") or {}).get("hint") or _hint(loc, err["type"]))
            problems.append(ConfigProblem(_dotted(loc), line_for(lines, loc), msg, hint))
    for loc, msg, hint in _semantic_problems(raw, base):
        problems.append(ConfigProblem(_dotted(loc), line_for(lines, loc), msg, hint))
    if problems or cfg is None:
        problems.sort(key=lambda p: (p.line or 0, p.path))
        raise InvalidConfig(source, problems)
    return _relative_to(cfg, base)


def _relative_to(cfg: GatewayConfig, base: Path) -> GatewayConfig:
    """Paths in the file are relative to the file, as its header says; the daemon's cwd does not matter."""
    def absolute(path: Path) -> Path:
        return path if path.is_absolute() else (base / path).resolve()

    cfg = cfg.model_copy(update={"data_dir": absolute(cfg.data_dir)})
    api = cfg.uplinks.billing_api
    if api is not None and api.token_file is not None:
        api = api.model_copy(update={"token_file": absolute(api.token_file)})
        cfg = cfg.model_copy(update={"uplinks": cfg.uplinks.model_copy(update={"billing_api": api})})

    def broker_files(section: Any) -> Any:
        update: dict[str, Any] = {}
        if section.password_file is not None:
            update["password_file"] = absolute(section.password_file)
        if section.tls is not None:
            update["tls"] = section.tls.model_copy(update={
                name: absolute(getattr(section.tls, name)) for name in ("ca_file", "cert_file", "key_file")
                if getattr(section.tls, name) is not None})
        return section.model_copy(update=update)

    if cfg.mqtt is not None:
        cfg = cfg.model_copy(update={"mqtt": broker_files(cfg.mqtt)})
    if cfg.telemetry is not None:
        cfg = cfg.model_copy(update={"telemetry": broker_files(cfg.telemetry)})
    for name in ("profiles_dir", "tls_cert_file", "tls_key_file"):
        value = getattr(cfg.web, name)
        if value is not None:
            cfg = cfg.model_copy(update={"web": cfg.web.model_copy(update={name: absolute(value)})})
    return cfg


def host_problems(path: str | Path, cfg: GatewayConfig) -> list[ConfigProblem]:
    """What the file cannot show: secret files the daemon must read and a data dir it must write.

    Checked as the user that runs the command, so ``check-config`` run as the service user (the
    installer does) sees what the daemon will see; ``run`` refuses on these too, before it touches the
    ledger.
    """
    text = Path(path).read_text(encoding="utf-8")
    lines = key_lines(text)
    found: list[ConfigProblem] = []
    secrets: list[tuple[KeyPath, Path, str]] = []
    if cfg.uplinks.billing_api is not None and cfg.uplinks.billing_api.token_file is not None:
        secrets.append((("uplinks", "billing_api", "token_file"), cfg.uplinks.billing_api.token_file,
                        "write the billing API's bearer token there (one line), owned by the service user, "
                        "mode 0600"))
    for name, section in (("mqtt", cfg.mqtt), ("telemetry", cfg.telemetry)):
        if section is None:
            continue
        if section.password_file is not None:
            secrets.append(((name, "password_file"), section.password_file,
                            "write the broker password there (one line), owned by the service user, mode 0600"))
        for key, hint in (("ca_file", "the PEM file of the CA that signed the broker's certificate"),
                          ("cert_file", "this box's client certificate (PEM)"),
                          ("key_file", "the client certificate's key (PEM), owned by the service user, mode 0600")):
            file = getattr(section.tls, key) if section.tls is not None else None
            if file is not None:
                secrets.append(((name, "tls", key), file, f"put {hint} there"))
    if cfg.web.tls is not None:
        secrets.append((("web", "tls_cert_file"), cfg.web.tls[0], "the PEM certificate the page is served with"))
        secrets.append((("web", "tls_key_file"), cfg.web.tls[1],
                        "the certificate's PEM private key, owned by the service user, mode 0600"))
    for loc, file, hint in secrets:
        if not os.access(file, os.R_OK) or not file.is_file():
            why = "does not exist" if not file.exists() else "is not a readable file for this user"
            found.append(ConfigProblem(_dotted(loc), line_for(lines, loc), f"{file} {why}", hint))
    data_dir = cfg.data_dir
    existing = data_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and (not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK)):
        what = "is not writable" if existing == data_dir else f"cannot be created ({existing} is not writable)"
        found.append(ConfigProblem("data_dir", line_for(lines, ("data_dir",)), f"{data_dir} {what} for this user",
                                   "create it owned by the user the daemon runs as (the installer does this), "
                                   "or point data_dir at a writable place"))
    return found


def ceiling_report(cfg: GatewayConfig, base_dir: Path | None = None) -> list[str]:
    """One line per meter: the most its readings may credit (W) and where that number comes from.

    A meter on the default ceiling gets a warning with what to set instead: the default is a guess
    (see :mod:`gateway.config.ceiling`). For ``check-config``; profiles must already resolve.
    """
    from gateway.config.ceiling import Ceiling, modbus_ceiling, mqtt_ceiling
    from gateway.profiles import resolve_profile

    found: list[tuple[str, Ceiling]] = []
    for bus in cfg.buses:
        for meter in bus.meters:
            found.append((meter.id, modbus_ceiling(meter, resolve_profile(meter.profile, base_dir))))
    for mqtt_meter in cfg.mqtt.meters if cfg.mqtt else ():
        found.append((mqtt_meter.id, mqtt_ceiling(mqtt_meter)))
    lines = []
    for meter_id, ceiling in found:
        if ceiling.is_default:
            lines.append(f"warning: meter {meter_id}: power ceiling {ceiling.describe()}, a guess: a faster rise is "
                         f"held as a misread; {ceiling.hint}")
        else:
            lines.append(f"meter {meter_id}: power ceiling {ceiling.describe()}")
    return lines


def __getattr__(name: str) -> Any:
    """``StellarConfig`` on demand: a box without [stellar] never needs its module."""
    if name == "StellarConfig":
        from gateway.config.stellar import StellarConfig

        return StellarConfig
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_config(path: str | Path) -> GatewayConfig:
    """Read and validate a config file. Relative paths in it are relative to the file."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidConfig(str(file), [ConfigProblem("(file)", None, f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError as exc:
        data = file.read_bytes()
        line = data[: exc.start].count(b"\n") + 1
        raise InvalidConfig(str(file), [ConfigProblem(
            "(file)", line, f"not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start})",
            "save the file as UTF-8 (e.g. 'iconv -f latin1 -t utf-8'); TOML files must be UTF-8")]) from None
    return parse_config(text, source=str(file), base_dir=file.resolve().parent)
