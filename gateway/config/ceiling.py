"""Each meter's effective power ceiling, and where it comes from.

The ceiling bounds what any reading can credit (see
:mod:`gateway.intervals.plausibility`). In order: the meter's own
``max_power_w`` in the config, its profile's (written out, or rated current ×
voltage × phases), else :data:`DEFAULT_MAX_POWER_W` — which ``check-config``
points out, since it is a guess (MQTT meters, CT-connected profiles).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.intervals.plausibility import DEFAULT_MAX_POWER_W

if TYPE_CHECKING:
    from gateway.config.model import ModbusMeterConfig, MqttMeterConfig
    from gateway.profiles import Profile


@dataclass(frozen=True, slots=True)
class Ceiling:
    watts: float
    source: str
    """Where the number comes from, for an installer: "config", "profile eastron-sdm630 (3 x 100 A x 276 V)"..."""
    is_default: bool = False
    hint: str = ""
    """What to configure instead, when the default applies."""

    def describe(self) -> str:
        return f"{self.watts:,.0f} W ({self.source})"


_DEFAULT_SOURCE = "default"


def modbus_ceiling(meter: ModbusMeterConfig, profile: Profile) -> Ceiling:
    if meter.max_power_w is not None:
        return Ceiling(meter.max_power_w, "config max_power_w")
    if profile.max_power_w is not None:
        return Ceiling(profile.max_power_w, f"profile {profile.id} max_power_w")
    if (rated := profile.rated_power_w) is not None:
        return Ceiling(rated, f"profile {profile.id}: {profile.phases} x {profile.max_current_a:g} A x "
                              f"{profile.max_voltage_v:g} V")
    if profile.ct_connected:
        hint = ("profile is CT-connected: set max_power_w = CT primary current x voltage x phases "
                "(e.g. 3 x 400 A x 276 V = 331200)")
    else:
        hint = "the profile gives no current rating: set max_power_w = Imax x highest voltage x phases"
    return Ceiling(DEFAULT_MAX_POWER_W, _DEFAULT_SOURCE, is_default=True, hint=hint)


def mqtt_ceiling(meter: MqttMeterConfig) -> Ceiling:
    if meter.max_power_w is not None:
        return Ceiling(meter.max_power_w, "config max_power_w")
    return Ceiling(DEFAULT_MAX_POWER_W, _DEFAULT_SOURCE, is_default=True,
                   hint="set max_power_w to what the meter can measure (e.g. a 16 A plug: 3700; "
                        "a 3 x 63 A house meter: 52200)")
