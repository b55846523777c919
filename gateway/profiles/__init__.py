"""Firmware profiles: per-model register maps and the decoding they imply.

Everything here is pure (apart from reading TOML files) so the acquisition
loop, simulators and commissioning tools share one definition of what a
register means.
"""

from __future__ import annotations

from gateway.profiles.codec import decode, decode_identity, encode, identity_matches
from gateway.profiles.datatypes import DataType, register_count
from gateway.profiles.loader import builtin_profile, builtin_profiles, load_profile_file, resolve_profile
from gateway.profiles.models import (
    STANDARD_UNITS,
    IdentityRegister,
    Profile,
    Quantity,
    SerialDefaults,
)

__all__ = [
    "STANDARD_UNITS",
    "DataType",
    "IdentityRegister",
    "Profile",
    "Quantity",
    "SerialDefaults",
    "builtin_profile",
    "builtin_profiles",
    "decode",
    "decode_identity",
    "encode",
    "identity_matches",
    "load_profile_file",
    "register_count",
    "resolve_profile",
]
