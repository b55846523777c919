"""JSON for the receiver's hot path: orjson when it is installed (the ``receiver-pg`` extra), else the stdlib.

A receiver spends most of a credit's CPU on the ed25519 check; of the rest, JSON was the largest part
(decoding the batch, the canonical bytes to verify, the stored copy, the answer): orjson does each
in a tenth of the stdlib's time. Nothing here changes a byte or a verdict: every function gives what
the stdlib gives, and falls back to it wherever orjson would differ (non-ASCII text, NaN, lone surrogates;
see :func:`loads_fast` for integers beyond 64 bits). The box never needs orjson: without it, these are the stdlib calls.
"""

from __future__ import annotations

import json
from typing import Any

orjson: Any
try:
    import orjson
except ImportError:  # pragma: no cover - the receiver-pg extra brings it; the gateway runs without
    orjson = None

HAVE_ORJSON = orjson is not None



def _same_as_stdlib_ascii(out: bytes) -> bool:
    """Whether orjson's bytes are the stdlib's ``ensure_ascii`` text: ASCII, and no DEL (0x7f), which the
    stdlib escapes as ``\\u007f`` and orjson writes raw (hypothesis found it: a credit with a DEL in a field
    verified on a receiver without orjson and failed on one with it)."""
    return out.isascii() and b"\x7f" not in out


def loads_fast(raw: bytes) -> Any:
    """``raw`` decoded by orjson, or None when the stdlib must decide (orjson refuses it).

    What orjson accepts decodes to what ``json.loads`` gives, with one exception that changes no
    verdict: an integer literal beyond 64 bits becomes a float (the stdlib keeps it an integer). No
    field of a batch or a credit accepts either (integers must lie in signed 64-bit range, floats are
    never allowed), so such a credit is ``malformed`` either way; only its detail shows the number in
    float notation. A guard that scanned the body for long literals would cost more than orjson saves.
    Anything orjson refuses (not UTF-8, NaN, a lone surrogate, nested too deeply) returns None, for
    the stdlib and its exact errors and results.
    """
    if orjson is None:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def dumps_compact(value: Any) -> str:
    """``json.dumps(value, separators=(",", ":"))`` (ASCII-escaped), faster; the same text for JSON
    without floats (orjson writes ``1e16`` where the stdlib writes ``1e+16``), such as a verified credit."""
    if orjson is not None:
        try:
            out: bytes = orjson.dumps(value)
        except TypeError:
            pass
        else:
            if _same_as_stdlib_ascii(out):
                return out.decode("ascii")
    return json.dumps(value, separators=(",", ":"))


def dumps_utf8(value: Any) -> bytes:
    """What Starlette's ``JSONResponse`` renders (compact, UTF-8), faster, for answers without floats."""
    if orjson is not None:
        try:
            rendered: bytes = orjson.dumps(value)
            return rendered
        except TypeError:
            pass
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


def loads_text(text: str) -> Any:
    """``json.loads`` of text this receiver stored itself (always valid, ASCII)."""
    return orjson.loads(text) if orjson is not None else json.loads(text)


def canonical_fast(body: dict[str, Any]) -> bytes | None:
    """The canonical bytes of a parsed credit body (sorted keys, compact, ASCII), or None for the stdlib.

    Exact for what a body can hold once ``parse_wire`` passed it (strings, integers within 64 bits,
    null); a non-ASCII string, which the canonical form escapes, returns None.
    """
    if orjson is None:
        return None
    try:
        out: bytes = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return None
    return out if _same_as_stdlib_ascii(out) else None
