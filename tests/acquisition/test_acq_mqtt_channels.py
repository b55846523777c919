"""MQTT meters with an export channel, against a real mosquitto: Tasmota's ExportActive, export_path, bad values."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
from structlog.testing import capture_logs

from gateway.acquisition.payloads import parse_payload
from gateway.channels import Channel
from gateway.config import MqttMeterConfig
from gateway.errors import PayloadError
from gateway.intervals import Reading
from gateway.schema import ValidationError
from tests.acquisition.test_acq_mqtt import Gateway, publish

if TYPE_CHECKING:
    from tests.conftest import Broker

TOPIC = "tele/solar/SENSOR"


def tasmota(t: str, total: object, export: object = None, *, with_export: bool = True) -> str:
    energy: dict[str, object] = {"Total": total, "Power": -1200}
    if with_export:
        energy["ExportActive"] = export
    return json.dumps({"Time": t, "ENERGY": energy})


def by_time(readings: list[Reading]) -> dict[str, dict[int, int]]:
    out: dict[str, dict[int, int]] = {c.value: {} for c in Channel}
    for r in readings:
        out[r.channel.value][r.t_ms] = r.register_wh
    return out


async def test_tasmota_export_out_of_the_box_and_a_bad_value_costs_only_its_channel(mosquitto: Broker) -> None:
    gw = Gateway(mosquitto, [{"id": "solar", "topic": TOPIC, "format": "tasmota", "time_zone": "UTC"}])
    with capture_logs() as logs:
        async with gw.running():
            await publish(mosquitto, [
                (TOPIC, tasmota("2026-06-01T12:00:00", 100.5, 20.25)),     # both
                (TOPIC, tasmota("2026-06-01T12:01:00", 100.5, "n/a")),     # export malformed: import kept
                (TOPIC, tasmota("2026-06-01T12:02:00", [1], 20.5)),        # import malformed: export kept
                (TOPIC, tasmota("2026-06-01T12:03:00", 100.6, with_export=False)),  # a plug: import only
                (TOPIC, tasmota("2026-06-01T12:04:00", 100.7, 20.75)),
                (TOPIC, tasmota("2026-06-01T12:04:00", 100.7, 20.75)),     # a QoS 1 redelivery
            ])
            await gw.wait_for(7, rejected=3)
    t = 1_780_315_200_000  # 2026-06-01T12:00:00Z
    minute = 60_000
    got = by_time(gw.readings)
    assert got["import"] == {t: 100_500, t + minute: 100_500, t + 3 * minute: 100_600, t + 4 * minute: 100_700}
    assert got["export"] == {t: 20_250, t + 2 * minute: 20_500, t + 4 * minute: 20_750}
    assert all(r.meter_clock and r.source == "mqtt" for r in gw.readings)
    # Each bad value quarantined and counted like a bad payload, with its channel in the log line.
    assert gw.status.payloads_rejected["wrong_type"] == 2
    assert gw.status.payloads_rejected["duplicate"] == 1
    assert gw.status.meters["solar"].rejected["wrong_type"] == 2
    assert [q.reason for q in gw.status.quarantine] == ["wrong_type", "wrong_type"]
    assert b'"n/a"' in gw.status.quarantine[0].payload
    rejected = [e for e in logs if e["event"] == "payload_rejected"]
    assert [e["channel"] for e in rejected] == ["export", "import"]
    values = gw.status.meters["solar"].values
    assert (values["energy_import"].value, values["energy_export"].value) == (100_700, 20_750)
    assert gw.status.meters["solar"].last_register_wh == 100_700


async def test_a_configured_export_path_must_be_there(mosquitto: Broker) -> None:
    gw = Gateway(mosquitto, [{"id": "sml", "topic": "tele/sml/SENSOR", "format": "tasmota-sml",
                              "value_path": "SML.Total_in", "export_path": "SML.Total_out", "time_zone": "UTC"}])
    async with gw.running():
        await publish(mosquitto, [
            ("tele/sml/SENSOR", json.dumps({"Time": "2026-06-01T12:00:00", "SML": {"Total_in": 5, "Total_out": 2}})),
            ("tele/sml/SENSOR", json.dumps({"Time": "2026-06-01T12:01:00", "SML": {"Total_in": 6}})),
            ("tele/sml/SENSOR", json.dumps({"Time": "2026-06-01T12:02:00", "SML": {"Total_in": 7,
                                                                                 "Total_out": -1}})),
        ])
        await gw.wait_for(4, rejected=2)
    got = by_time(gw.readings)
    assert list(got["import"].values()) == [5_000, 6_000, 7_000]
    assert list(got["export"].values()) == [2_000]
    assert gw.status.payloads_rejected["missing_field"] == 1, "configured, so its absence is a fault"
    assert gw.status.payloads_rejected["negative"] == 1


def _meter(**kw: object) -> MqttMeterConfig:
    return MqttMeterConfig.model_validate({"id": "m", "topic": "t", **kw})


def test_payload_channels() -> None:
    tas = _meter(format="tasmota")
    both = parse_payload(tas, tasmota("2026-06-01T12:00:00", 1.5, 0.25).encode(), max_bytes=4096)
    assert both.registers == {Channel.IMPORT: 1500, Channel.EXPORT: 250}
    assert both.wh == 1500
    assert both.problems == {}
    plug = parse_payload(tas, tasmota("2026-06-01T12:00:00", 1.5, with_export=False).encode(), max_bytes=4096)
    assert plug.registers == {Channel.IMPORT: 1500}
    assert plug.problems == {}
    only_export = parse_payload(tas, tasmota("2026-06-01T12:00:00", None, 0.25).encode(), max_bytes=4096)
    assert only_export.wh is None
    assert only_export.registers == {Channel.EXPORT: 250}
    assert only_export.problems[Channel.IMPORT].reason == "wrong_type"
    with pytest.raises(PayloadError) as neither:
        parse_payload(tas, tasmota("2026-06-01T12:00:00", "x", "y").encode(), max_bytes=4096)
    assert neither.value.reason == "wrong_type"
    # A JSON meter without export_path has no export channel, whatever its payload carries.
    plain = parse_payload(_meter(value_path="ENERGY.Total"), tasmota("2026-06-01T12:00:00", 1.5, 0.25).encode(),
                          max_bytes=4096)
    assert plain.registers == {Channel.IMPORT: 1500}
    wh = parse_payload(_meter(value_path="in", export_path="out", unit="Wh"), b'{"in": 10, "out": 1e99}',
                       max_bytes=4096)
    assert wh.registers == {Channel.IMPORT: 10}
    assert wh.problems[Channel.EXPORT].reason == "out_of_range"


def test_export_path_config_mistakes_are_refused() -> None:
    with pytest.raises(ValidationError, match="format 'number' carries one value"):
        _meter(format="number", export_path="x")
    with pytest.raises(ValidationError, match="is the import value's path"):
        _meter(value_path="SML.Total_in", export_path="SML.Total_in")
    with pytest.raises(ValidationError, match="is the import value's path"):
        _meter(format="tasmota", export_path="ENERGY.Total")
