"""Credit encoding and verification: what a central system relies on."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stellar_sdk import Keypair

from cloud_sync.credit import GENESIS_HASH, ChainTip, CreditBody, CreditRejected, Rejection, channel_of, sign, verify
from cloud_sync.keys import Keypair as OwnKeypair
from gateway.channels import Channel
from gateway.credits import IntervalSigner, Tip, credit_for_interval
from gateway.intervals import Interval, Quality

KEY = Keypair.random()
OWN_KEY = OwnKeypair.random()


def _chain(n: int, keypair: Keypair = KEY) -> list[dict[str, Any]]:
    tip = Tip()
    out = []
    for k in range(n):
        interval = Interval("m1", 900 * k, 900 * (k + 1), 10 + k, Quality.ACTUAL, 1000 + k * 10, 1010 + k * 11)
        signed, tip = credit_for_interval(interval, tip, gateway_id="gw", keypair=keypair, created_ms=123)
        out.append(json.loads(json.dumps(signed.to_wire())))
    return out


def _verify_all(items: list[dict[str, Any]]) -> None:
    tip = None
    for item in items:
        body, digest = verify(item, expected_key=KEY.public_key, tip=tip)
        tip = ChainTip(body["seq"], digest)


def test_a_chain_verifies_and_links() -> None:
    chain = _chain(5)
    _verify_all(chain)
    assert chain[0]["credit"]["prev_hash"] == GENESIS_HASH
    assert chain[1]["credit"]["prev_hash"] == chain[0]["hash"]


def test_canonical_bytes_hash_and_signature_match_the_documented_scheme() -> None:
    # Fixed vectors: central systems implement the contract (openapi.yaml) from these bytes, so any
    # change to the encoding must show up here, not in production. Encoding v2 signs the channel.
    key = Keypair.from_raw_ed25519_seed(bytes(range(32)))
    vectors = {
        "import": ("6a550142ad3294f1a14c9cbc9a1ac9fefebe8b02677f850b0e4e970134e69398",
                   "O5nHcDX7jWwmcvXLo8vkqe2fiFtStzQ5IRihd7PdImCtW8xutX55xhGyZCVvFYW7qooZQLyqQzjeNo/DX6PYDw=="),
        "export": ("9475be23d5b4877227e340984edad626843e3c66ce123e639855359f986a32fe",
                   "VHJzJt4Qg21f88+ReezybUqPHPDb+qMwajXA+TUyhJcv3I2XCZEj74geMJ8kv1W8Yt3oCzaSNrNzts+JO+N5AQ=="),
    }
    for channel, (digest, signature_b64) in vectors.items():
        body = CreditBody("gw-1", key.public_key, "flat-1", 1, 1767225600, 1767226500, 150, "A", 1000, 1150,
                          GENESIS_HASH, 1767226501000, channel=channel)
        expected = (
            b'{"channel":"' + channel.encode() + b'","corrects":null,"created_ms":1767226501000,"end":1767226500,'
            b'"gateway":"gw-1","gateway_key":"GAB2CB576PHBBPQ5ODORRZ2LYCMWPZGWGCN2KDK7DXOIMZASKUY3QZ6Q",'
            b'"kind":"interval","meter":"flat-1",'
            b'"prev_hash":"0000000000000000000000000000000000000000000000000000000000000000",'
            b'"quality":"A","register_end_wh":1150,"register_start_wh":1000,"seq":1,"start":1767225600,"v":2,'
            b'"wh":150}'
        )
        assert body.canonical() == expected
        signed = sign(body, key)
        assert signed.hash == hashlib.sha256(expected).hexdigest() == digest
        # ed25519 is deterministic: the documented message is the domain prefix plus the canonical bytes
        # (the same prefix for v1 and v2: the version is signed in the body).
        signature = base64.b64decode(signed.signature)
        Keypair.from_public_key(key.public_key).verify(b"meter-gateway/credit/v1\n" + expected, signature)
        assert signed.signature == signature_b64


def test_the_version_1_encoding_is_unchanged() -> None:
    """v1 (no channel: import), as gateways before channels signed it, is still produced and verified."""
    key = Keypair.from_raw_ed25519_seed(bytes(range(32)))
    body = CreditBody("gw-1", key.public_key, "flat-1", 1, 1767225600, 1767226500, 150, "A", 1000, 1150,
                      GENESIS_HASH, 1767226501000, v=1)
    expected = (
        b'{"corrects":null,"created_ms":1767226501000,"end":1767226500,"gateway":"gw-1",'
        b'"gateway_key":"GAB2CB576PHBBPQ5ODORRZ2LYCMWPZGWGCN2KDK7DXOIMZASKUY3QZ6Q","kind":"interval",'
        b'"meter":"flat-1","prev_hash":"0000000000000000000000000000000000000000000000000000000000000000",'
        b'"quality":"A","register_end_wh":1150,"register_start_wh":1000,"seq":1,"start":1767225600,"v":1,'
        b'"wh":150}'
    )
    assert body.canonical() == expected
    signed = sign(body, key)
    assert signed.hash == "0bd6372953b074664a75ee7ca15a25f935aa71ceef77243f4b9e8cd5270015a7"
    assert signed.signature == ("Uo09K/JEANKM9UvgfXWLcN+p1QnbE4UYJVqd4xYhZFAFT0+Y2rXMRD9KYZNo13CR9Gm3rJM8qi3Q"
                                "wNJlW/ABDA==")
    parsed, _ = verify(signed.to_wire(), expected_key=key.public_key, tip=None)
    assert channel_of(parsed) == "import"


def test_a_channel_outside_import_and_export_or_in_the_wrong_version_is_malformed() -> None:
    key = Keypair.from_raw_ed25519_seed(bytes(range(32)))
    wire = sign(CreditBody("gw-1", key.public_key, "m", 1, 0, 900, 1, "A", 0, 1, GENESIS_HASH, 0,
                           channel="export"), key).to_wire()
    for credit, detail in (({**wire["credit"], "channel": "solar"}, "channel"),
                           ({**wire["credit"], "channel": None}, "channel"),
                           ({**wire["credit"], "v": 1}, "unknown"),  # v1 has no channel field
                           ({k: v for k, v in wire["credit"].items() if k != "channel"}, "missing"),
                           ({**wire["credit"], "v": 3}, "version")):
        with pytest.raises(CreditRejected, match=detail) as caught:
            verify({**wire, "credit": credit}, expected_key=key.public_key, tip=None)
        assert caught.value.reason is Rejection.MALFORMED


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda c: c[1]["credit"].__setitem__("wh", 999), Rejection.BAD_SIGNATURE),
        (lambda c: c[1].__setitem__("signature", c[2]["signature"]), Rejection.BAD_SIGNATURE),
        (lambda c: c[1].__setitem__("hash", "0" * 64), Rejection.HASH_MISMATCH),
        (lambda c: c.__setitem__(2, copy.deepcopy(c[1])), Rejection.REPLAY),
        (lambda c: c.pop(1), Rejection.GAP),
    ],
    ids=["tampered-field", "signature-from-another-credit", "wrong-hash", "replay", "gap"],
)
def test_tampering_is_rejected_with_the_right_reason(mutate: Any, reason: Rejection) -> None:
    chain = _chain(3)
    mutate(chain)
    with pytest.raises(CreditRejected) as info:
        _verify_all(chain)
    assert info.value.reason is reason


def test_forgery_by_another_key_is_rejected() -> None:
    forged = _chain(1, keypair=Keypair.random())
    with pytest.raises(CreditRejected) as info:
        verify(forged[0], expected_key=KEY.public_key, tip=None)
    assert info.value.reason is Rejection.WRONG_KEY
    forged[0]["credit"]["gateway_key"] = KEY.public_key  # claims our key, signed by another
    with pytest.raises(CreditRejected) as info:
        verify(forged[0], expected_key=KEY.public_key, tip=None)
    assert info.value.reason is Rejection.BAD_SIGNATURE


def test_malformed_credit_names_the_field() -> None:
    item = _chain(1)[0]
    item["credit"]["wh"] = 1.5
    with pytest.raises(CreditRejected) as info:
        verify(item, expected_key=KEY.public_key, tip=None)
    assert info.value.reason is Rejection.MALFORMED
    assert "'wh'" in info.value.detail


def test_a_batch_rejected_for_a_cause_fixed_since_is_evaluated_again(tmp_path: Path) -> None:
    from cloud_sync.receiver import ReceiverStore

    chain = _chain(2)
    raw = json.dumps({"batch": "b1", "credits": chain}).encode()
    store = ReceiverStore(tmp_path / "receiver.db", {"gw": Keypair.random().public_key})  # enrolled wrongly
    first = store.ingest("gw", "b1", raw, chain)
    assert first["rejected"] == 2
    assert {r["reason"] for r in first["results"]} == {"wrong_key"}
    store.revoke("gw", 1)  # the enrolment is corrected
    store.enrol("gw", KEY.public_key, None, 2)
    again = store.ingest("gw", "b1", raw, chain)  # the gateway resends the same batch, same key and bytes
    assert again["accepted"] == 2
    assert not again.get("replayed")
    replay = store.ingest("gw", "b1", raw, chain)
    assert replay["replayed"] is True, "a fully accepted answer is replayed as stored"
    assert [c["credit"]["seq"] for c in store.credits("gw", "m1")] == [1, 2]
    store.close()


_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True) | st.text(max_size=8)
_ints = st.integers(-(2**63), 2**63 - 1)


@settings(max_examples=200, deadline=None)
@given(meter=_ids, gateway=_ids, start=_ints, end=_ints, wh=_ints, reg_start=_ints, reg_end=_ints,
       quality=st.sampled_from(list(Quality)), channel=st.sampled_from(list(Channel)),
       seq=st.integers(0, 2**62), prev=st.sampled_from([GENESIS_HASH, "ab" * 32]), created_ms=_ints)
def test_the_ledgers_interval_signer_gives_credit_for_intervals_bytes(
        meter: str, gateway: str, start: int, end: int, wh: int, reg_start: int, reg_end: int, quality: Quality,
        channel: Channel, seq: int, prev: str, created_ms: int) -> None:
    interval = Interval(meter, start, end, wh, quality, reg_start, reg_end, channel=channel)
    tip = Tip(seq, prev)
    signed, expected_tip = credit_for_interval(interval, tip, gateway_id=gateway, keypair=OWN_KEY,
                                               created_ms=created_ms)
    signer = IntervalSigner(gateway_id=gateway, keypair=OWN_KEY)
    assert signer.sign(interval, tip, created_ms) == (signed.hash, signed.wire_json(), expected_tip)


def test_the_interval_signer_steps_aside_for_a_value_that_is_not_an_int() -> None:
    interval = Interval("m1", 0, 900, True, Quality.ACTUAL, 0, 1)  # type: ignore[arg-type]  # a bool, as JSON writes it
    signed, tip = credit_for_interval(interval, Tip(), gateway_id="gw", keypair=OWN_KEY, created_ms=1)
    assert IntervalSigner(gateway_id="gw", keypair=OWN_KEY).sign(interval, Tip(), 1) == (
        signed.hash, signed.wire_json(), tip)
    assert '"wh":true' in signed.wire_json()
