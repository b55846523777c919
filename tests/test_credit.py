"""Credit encoding and verification: what a central system relies on."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from stellar_sdk import Keypair

from cloud_sync.credit import GENESIS_HASH, ChainTip, CreditBody, CreditRejected, Rejection, sign, verify
from gateway.credits import Tip, credit_for_interval
from gateway.intervals import Interval, Quality

KEY = Keypair.random()


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


def test_canonical_bytes_are_stable() -> None:
    body = CreditBody("gw", KEY.public_key, "m", 1, 0, 900, 5, "A", 0, 5, GENESIS_HASH, 1)
    assert body.canonical() == body.canonical()
    assert b" " not in body.canonical()
    assert sign(body, KEY).hash == sign(body, KEY).hash


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
