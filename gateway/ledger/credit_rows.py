"""A credit's stored row: what cannot be derived, and its wire text rebuilt byte for byte on read.

A credit's wire text (about 600 bytes) was most of what an ingest commit wrote to the SD card, and
most of what a checkpoint copied back: the canonical body repeats the row's own columns (meter,
channel, seq, start, energy) and constants (the version, the interval's length). Since schema 7
the ``credits`` table stores only what cannot be derived: the gateway id and key, the register
values, the quality, the corrected seq, the hashes (raw 32 bytes each) and the signature; its
``wire`` column is a VIRTUAL generated column (:data:`WIRE_SQL`) that SQLite rebuilds from them
when a row is read, so every reader (the uplinks, the pull API, a plain ``sqlite3`` session)
still gets ``SELECT wire FROM credits``, unchanged, and no re-encoding ever happens in Python.

Byte identity is checked when a row is written, not assumed: :func:`credit_columns` rebuilds the
text from the columns it chose (:func:`rebuilt_wire`, the same template as :data:`WIRE_SQL`) and
compares it with the signed wire text; anything that differs (a v1 credit, an id that JSON would
escape, a value the template does not cover) is stored whole in ``wire_text``, which the
generated column returns as it is. ``tests/test_ledger_credit_rows.py`` holds the SQL and the
Python templates equal to the signed bytes, by hypothesis.
"""

from __future__ import annotations

import json
from typing import Any

from cloud_sync.credit import INT64_MAX, INT64_MIN, INTERVAL_S, VERSION

CREDIT_COLUMNS = ("meter", "channel", "seq", "start", "wh", "hash_b", "created_ms", "gateway", "gateway_key",
                  "corrects", "quality", "register_start_wh", "register_end_wh", "prev_hash_b", "signature",
                  "wire_text")
"""The stored columns of a credit, in the order :func:`credit_columns` returns their values."""

INSERT_CREDIT = f"INSERT INTO credits ({', '.join(CREDIT_COLUMNS)}) VALUES ({','.join('?' * len(CREDIT_COLUMNS))})"
UPDATE_CREDIT = (f"UPDATE credits SET {', '.join(f'{c}=?' for c in CREDIT_COLUMNS[4:])} "
                 "WHERE id=?")
"""Re-store a credit (revised, re-signed): its columns from ``wh`` on, then its id."""

TEMPLATE_SQL = (
    "'{\"credit\":{\"channel\":\"' || channel || '\",\"corrects\":' || COALESCE(corrects, 'null')"
    " || ',\"created_ms\":' || created_ms || ',\"end\":' || (start + 900) || ',\"gateway\":\"' || gateway"
    " || '\",\"gateway_key\":\"' || gateway_key || '\",\"kind\":\"'"
    " || CASE WHEN corrects IS NULL THEN 'interval' ELSE 'correction' END || '\",\"meter\":\"' || meter"
    " || '\",\"prev_hash\":\"' || lower(hex(prev_hash_b)) || '\",\"quality\":\"' || quality"
    " || '\",\"register_end_wh\":' || register_end_wh || ',\"register_start_wh\":' || register_start_wh"
    " || ',\"seq\":' || seq || ',\"start\":' || start || ',\"v\":2,\"wh\":' || wh"
    " || '},\"hash\":\"' || lower(hex(hash_b)) || '\",\"signature\":\"' || signature || '\"}'"
)
"""A compact row's wire text in SQL: :func:`rebuilt_wire`'s template."""
WIRE_SQL = f"COALESCE(wire_text, {TEMPLATE_SQL})"
"""The generated ``wire`` column's expression (as in migrations/0007_time_ordered.sql; a test holds them equal)."""


