"""Export input values refuse what a format cannot say truthfully, at construction time."""

from __future__ import annotations

import pytest

from gateway.errors import GatewayError
from gateway.export import ExportError, ExportInterval, MeterExportInfo
from gateway.export.model import group_by_meter


def test_quality_method_field() -> None:
    assert ExportInterval("m", 900, 1, "A").quality_method == "A"
    assert ExportInterval("m", 900, 1, "S", 54, 76).quality_method == "S54"
    assert ExportInterval("m", 900, 1, "E", 52).quality_method == "E52"
    assert ExportInterval("m", 900, 0, "N", reason=43).quality_method == "N"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"start": 901}, "grid"),
        ({"start": 900.0}, "grid"),
        ({"wh": -1}, "non-negative"),
        ({"wh": 1.0}, "non-negative"),
        ({"wh": True}, "non-negative"),
        ({"quality": "V"}, "quality"),
        ({"quality": "a"}, "quality"),
        ({"quality": "S"}, "no method"),
        ({"quality": "A", "method": 54}, "cannot carry a method"),
        ({"quality": "N", "method": 54}, "cannot carry a method"),
        ({"quality": "S", "method": 5}, "method"),
        ({"quality": "S", "method": 100}, "method"),
        ({"reason": -1}, "reason"),
        ({"reason": 0}, "reason_text must not be empty"),
        ({"reason_text": "why"}, "no reason code"),
        ({"reason": 0, "reason_text": "a,b"}, "commas"),
        ({"reason": 0, "reason_text": "a\r\nb"}, "control"),
        ({"reason": 0, "reason_text": "x" * 241}, "longer"),
        ({"meter": ""}, "empty"),
    ],
)
def test_invalid_intervals_are_refused(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"meter": "m", "start": 900, "wh": 1, "quality": "A"} | kwargs
    with pytest.raises(ExportError, match=message) as info:
        ExportInterval(**args)  # type: ignore[arg-type]
    assert isinstance(info.value, GatewayError)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"nmi": ""}, "empty"),
        ({"nmi": "NMI00000001"}, "longer than 10"),
        ({"nmi_suffix": "E12"}, "longer than 2"),
        ({"serial": "S,1"}, "commas"),
        ({"uom": "MJ"}, "not supported"),
        ({"uom": 3}, "string"),
    ],
)
def test_invalid_meter_info_is_refused(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"meter": "m", "nmi": "NMI0000001"} | kwargs
    with pytest.raises(ExportError, match=message):
        MeterExportInfo(**args)  # type: ignore[arg-type]


def test_grouping_orders_meters_and_starts_and_checks_keys() -> None:
    meters = {"b": MeterExportInfo("b", "N2"), "a": MeterExportInfo("a", "N1")}
    grouped = group_by_meter([ExportInterval("b", 1800, 1, "A"), ExportInterval("a", 900, 2, "A"),
                              ExportInterval("b", 900, 3, "A")], meters)
    assert list(grouped) == ["a", "b"]
    assert list(grouped["b"]) == [900, 1800]
    with pytest.raises(ExportError, match="key must be the meter name"):
        group_by_meter([], {"x": MeterExportInfo("a", "N1")})
    with pytest.raises(ExportError, match="expected ExportInterval"):
        group_by_meter([(900, 1, "A")], meters)  # type: ignore[list-item]
