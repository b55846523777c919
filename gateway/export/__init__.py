"""Interval data out of the gateway in market formats: NEM12 (Australia) and Green Button (North America).

Both writers are pure: they take validated ``ExportInterval`` values and return or write text/bytes,
so the daemon decides where files go and the formats can be tested byte for byte.
"""

from __future__ import annotations

from gateway.export.greenbutton import greenbutton_xml
from gateway.export.model import ExportError, ExportInterval, MeterExportInfo
from gateway.export.nem12 import nem12_text, write_nem12

__all__ = [
    "ExportError",
    "ExportInterval",
    "MeterExportInfo",
    "greenbutton_xml",
    "nem12_text",
    "write_nem12",
]