def rebuilt_wire(meter: str, channel: str, seq: int, start: int, wh: int, hash_hex: str, created_ms: int, gateway: str,
                 gateway_key: str, corrects: int | None, quality: str, register_start_wh: int,
                 register_end_wh: int, prev_hash_hex: str, signature: str) -> str:
    """What :data:`WIRE_SQL` yields for a compact row, here in Python (for the check on write)."""
    kind = "interval" if corrects is None else "correction"
    return (f'{{"credit":{{"channel":"{channel}","corrects":{"null" if corrects is None else corrects},'
            f'"created_ms":{created_ms},"end":{start + INTERVAL_S},"gateway":"{gateway}",'
            f'"gateway_key":"{gateway_key}","kind":"{kind}","meter":"{meter}","prev_hash":"{prev_hash_hex}",'
            f'"quality":"{quality}","register_end_wh":{register_end_wh},"register_start_wh":{register_start_wh},'
            f'"seq":{seq},"start":{start},"v":{VERSION},"wh":{wh}}},"hash":"{hash_hex}","signature":"{signature}"}}')


def credit_columns(meter: str, channel: str, seq: int, start: int, wh: int, digest: str, created_ms: int,
                   wire: str) -> tuple[Any, ...]:
    """The stored values of a credit (:data:`CREDIT_COLUMNS`), from its row's keys and its signed wire text.

    Compact when the rebuilt text is the signed text exactly; else the whole text in ``wire_text``.
    """
    whole = _stored_whole(meter, channel, seq, start, wh, digest, created_ms, wire)
    try:
        item = json.loads(wire)
        body = item["credit"]
        values = (body["gateway"], body["gateway_key"], body["corrects"], body["quality"],
                  body["register_start_wh"], body["register_end_wh"], body["prev_hash"], item["signature"])
        gateway, gateway_key, corrects, quality, reg_start, reg_end, prev_hash, signature = values
        if not (body.get("v") == VERSION and item.get("hash") == digest and all(
                type(v) is str for v in (gateway, gateway_key, quality, prev_hash, signature))
                and all(type(v) is int for v in (reg_start, reg_end, seq, start, wh, created_ms))
                and (corrects is None or type(corrects) is int) and type(meter) is str and type(channel) is str):
            return whole
    except (ValueError, KeyError, TypeError, AttributeError):
        return whole
    return compact_columns(meter, channel, seq, start, wh, digest, created_ms, gateway, gateway_key, corrects,
                           quality, reg_start, reg_end, prev_hash, signature, wire)


def compact_columns(meter: str, channel: str, seq: int, start: int, wh: int, digest: str, created_ms: int,
                    gateway: str, gateway_key: str, corrects: int | None, quality: str, register_start_wh: int,
                    register_end_wh: int, prev_hash: str, signature: str, wire: str) -> tuple[Any, ...]:
    """:func:`credit_columns` from the parts already at hand (the signer's), without parsing ``wire``."""
    text = rebuilt_wire(meter, channel, seq, start, wh, digest, created_ms, gateway, gateway_key, corrects,
                        quality, register_start_wh, register_end_wh, prev_hash, signature)
    try:
        hash_b, prev_b = bytes.fromhex(digest), bytes.fromhex(prev_hash)
    except ValueError:
        hash_b, prev_b = b"", b""
    # Upper-case hex would not come back as it was (lower(hex()) in SQL), nor an end past SQLite's integers.
    if (text != wire or hash_b.hex() != digest or prev_b.hex() != prev_hash
            or not INT64_MIN <= start <= INT64_MAX - INTERVAL_S):
        return _stored_whole(meter, channel, seq, start, wh, digest, created_ms, wire)
    return (meter, channel, seq, start, wh, hash_b, created_ms, gateway, gateway_key, corrects, quality,
            register_start_wh, register_end_wh, prev_b, signature, None)


def _stored_whole(meter: str, channel: str, seq: int, start: int, wh: int, digest: str, created_ms: int,
                  wire: str) -> tuple[Any, ...]:
    """The row of a credit the template does not reproduce: its keys, and its wire text kept whole."""
    return (meter, channel, seq, start, wh, bytes.fromhex(digest), created_ms, None, None, None, None, None, None,
            None, None, wire)
