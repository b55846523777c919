"""One way to reach an MQTT broker: host, credentials and TLS from the config, the same for every client.

The meter source (``[mqtt]``), budget alerts and telemetry each hold their own connection (their own
client id: a second client with one id disconnects the first), but they read their settings the same
way here: the password from its file at connect time (so a rotated password needs no restart), TLS with
the configured CA and, for brokers that ask, this box's client certificate.

aiomqtt and ssl are imported when a client is made, not with this module: the budget watcher imports it,
and a box without MQTT never loads either.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.config.model import MqttConfig, TelemetryConfig, TlsConfig
from gateway.errors import ConfigError

if TYPE_CHECKING:
    import ssl

    import aiomqtt

PLAIN_PORT = 1883
TLS_PORT = 8883
"""MQTT's registered ports, without and with TLS."""


@dataclass(frozen=True, slots=True)
class Broker:
    host: str
    port: int
    username: str | None = None
    password_file: Path | None = None
    tls: TlsConfig | None = None

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}" + (" (TLS)" if self.tls is not None else "")

    @classmethod
    def of(cls, cfg: MqttConfig) -> Broker:
        return cls(cfg.host, cfg.port, cfg.username, cfg.password_file, cfg.tls)

    @classmethod
    def for_telemetry(cls, cfg: TelemetryConfig, mqtt: MqttConfig | None) -> Broker:
        """The ``[mqtt]`` broker as it is configured, unless ``[telemetry]`` gives connection settings of its
        own: then those (host by default the ``[mqtt]`` one, else this box; port 8883 with TLS, else 1883), so
        a ``[telemetry.tls]`` is never silently ignored."""
        own = (cfg.host, cfg.port, cfg.username, cfg.password_file, cfg.tls)
        if mqtt is not None and all(setting is None for setting in own):
            return cls.of(mqtt)
        host = cfg.host or (mqtt.host if mqtt is not None else "127.0.0.1")
        port = cfg.port or (TLS_PORT if cfg.tls is not None else PLAIN_PORT)
        return cls(host, port, cfg.username, cfg.password_file, cfg.tls)

    def tls_context(self) -> ssl.SSLContext | None:
        if self.tls is None:
            return None
        import ssl

        try:
            context = ssl.create_default_context(cafile=str(self.tls.ca_file) if self.tls.ca_file else None)
            if self.tls.cert_file is not None and self.tls.key_file is not None:
                context.load_cert_chain(str(self.tls.cert_file), str(self.tls.key_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"MQTT TLS files for {self.host}:{self.port} cannot be used ({exc}): check ca_file, "
                              "cert_file and key_file (PEM, readable by the gateway's user)") from None
        return context

    def client(self, identifier: str, **kwargs: Any) -> aiomqtt.Client:
        import aiomqtt

        password = self.password_file.read_text().strip() if self.password_file else None
        return aiomqtt.Client(self.host, self.port, identifier=identifier, username=self.username,
                              password=password, tls_context=self.tls_context(), **kwargs)
