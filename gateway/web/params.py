"""Strict parsing of query parameters: a bad value is a 400 with a message, never a 500.

``int()`` alone accepts ``" 1_000 "`` and Arabic-Indic digits, and a 20-digit number passes it only
to overflow SQLite later; these parsers accept plain decimal digits within stated bounds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

SQLITE_INT_MAX = 2**63 - 1

_DIGITS = re.compile(r"[0-9]{1,20}")


class BadParam(ValueError):
    """A query parameter is missing or out of its domain; the message says what is expected."""


def int_param(params: Mapping[str, str], name: str, *, lo: int, hi: int, default: int | None = None) -> int:
    raw = params.get(name)
    if raw is None:
        if default is None:
            raise BadParam(f"need ?{name}=N, a whole number from {lo} to {hi}")
        return default
    value = int(raw) if _DIGITS.fullmatch(raw) else None
    if value is None or not lo <= value <= hi:
        raise BadParam(f"{name} must be a whole number from {lo} to {hi}")
    return value


def str_param(params: Mapping[str, str], name: str, *, max_len: int, hint: str) -> str:
    raw = params.get(name)
    if not raw:
        raise BadParam(f"need ?{name}=… ({hint})")
    if len(raw) > max_len:
        raise BadParam(f"{name} is longer than {max_len} characters ({hint})")
    return raw
