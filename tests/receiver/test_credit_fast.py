"""The receiver's fast paths (orjson; libsodium without PyNaCl's wrappers) answer as the stdlib and stellar-sdk do."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from receiver_kit import GW, honest_chain
from receiver_kit import KEY as KEY_OF_GW
from stellar_sdk import Keypair
from stellar_sdk.exceptions import BadSignatureError

from cloud_sync.credit import INT64_MAX, INT64_MIN, canonical_bytes
from cloud_sync.ed25519 import ed25519_verify
from cloud_sync.fast_json import HAVE_ORJSON, canonical_fast, dumps_compact, loads_fast
from cloud_sync.receiver.snapshot import MemoryView
from cloud_sync.receiver_intake import decode_body, examine_batch, parse_batch

INT64 = st.integers(INT64_MIN, INT64_MAX)
TEXT = st.text(st.characters(codec="utf-8"), max_size=12)
JSON_SCALARS = (st.none() | st.booleans() | st.integers(INT64_MIN, 2**64 - 1) | TEXT
                | st.floats(allow_nan=False, allow_infinity=False))
JSON = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
                    max_leaves=20)
"""Integers up to 64 bits: beyond, orjson decodes a float (see the test of a seq beyond 64 bits)."""
KEY = Keypair.from_raw_ed25519_seed(bytes(range(32)))
SHARED_BOX = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
"""A loaded machine must not fail a test of equality for slowness."""


def test_orjson_is_there_for_the_receiver() -> None:
    assert HAVE_ORJSON, "the dev and receiver-pg installs bring orjson: the fast paths must be the ones tested"


@SHARED_BOX
@given(st.dictionaries(st.sampled_from(["v", "seq", "meter", "kind", "corrects", "gateway_key", "wh"]),
                       st.none() | INT64 | TEXT))
def test_canonical_bytes_are_the_stdlib_ones_or_left_to_it(body: dict[str, Any]) -> None:
    fast = canonical_fast(body)
    assert fast is None or fast == canonical_bytes(body)
    if all(not isinstance(v, str) or (v.isascii() and "\x7f" not in v) for v in body.values()):
        assert fast == canonical_bytes(body), "an ASCII body without DEL takes the fast path"


def test_a_del_character_is_left_to_the_stdlib() -> None:
    """orjson writes DEL raw, the canonical form escapes it: the fast path must step aside, not sign other bytes."""
    assert canonical_fast({"meter": "m\x7f1"}) in (None, canonical_bytes({"meter": "m\x7f1"}))
    assert canonical_bytes({"meter": "m\x7f1"}) == b'{"meter":"m\\u007f1"}'


@SHARED_BOX
@given(JSON)
def test_a_decoded_body_is_what_the_stdlib_decodes(doc: Any) -> None:
    for raw in (json.dumps(doc).encode(), json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass")):
        fast = loads_fast(raw)
        try:
            expected = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            assert fast is None
            continue
        assert fast is None or fast == expected


def test_nan_lone_surrogates_and_bad_bytes_go_to_the_stdlib() -> None:
    for raw in (b"[NaN]", b'["\\ud800"]', b"[\xff]", b"[" * 2000 + b"]" * 2000):
        assert loads_fast(raw) is None, raw[:20]


def test_an_integer_beyond_64_bits_is_malformed_however_it_decodes() -> None:
    item = honest_chain(1)[0]
    item["credit"]["seq"] = 2**64
    raw = json.dumps({"gateway": GW, "batch": "k", "credits": [item]}).encode()
    batch = parse_batch(decode_body(raw), "k")
    result = examine_batch(batch, KEY_OF_GW.public_key, MemoryView({}, {}, {}))
    assert result["results"][0]["status"] == "rejected"
    assert result["results"][0]["reason"] == "malformed"
    assert result["results"][0]["seq"] is None, "an out-of-range seq is not echoed"


@SHARED_BOX
@given(JSON)
def test_the_stored_copy_is_the_stdlib_text(doc: Any) -> None:
    if not any(isinstance(x, float) for x in _leaves(doc)):
        assert dumps_compact(doc) == json.dumps(doc, separators=(",", ":"))


def _leaves(doc: Any) -> list[Any]:
    if isinstance(doc, dict):
        return [leaf for v in doc.values() for leaf in _leaves(v)]
    if isinstance(doc, list):
        return [leaf for v in doc for leaf in _leaves(v)]
    return [doc]


@SHARED_BOX
@given(st.binary(max_size=200), st.integers(0, 63), st.integers(1, 255))
def test_ed25519_agrees_with_stellar_sdk(message: bytes, position: int, flip: int) -> None:
    signature = KEY.sign(message)
    assert ed25519_verify(KEY.raw_public_key(), message, signature)
    forged = bytearray(signature)
    forged[position] ^= flip
    try:
        KEY.verify(message, bytes(forged))
        stellar = True
    except BadSignatureError:
        stellar = False
    assert ed25519_verify(KEY.raw_public_key(), message, bytes(forged)) is stellar is False
    assert not ed25519_verify(KEY.raw_public_key(), message + b"x", signature)
    assert not ed25519_verify(KEY.raw_public_key(), message, signature[:63]), "a short signature is refused"
