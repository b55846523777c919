"""The configuration file's schema.

Models are frozen and forbid unknown keys, so a typo (``pol_s``) is an error
with a path instead of a silently ignored setting. They are :mod:`gateway.schema` records, not
pydantic models: the daemon reads this schema at every start, and pydantic would cost it about
13 MiB. The sections only some boxes have are imported only when the file has them
(:func:`gateway.schema.lazy_model`): ``[stellar]`` (a gateway.schema record too), ``[p2p]`` and
``[soroban]`` (still pydantic models).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.schema import Field, Model, Strict, field_validator, lazy_model, model_validator

if TYPE_CHECKING:
    from gateway.billing.tariff import Tariff
    from gateway.config.p2p import P2PConfig, SorobanConfig
    from gateway.config.stellar import StellarConfig
else:  # imported only when the file has the section; [p2p] and [soroban] are pydantic models
    Tariff = lazy_model("gateway.billing.tariff", "Tariff")  # the billing engine: only for a box with tariffs
    P2PConfig = lazy_model("gateway.config.p2p", "P2PConfig")
    SorobanConfig = lazy_model("gateway.config.p2p", "SorobanConfig")
    StellarConfig = lazy_model("gateway.config.stellar", "StellarConfig")

MeterId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$",
        description="Stable meter identifier: letters, digits, '.', '_' and '-'",
    ),
]

QuantityName = Annotated[
    str, Field(pattern=r"^[a-z][a-z0-9_]*$", description="a quantity of the meter's profile, e.g. power_total"),
]
ENERGY_IMPORT = "energy_import"

TariffName = Annotated[
    str,
    Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$",
          description="key of a table under [tariffs]"),
]

Budget = Annotated[
    str,
    Field(
        pattern=r"^[0-9]+(\.[0-9]+)?$",
        description="budget per billing period in major units of the tariff's currency, as a decimal "
        'string ("120.00"): a string, like every amount in a tariff, so it means exactly what was written',
    ),
]


def _divides(divisor: float, total: float) -> bool:
    """Exact for whole numbers, tolerant of binary fractions like 0.2 for test periods."""
    ratio = total / divisor
    return abs(ratio - round(ratio)) < 1e-9


class _Model(Model):
    """Frozen, unknown keys refused (every :class:`gateway.schema.Model` is)."""


class ModbusMeterConfig(_Model):
    id: MeterId
    unit_id: int = Field(ge=1, le=247, description="Modbus device address on the bus")
    profile: str = Field(min_length=1, description="built-in profile id or path to a profile file")
    # Strict: TOML has numbers, so a quoted "60" is a mistake to show, not to coerce quietly.
    poll_s: Annotated[float, Strict()] = Field(default=60.0, gt=0, le=900)
    nmi: str | None = None
    poll_instant_s: Annotated[float, Strict()] | None = Field(
        default=None, gt=0, le=900,
        description="period for instantaneous values (power, voltage); default: read them with the energy",
    )
    quantities: tuple[QuantityName, ...] | None = Field(
        default=None, min_length=1,
        description="profile quantities to poll (energy_* every poll_s, the rest every poll_instant_s); "
        "energy_import (and energy_export where the profile maps it: the export channel) is always polled, "
        "listed or not. Default: energy_import, power_total, voltage_l1",
    )
    max_power_w: float | None = Field(
        default=None, gt=0,
        description="the most this meter can measure (e.g. for CT-connected meters: CT rating x voltage x "
        "phases); overrides the profile's; a faster rise is held as a misread. Default: the profile's, else "
        "100 kW (check-config shows which)",
    )
    turnaround_s: float = Field(
        default=0.0, ge=0, le=1.0,
        description="the device's think time before it answers: added to its timeout and its read-plan cost",
    )
    tariff: TariffName | None = Field(default=None, description="name of a [tariffs] table; default billing.tariff")
    budget: Budget | None = None
    serial: str | None = Field(
        default=None, min_length=1, max_length=64, pattern=r"^[!-~]+$",
        description="the meter's serial number (nameplate) for its Stellar account; read from the meter when its "
        "profile has a serial register",
    )

    @field_validator("quantities")
    @classmethod
    def _energy_always(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return value
        repeated = sorted({name for name in value if value.count(name) > 1})
        if repeated:
            raise ValueError(f"quantities {', '.join(repeated)} listed more than once")
        # The bill rests on the import register: it is polled whatever the list says.
        return value if ENERGY_IMPORT in value else (ENERGY_IMPORT, *value)

    @field_validator("poll_s", "poll_instant_s")
    @classmethod
    def _aligned(cls, value: float | None) -> float | None:
        if value is None:
            return value
        if not (_divides(value, 900) or _divides(900, value)):
            raise ValueError(
                "must divide 900 (e.g. 10, 15, 30, 60, 300) so that a poll lands on every "
                "15-minute boundary"
            )
        return value


class BusConfig(_Model):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    kind: Literal["tcp", "rtu", "rtu-over-tcp"] = "tcp"
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    device: str | None = Field(default=None, description="serial device node, e.g. /dev/ttyUSB0")
    baud: int = Field(default=9600, ge=1200, le=115200)
    framing: Literal["8N1", "8E1", "8N2", "8O1"] = "8N1"
    timeout_s: float = Field(default=1.0, gt=0, le=30)
    retries: int = Field(default=1, ge=0, le=5)
    meters: tuple[ModbusMeterConfig, ...] = ()
    inter_frame_gap_s: float | None = Field(
        default=None, ge=0, le=1.0,
        description="silence before every request; default (and minimum) is t3.5 for the baud rate",
    )
    device_switch_delay_s: float = Field(
        default=0.0, ge=0, le=2.0,
        description="extra silence when the next request goes to a different unit id (some meters need it)",
    )
    one_off_share: float = Field(
        default=0.2, gt=0, le=1.0,
        description="the most of this line's time that one-off reads (local API, commissioning) may take while "
        "polls are waiting, so the regular polls keep their period; an idle line serves them at full speed",
    )

    @model_validator(mode="after")
    def _endpoint(self) -> BusConfig:
        if self.kind in ("tcp", "rtu-over-tcp") and not self.host:
            raise ValueError(f"a '{self.kind}' bus needs 'host' (and usually 'port')")
        if self.kind == "rtu" and not self.device:
            raise ValueError("an 'rtu' bus needs 'device', e.g. device = \"/dev/ttyUSB0\"")
        return self


class MqttMeterConfig(_Model):
    id: MeterId
    topic: str = Field(min_length=1, description="topic or pattern with MQTT wildcards + and #")
    format: Literal["json", "number", "tasmota", "tasmota-sml"] = "json"
    value_path: str | None = Field(
        default=None, description="dotted path to the cumulative energy in a JSON payload (the import channel)"
    )
    export_path: str | None = Field(
        default=None, min_length=1,
        description="dotted path to the cumulative exported energy (feed-in) in the same payload, same unit: the "
        "meter's export channel. Default for format 'tasmota': ENERGY.ExportActive, used when the device sends it",
    )
    time_path: str | None = Field(
        default=None, description="dotted path to a timestamp (Unix seconds or ISO 8601), optional"
    )
    unit: Literal["Wh", "kWh", "MWh"] = "kWh"
    power_path: str | None = Field(
        default=None, min_length=1,
        description="dotted path to the instantaneous power in W, shown as a live value; default for "
        "format 'tasmota': ENERGY.Power",
    )
    nmi: str | None = None
    time_zone: str = Field(
        default="UTC", description="zone of ISO timestamps without an offset (Tasmota sends local time)"
    )
    max_power_w: float | None = Field(
        default=None, gt=0,
        description="the most this meter can measure: a faster rise is held as a misread. Default 100 kW "
        "(check-config warns): set it, e.g. 3700 for a 16 A plug",
    )
    tariff: TariffName | None = Field(default=None, description="name of a [tariffs] table; default billing.tariff")
    budget: Budget | None = None
    serial: str | None = Field(
        default=None, min_length=1, max_length=64, pattern=r"^[!-~]+$",
        description="the meter's serial number (nameplate) for its Stellar account; read from the meter when its "
        "profile has a serial register",
    )

    @model_validator(mode="after")
    def _path_for_json(self) -> MqttMeterConfig:
        if self.format == "json" and not self.value_path:
            raise ValueError("format 'json' needs value_path, e.g. value_path = \"ENERGY.Total\"")
        if self.format == "number" and self.export_path:
            raise ValueError("format 'number' carries one value: export_path needs a JSON payload "
                             "(format 'json', 'tasmota' or 'tasmota-sml')")
        if self.export_path is not None and self.export_path == (self.value_path or (
                "ENERGY.Total" if self.format == "tasmota" else None)):
            raise ValueError(f"export_path {self.export_path!r} is the import value's path: an import Wh must never "
                             "count as feed-in; give the payload's export field, e.g. \"SML.Total_out\"")
        if self.format == "tasmota-sml" and not self.value_path:
            raise ValueError("format 'tasmota-sml' needs value_path (sensor name and field), "
                             "e.g. value_path = \"SML.Total_in\"")
        if "#" in self.topic[:-1] or any(
                ("+" in level or "#" in level) and len(level) > 1 for level in self.topic.split("/")):
            raise ValueError("wildcards must fill a whole topic level ('a/+/b', 'a/#'), and # must come last")
        try:
            ZoneInfo(self.time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {self.time_zone!r}") from None
        return self


class TlsConfig(_Model):
    """MQTT over TLS: the broker's certificate is checked against ``ca_file`` (default: the system's CAs),
    and ``cert_file`` + ``key_file`` identify this box to a broker that asks for a client certificate."""

    ca_file: Path | None = Field(default=None, description="PEM file of the CA(s) that signed the broker's certificate")
    cert_file: Path | None = Field(default=None, description="this box's client certificate (PEM)")
    key_file: Path | None = Field(default=None, description="the client certificate's private key (PEM, mode 0600)")

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("a client certificate needs both cert_file and key_file")
        return self


class MqttConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    client_id: str | None = None
    username: str | None = None
    password_file: Path | None = None
    tls: TlsConfig | None = Field(default=None, description="connect over TLS ([mqtt.tls]; port 8883 is usual)")
    max_payload_bytes: int = Field(default=4096, ge=64, le=1_048_576)
    meters: tuple[MqttMeterConfig, ...] = ()


def _plain_topic(value: str, what: str) -> str:
    if "+" in value or "#" in value or value.startswith("/") or value.endswith("/") or "//" in value:
        raise ValueError(f"{what} must be a plain topic: no wildcards (+, #), no empty levels")
    return value


class TelemetryConfig(_Model):
    """Live values and closed intervals published over MQTT, with Home Assistant discovery (gateway.telemetry).

    The broker is the ``[mqtt]`` one, with its credentials and TLS, unless a connection setting (host, port,
    username, password_file, tls) is given here: then the connection is made with these alone.
    """

    enabled: bool = True
    host: str | None = Field(default=None, description="broker; default: the [mqtt] broker, else 127.0.0.1")
    port: int | None = Field(default=None, ge=1, le=65535, description="default: 8883 with tls, else 1883")
    client_id: str | None = Field(default=None, description="default: meter-gateway-<gateway_id>-telemetry")
    username: str | None = None
    password_file: Path | None = None
    tls: TlsConfig | None = None
    topic_prefix: str = Field(
        default="meter-gateway/{gateway_id}", min_length=1,
        description="topics are <prefix>/<meter>/<quantity>, <prefix>/<meter>/interval, <prefix>/status; "
        "'{gateway_id}' is replaced",
    )
    qos: Literal[0, 1, 2] = Field(default=1, description="QoS of live values; intervals always go with QoS 1 or more")
    retain: bool = Field(default=True, description="live values retained, so a new subscriber sees the state at once")
    intervals: bool = Field(default=True, description="publish every closed 15-minute interval (from the ledger)")
    discovery: bool = Field(default=True, description="publish Home Assistant MQTT discovery configs (retained)")
    discovery_prefix: str = Field(default="homeassistant", min_length=1)
    queue_size: int = Field(
        default=1000, ge=10, le=100_000,
        description="live values waiting for the broker; beyond this the oldest are dropped (and counted)",
    )

    @field_validator("topic_prefix", "discovery_prefix")
    @classmethod
    def _topics(cls, value: str) -> str:
        return _plain_topic(value, "a topic prefix")


class BillingApiConfig(_Model):
    url: str = Field(pattern=r"^https?://", description="base URL of the central billing API")
    token_file: Path | None = None
    batch_size: int = Field(default=500, ge=1, le=5000)
    max_batch_age_s: float = Field(default=10.0, ge=0, le=3600)
    timeout_s: float = Field(default=10.0, gt=0, le=120)
    backoff_max_s: float = Field(default=300.0, ge=1, le=3600)


class UplinksConfig(_Model):
    billing_api: BillingApiConfig | None = None


class WebConfig(_Model):
    listen: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    enabled: bool = True
    profiles_dir: Path | None = Field(
        default=None,
        description="directory of your own firmware profiles (.toml) that one-off reads from the API may name "
        "(relative to the config file); without it they may use built-in profiles and those of configured meters",
    )
    metrics_open_to: tuple[str, ...] = Field(
        default=(),
        description="networks that may scrape /metrics without signing in, for Prometheus on the local "
        'network (e.g. ["192.168.0.0/16"]); default: none, /metrics needs the token like the API',
    )

    tls_cert_file: Path | None = Field(
        default=None,
        description="PEM certificate (with its chain) to serve the page and the API over HTTPS, relative to the "
        "config file; needs tls_key_file. Signed-in sessions then get a Secure cookie",
    )
    tls_key_file: Path | None = Field(
        default=None, description="the certificate's PEM private key, readable by the service user only")

    @model_validator(mode="after")
    def _tls_pair(self) -> WebConfig:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("give both tls_cert_file and tls_key_file to serve over HTTPS, or neither")
        return self

    @property
    def tls(self) -> tuple[Path, Path] | None:
        """(certificate, key) when the page is served over HTTPS."""
        if self.tls_cert_file is None or self.tls_key_file is None:
            return None
        return self.tls_cert_file, self.tls_key_file

    @field_validator("metrics_open_to")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for net in value:
            try:
                ipaddress.ip_network(net, strict=True)
            except ValueError:
                raise ValueError(f"{net!r} is not a network address: write it like \"192.168.0.0/16\" or "
                                 "\"fd00::/8\" (the address part with its host bits zero)") from None
        return value


class IntervalsConfig(_Model):
    estimate_gap_s: float = Field(
        default=3600, ge=900, le=86_400,
        description="a gap in readings up to this long is filled by linear interpolation and flagged E; "
        "a longer one is filled pro rata once the next reading arrives and flagged S",
    )


class LedgerConfig(_Model):
    readings_retention_days: float = Field(
        default=35, ge=1, le=3650,
        description="raw readings kept this long; intervals and credits are never pruned automatically",
    )
    commit_every_s: float = Field(
        default=900.0, ge=1, le=3600,
        description="readings that close no interval wait this long at most before they are committed (a "
        "reading that closes one is committed within 5 s): fewer commits, fewer SD-card writes; a power cut "
        "loses at most this much raw data inside intervals (the energy stays in the meters' registers)",
    )
    min_free_mb: int = Field(
        default=200, ge=10, le=1_000_000,
        description="below this much free disk, raw-reading retention shrinks and an alarm is raised",
    )


class TimeConfig(_Model):
    trust: Literal["ntp", "rtc", "always"] = Field(
        default="ntp",
        description="ntp: close intervals only once the kernel reports the clock synchronised; "
        "rtc: the box has a battery clock, trusted from boot while it reads a plausible time (not before "
        "2026 nor the ledger's newest reading, at most 400 days past it), else NTP decides; always: tests and demos",
    )
    max_step_s: float = Field(
        default=2.0, gt=0, le=3600,
        description="a wall-clock jump larger than this (against the monotonic clock) suspends trust",
    )
    step_settle_s: float = Field(
        default=300.0, ge=0, le=86_400,
        description="after a jump, trust returns once the clock has held still (and is synchronised) this long",
    )


NemParticipant = Annotated[str, Field(min_length=1, max_length=10, pattern=r"^[A-Za-z0-9_.\-]+$")]


class BillingConfig(_Model):
    """How bills, projections and budget alerts are made; tariffs themselves live under [tariffs]."""

    period_start_day: int = Field(
        default=1, ge=1, le=31,
        description="day of the month a billing cycle starts (29-31: the last day of shorter months)",
    )
    # gateway.billing.ProjectionMethod's values: that module is imported only where bills are made.
    projection_method: Literal["DAILY_AVERAGE", "WEIGHTED_AVERAGE"] = Field(
        default="DAILY_AVERAGE",
        description="estimator that budget alerts use; the API always shows both",
    )
    tariff: TariffName | None = Field(
        default=None, description="tariff for every meter that does not name its own (the site's group tariff)",
    )
    budget_check_s: float = Field(default=900.0, ge=60, le=86_400, description="how often budgets are checked")
    budget_min_confidence: float = Field(
        default=0.0, ge=0, le=1,
        description="no budget alert below this projection confidence (e.g. 0.1 stays quiet for the first 3 days)",
    )
    alert_topic: str | None = Field(
        default=None, min_length=1,
        description="MQTT topic for budget alerts on the [mqtt] broker; '{meter}' is replaced by the meter id",
    )
    nem12_from_participant: NemParticipant | None = Field(
        default=None, description="NEM12 header FromParticipant; default: the first 10 characters of gateway_id",
    )
    nem12_to_participant: NemParticipant = Field(default="UNKNOWN", description="NEM12 header ToParticipant")

    @field_validator("alert_topic")
    @classmethod
    def _plain_topic(cls, value: str | None) -> str | None:
        if value is not None and ("+" in value or "#" in value):
            raise ValueError("a topic to publish to cannot contain the wildcards + or #")
        return value


class LoggingConfig(_Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "console", "json"] = "auto"


class GatewayConfig(_Model):
    gateway_id: str = Field(
        min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$",
        description="this box's name in the central billing system",
    )
    site_timezone: str = "UTC"
    data_dir: Path = Path("/var/lib/meter-gateway")
    buses: tuple[BusConfig, ...] = ()
    mqtt: MqttConfig | None = None
    telemetry: TelemetryConfig | None = None
    uplinks: UplinksConfig = UplinksConfig()
    web: WebConfig = WebConfig()
    logging: LoggingConfig = LoggingConfig()
    ledger: LedgerConfig = LedgerConfig()
    time: TimeConfig = TimeConfig()
    intervals: IntervalsConfig = IntervalsConfig()
    tariffs: dict[TariffName, Tariff] = Field(
        default_factory=dict, description="named tariffs that meters refer to by name (gateway.billing.Tariff)",
    )
    billing: BillingConfig = BillingConfig()
    stellar: StellarConfig | None = Field(
        default=None, description="tokenize consumption on Stellar (custodial meter accounts); no section = off")
    p2p: P2PConfig | None = Field(
        default=None, description="energy-sharing agreements (seed 001) this box delivers for")
    soroban: SorobanConfig | None = Field(default=None, description="the contract delivery records are sent to")

    @model_validator(mode="before")
    @classmethod
    def _tariff_names(cls, data: Any) -> Any:
        """Let a [tariffs.NAME] table omit ``name``: the key already names it, and requiring both
        invites the two to drift apart."""
        if isinstance(data, dict) and isinstance(data.get("tariffs"), dict):
            tariffs = {
                key: {"name": key, **value} if isinstance(value, dict) and "name" not in value else value
                for key, value in data["tariffs"].items()
            }
            data = {**data, "tariffs": tariffs}
        return data

    @field_validator("site_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown IANA time zone {value!r}; use a name like 'Europe/Berlin' or 'UTC'"
            ) from None
        return value

    def all_meter_ids(self) -> list[str]:
        ids = [m.id for bus in self.buses for m in bus.meters]
        if self.mqtt:
            ids.extend(m.id for m in self.mqtt.meters)
        return ids

    def meter(self, meter_id: str) -> ModbusMeterConfig | MqttMeterConfig | None:
        """The configured meter with this id, Modbus or MQTT, or ``None``."""
        for bus in self.buses:
            for m in bus.meters:
                if m.id == meter_id:
                    return m
        if self.mqtt:
            for q in self.mqtt.meters:
                if q.id == meter_id:
                    return q
        return None
