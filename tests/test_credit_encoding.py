"""The credit encoding is built once per credit, and stays what earlier versions signed.

The golden values were produced by the previous encoder (``dataclasses.asdict`` + two JSON
encodes, encoding v1): a v1 credit signed today must carry the same canonical bytes, hash and
signature (a ledger from before channels re-signs its unsent v1 credits after a late reading), and
a wire credit stored by that version (fields in declaration order) must still verify.
"""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stellar_sdk import Keypair

from cloud_sync.credit import DOMAIN, ChainTip, CreditBody, canonical_bytes, sign, verify
from cloud_sync.keys import Keypair as OwnKeypair
from cloud_sync.keys import MissingSecret
from gateway.channels import Channel

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


# Encoding v2, signed by the dict encoder (``json.dumps(sort_keys=True)`` of ``as_dict()``) before the
# template (``_canonical_v2``) and the direct libsodium call replaced it: the same key must give the same
# bytes, hash and signature.
V2_EXPORT = CreditBody(gateway="gw-1", gateway_key=KEY.public_key, meter="m1", seq=7, start=1767225600,
                       end=1767226500, wh=123, quality="E", register_start_wh=1000, register_end_wh=1123,
                       prev_hash="ab" * 32, created_ms=1767226501000, channel="export")
V2_EXPORT_WIRE = (
    '{"credit":{"channel":"export","corrects":null,"created_ms":1767226501000,"end":1767226500,"gateway":"gw-1",'
    '"gateway_key":"GAB2CB576PHBBPQ5ODORRZ2LYCMWPZGWGCN2KDK7DXOIMZASKUY3QZ6Q","kind":"interval","meter":"m1",'
    '"prev_hash":"abababababababababababababababababababababababababababababababab","quality":"E",'
    '"register_end_wh":1123,"register_start_wh":1000,"seq":7,"start":1767225600,"v":2,"wh":123},'
    '"hash":"034ccd5346cf0986d0f5d50931836c2a058d205be57978fafc85c8b46daee581",'
    '"signature":"sx7i4PR7ZkIwvfAPanD5OKVXH3CMzPxQmHwNkVpAy6naLM9f4Hsbixo77X0MOoRN0rA2rWYud524m9ud8BUbBg=="}'
)
V2_CORRECTION = CreditBody(gateway="gw-1", gateway_key=KEY.public_key, meter="m1", seq=7, start=1767225600,
                           end=1767226500, wh=-5, quality="E", register_start_wh=1000, register_end_wh=1123,
                           prev_hash="ab" * 32, created_ms=1767226501000, kind="correction", corrects=3)
V2_CORRECTION_WIRE = (
    '{"credit":{"channel":"import","corrects":3,"created_ms":1767226501000,"end":1767226500,"gateway":"gw-1",'
    '"gateway_key":"GAB2CB576PHBBPQ5ODORRZ2LYCMWPZGWGCN2KDK7DXOIMZASKUY3QZ6Q","kind":"correction","meter":"m1",'
    '"prev_hash":"abababababababababababababababababababababababababababababababab","quality":"E",'
    '"register_end_wh":1123,"register_start_wh":1000,"seq":7,"start":1767225600,"v":2,"wh":-5},'
    '"hash":"2be04c95a3fc348d5be2d67910a230237b72475d7552a60c966bef00df7e97f6",'
    '"signature":"xWTjYHBZ1+Ul12lHddLSO+KRrsnpm0Zvvwvm9YiOS+ymD4r1KdTkHmbQgtnyku/lrosfPPO8BlJ/M1JPjNAOBA=="}'
)


def test_v2_credits_are_byte_for_byte_what_the_dict_encoder_signed() -> None:
    for body, wire in ((V2_EXPORT, V2_EXPORT_WIRE), (V2_CORRECTION, V2_CORRECTION_WIRE)):
        signed = sign(body, KEY)
        assert signed.wire_json() == wire
        assert signed.canonical == canonical_bytes(body.as_dict())
        assert signed.signature == base64.b64encode(KEY.sign(DOMAIN + signed.canonical)).decode("ascii")
        verify(json.loads(wire), expected_key=KEY.public_key, tip=ChainTip(6, "ab" * 32))


def test_the_gateways_own_keypair_signs_as_stellar_sdk_does() -> None:
    own = OwnKeypair.from_raw_ed25519_seed(bytes(range(32)))
    assert sign(V2_EXPORT, own).wire_json() == V2_EXPORT_WIRE
    with pytest.raises(MissingSecret):
        sign(V2_EXPORT, OwnKeypair.from_public_key(own.public_key))


text = st.text(st.characters(codec="utf-8"), max_size=12)
integer = st.integers(-(2**70), 2**70)


@settings(max_examples=300, deadline=None)
@given(st.builds(CreditBody, gateway=text, gateway_key=text, meter=text, seq=integer, start=integer, end=integer,
                 wh=integer, quality=text, register_start_wh=integer, register_end_wh=integer, prev_hash=text,
                 created_ms=integer, kind=text, corrects=st.none() | integer | st.booleans(),
                 v=st.sampled_from([1, 2, True]), channel=text | st.sampled_from([Channel.IMPORT, Channel.EXPORT])))
def test_the_template_encodes_any_body_as_the_dict_encoder_does(body: CreditBody) -> None:
    """Whatever the fields hold (non-ASCII, DEL, quotes, huge or boolean integers, enum strings)."""
    assert body.canonical() == canonical_bytes(body.as_dict())
