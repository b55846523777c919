"""Signed nonsense: a credit the gateway key signed is still refused when a field is outside its domain.

The signature proves who wrote a credit, not that it makes sense. Each case below is signed with the
enrolled key (so only the domain rules of ``cloud_sync.credit`` can catch it), and each must be
rejected with the reason ``invalid`` and a detail naming the rule; honest edge cases must pass.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from receiver_kit import GW, KEY, T0, batch_bytes, honest_chain, resign

from cloud_sync.credit import ChainTip, CreditRejected, Rejection, verify
from cloud_sync.receiver import CreditStore

I64 = 2**63 - 1
FIRST = honest_chain(1)[0]
SECOND = honest_chain(2)[1]


def _check(item: dict[str, Any], tip: ChainTip | None = None) -> None:
    verify(item, expected_key=KEY.public_key, tip=tip)


NONSENSE: list[tuple[str, dict[str, Any], str]] = [
    ("end-before-start", {"end": T0 - 900}, "end"),
    ("end-not-start-plus-900", {"end": T0 + 1800}, "end"),
    ("start-not-aligned", {"start": T0 + 1, "end": T0 + 901}, "start"),
    ("start-before-1970", {"start": -900, "end": 0}, "start"),
    ("negative-interval-wh", {"wh": -5, "register_end_wh": 50_000 - 5}, "wh"),
    ("wh-not-the-register-delta", {"wh": 101}, "wh"),
    ("negative-registers", {"register_start_wh": -100, "register_end_wh": 0}, "register"),
    ("register-going-down", {"register_start_wh": 50_100, "register_end_wh": 50_000, "wh": 0}, "register_end"),
    ("unknown-kind", {"kind": "bonus"}, "kind"),
    ("unknown-quality", {"quality": "Z"}, "quality"),
    ("lowercase-quality", {"quality": "a"}, "quality"),
    ("interval-that-corrects", {"corrects": 1}, "corrects"),
    ("correction-without-corrects", {"kind": "correction"}, "corrects"),
    ("seq-zero", {"seq": 0}, "seq"),
    ("seq-negative", {"seq": -1}, "seq"),
    ("created-before-1970", {"created_ms": -1}, "created_ms"),
]


@pytest.mark.parametrize(("changes", "field"), [(c, f) for _, c, f in NONSENSE], ids=[n for n, _, _ in NONSENSE])
def test_signed_nonsense_is_rejected(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(CreditRejected) as info:
        _check(resign(FIRST, **changes))
    assert info.value.reason is Rejection.INVALID, info.value
    assert field in info.value.detail


CORRECTION_NONSENSE: list[tuple[str, dict[str, Any], str]] = [
    ("corrects-itself", {"corrects": 2}, "corrects"),
    ("corrects-a-later-seq", {"corrects": 3}, "corrects"),
    ("corrects-zero", {"corrects": 0}, "corrects"),
]


@pytest.mark.parametrize(("changes", "field"), [(c, f) for _, c, f in CORRECTION_NONSENSE],
                         ids=[n for n, _, _ in CORRECTION_NONSENSE])
def test_a_correction_must_correct_an_earlier_credit(changes: dict[str, Any], field: str) -> None:
    tip = ChainTip(1, FIRST["hash"])
    correction = resign(SECOND, kind="correction", **changes)
    with pytest.raises(CreditRejected) as info:
        _check(correction, tip)
    assert info.value.reason is Rejection.INVALID
    assert field in info.value.detail


@pytest.mark.parametrize(("field", "value"), [
    ("seq", 2**63), ("wh", 2**63), ("wh", -(2**63) - 1), ("start", 2**64), ("created_ms", 10**30),
    ("register_end_wh", 2**63), ("corrects", 2**63),
])
def test_integers_beyond_signed_64_bits_are_malformed(field: str, value: int) -> None:
    item = json.loads(json.dumps(FIRST))
    item["credit"][field] = value
    with pytest.raises(CreditRejected) as info:
        _check(item)
    assert info.value.reason is Rejection.MALFORMED
    assert field in info.value.detail


def test_honest_edge_cases_verify() -> None:
    """What the gateway really produces at the edges of each domain."""
    _check(resign(FIRST, wh=0, register_start_wh=0, register_end_wh=0))  # an idle new meter
    _check(resign(FIRST, start=0, end=900))  # the first quarter-hour of 1970 (a meter clock at zero)
    for quality in "AESFN":
        _check(resign(FIRST, quality=quality))
    huge = I64 - 1000
    _check(resign(FIRST, register_start_wh=huge, register_end_wh=I64, wh=1000, created_ms=I64))
    tip = ChainTip(1, FIRST["hash"])
    # A correction's wh is a signed delta; its registers are the interval's new values.
    _check(resign(SECOND, kind="correction", corrects=1, start=T0, end=T0 + 900, wh=-40,
                  register_start_wh=50_000, register_end_wh=50_060), tip)
    _check(resign(SECOND, kind="correction", corrects=1, start=T0, end=T0 + 900, wh=0, quality="E",
                  register_start_wh=50_010, register_end_wh=50_110), tip)


async def _ingest(store: CreditStore, credits: list[Any], key: str) -> dict[str, Any]:
    return await store.ingest(GW, key, batch_bytes(credits, key), credits)


async def test_a_correction_must_name_the_interval_credit_it_corrects_and_add_up(backend: CreditStore) -> None:
    chain = honest_chain(2)  # seq 1: T0, 100 Wh (50 000 -> 50 100); seq 2: T0+900, 101 Wh
    assert (await _ingest(backend, chain, "k1"))["accepted"] == 2
    base = {"kind": "correction", "seq": 3, "prev_hash": chain[1]["hash"]}
    wrong_start = resign(chain[1], **base, corrects=1, wh=-10, register_start_wh=50_100, register_end_wh=50_191)
    not_adding_up = resign(chain[0], **base, corrects=1, wh=-10, register_start_wh=50_000, register_end_wh=50_100)
    answer = await _ingest(backend, [wrong_start, not_adding_up], "k2")
    assert [r["reason"] for r in answer["results"]] == ["invalid", "invalid"]
    assert "corrects" in answer["results"][0]["detail"]
    assert "100" in answer["results"][1]["detail"]
    honest = resign(chain[0], **base, corrects=1, wh=-10, register_start_wh=50_000, register_end_wh=50_090)
    assert (await _ingest(backend, [honest], "k3"))["accepted"] == 1
    # A second correction of the same interval adds to the first: 100 - 10 + 25 = 115.
    again = resign(chain[0], kind="correction", seq=4, prev_hash=honest["hash"], corrects=1, wh=25,
                   register_start_wh=50_000, register_end_wh=50_115)
    assert (await _ingest(backend, [again], "k4"))["accepted"] == 1


async def test_an_interval_credited_twice_is_rejected(backend: CreditStore) -> None:
    chain = honest_chain(2)
    assert (await _ingest(backend, chain, "k1"))["accepted"] == 2
    twice = resign(chain[0], seq=3, prev_hash=chain[1]["hash"])  # the same quarter-hour again, as an interval
    answer = await _ingest(backend, [twice], "k2")
    assert answer["results"][0]["reason"] == "invalid"
    assert "seq 1" in answer["results"][0]["detail"]
