"""Energy channels: the directions a meter's energy is measured in, each billed on its own.

A meter has an ``import`` channel (energy taken from the grid: its cumulative import register) and,
when its profile maps one, an ``export`` channel (energy fed back: the cumulative export register of a
house with solar panels, a battery or a heat pump that feeds in). Each channel is a series of its own
through the whole gateway: its own readings, billing-grade intervals (exact conservation, rollover,
epochs, late readings, quality), and credits with their own per-(meter, channel) sequence and hash
chain. The two never mix: an export Wh is never consumption, and an import Wh is never feed-in.

The names are wire values (credits, the JSON API, NEM12 and Green Button mappings): never rename them.
"""

from __future__ import annotations

from enum import StrEnum


class Channel(StrEnum):
    IMPORT = "import"
    EXPORT = "export"


CHANNELS: tuple[Channel, ...] = (Channel.IMPORT, Channel.EXPORT)

REGISTER_OF: dict[Channel, str] = {Channel.IMPORT: "energy_import", Channel.EXPORT: "energy_export"}
"""The profile quantity (cumulative register) each channel's readings come from."""

CHANNEL_OF_REGISTER: dict[str, Channel] = {register: channel for channel, register in REGISTER_OF.items()}


class UnknownChannelError(ValueError):
    """A channel name that is neither ``import`` nor ``export`` (from a URL, a config or a payload)."""


def parse_channel(text: str) -> Channel:
    """The channel named ``text``; a clear error for anything else."""
    try:
        return Channel(text)
    except ValueError:
        raise UnknownChannelError(
            f"unknown channel {text!r}: use one of {', '.join(c.value for c in CHANNELS)}") from None
