"""check-config's channel list: which energy channels each configured meter will have.

A meter bills each channel on its own (:mod:`gateway.channels`): import always, export where its
profile maps ``energy_export`` (Modbus) or its mapping has an export value (MQTT ``export_path``, or
Tasmota's ``ENERGY.ExportActive`` when the device sends it). An installer setting up a house with
solar panels sees here, before the first poll, whether its feed-in will be measured at all.
"""

from __future__ import annotations

from pathlib import Path

from gateway.config.model import GatewayConfig


def channel_report(cfg: GatewayConfig, base_dir: Path | None = None) -> list[str]:
    """One line per meter: its channels and where each comes from. Profiles must already resolve."""
    # Imported here: only check-config needs the profile library and the acquisition's selection.
    from gateway.acquisition.energy import describe_channels, polled_quantities, profile_channels
    from gateway.acquisition.modbus import WANTED
    from gateway.acquisition.payloads import TASMOTA_VALUE_PATH, export_path
    from gateway.channels import REGISTER_OF
    from gateway.profiles import resolve_profile

    lines = []
    for bus in cfg.buses:
        for meter in bus.meters:
            profile = resolve_profile(meter.profile, base_dir)
            polled = polled_quantities(meter.quantities or WANTED, profile)
            channels = profile_channels(polled)
            where = ", ".join(f"{REGISTER_OF[c]} FC{polled[REGISTER_OF[c]].function:02d} "
                              f"{polled[REGISTER_OF[c]].address:#06x}" for c in channels)
            note = "" if len(channels) > 1 else f"; {profile.id} maps no export register"
            lines.append(f"meter {meter.id}: channels {describe_channels(channels)} ({where}){note}")
    for mqtt_meter in cfg.mqtt.meters if cfg.mqtt else ():
        value = "the payload" if mqtt_meter.format == "number" else (mqtt_meter.value_path or TASMOTA_VALUE_PATH)
        path, required = export_path(mqtt_meter)
        if path is None:
            lines.append(f"meter {mqtt_meter.id}: channels import only ({value}); set export_path for its feed-in")
        elif required:
            lines.append(f"meter {mqtt_meter.id}: channels import + export ({value}; {path})")
        else:
            lines.append(f"meter {mqtt_meter.id}: channels import + export ({value}; {path} when the device sends "
                         "it, else import only)")
    return lines
