"""The credit encoding is built once per credit, and stays what earlier versions signed.

The golden values were produced by the previous encoder (``dataclasses.asdict`` + two JSON
encodes, encoding v1): a v1 credit signed today must carry the same canonical bytes, hash and
signature (a ledger from before channels re-signs its unsent v1 credits after a late reading), and
a wire credit stored by that version (fields in declaration order) must still verify.
"""

from __future__ import annotations

import json

from stellar_sdk import Keypair

from cloud_sync.credit import ChainTip, CreditBody, canonical_bytes, sign, verify

KEY = Keypair.from_raw_ed25519_seed(bytes(range(32)))
BODY = CreditBody(gateway="gw-1", gateway_key=KEY.public_key, meter="m1", seq=7, start=1767225600,
                  end=1767226500, wh=123, quality="A", register_start_wh=1000, register_end_wh=1123,
                  prev_hash="ab" * 32, created_ms=1767226501000, kind="correction", corrects=3, v=1)
OLD_HASH = "4b82831853da39b6936b6552bd5413f4ff50d4de7d3bad00f67b74710f3be2bc"
OLD_SIGNATURE = "iDODh/PYSz00wmahpI7+aiDxoQQ4gHfqd4vKXioCteyjSMXfqsCxHaA0U2NnHssrbZSBcVPpVjjg6wG8PSN1DA=="
OLD_WIRE = (
    '{"credit":{"gateway":"gw-1","gateway_key":"GAB2CB576PHBBPQ5ODORRZ2LYCMWPZGWGCN2KDK7DXOIMZASKUY3QZ6Q",'
    '"meter":"m1","seq":7,"start":1767225600,"end":1767226500,"wh":123,"quality":"A","register_start_wh":1000,'
    '"register_end_wh":1123,"prev_hash":"abababababababababababababababababababababababababababababababab",'
    '"created_ms":1767226501000,"kind":"correction","corrects":3,"v":1},'
    f'"hash":"{OLD_HASH}","signature":"{OLD_SIGNATURE}"}}'
)


def test_signing_gives_the_previous_versions_hash_and_signature() -> None:
    signed = sign(BODY, KEY)
    assert (signed.hash, signed.signature) == (OLD_HASH, OLD_SIGNATURE)
    assert signed.canonical == BODY.canonical() == canonical_bytes(json.loads(OLD_WIRE)["credit"])


def test_the_wire_text_is_the_one_json_encoding_of_the_wire_form() -> None:
    signed = sign(BODY, KEY)
    assert signed.wire_json() == json.dumps(signed.to_wire(), separators=(",", ":"))
    assert json.loads(signed.wire_json()) == json.loads(OLD_WIRE)


def test_a_credit_stored_by_the_previous_version_still_verifies() -> None:
    body, digest = verify(json.loads(OLD_WIRE), expected_key=KEY.public_key, tip=ChainTip(6, "ab" * 32))
    assert digest == OLD_HASH
    assert body["seq"] == 7
