"""Signatures checked ahead on several threads (cloud_sync.receiver.verify) change no verdict, in either store."""

from __future__ import annotations

import copy
import time
from typing import Any

from receiver_kit import GW, KEY, batch_bytes, honest_chain, resign
from stellar_sdk import Keypair

from cloud_sync.receiver.snapshot import MemoryView
from cloud_sync.receiver.store import CreditStore
from cloud_sync.receiver.verify import MIN_PER_THREAD, THREADS, preverify
from cloud_sync.receiver_intake import Batch, decode_body, examine_batch, parse_batch

OTHER = Keypair.from_raw_ed25519_seed(bytes(range(100, 132)))
METERS = 4
PER_METER = 100


def mixed_batch() -> tuple[list[dict[str, Any]], set[int]]:
    """400 credits of 4 meters, interleaved, with every kind of bad credit spread through; the bad positions."""
    chains = [honest_chain(PER_METER, meter=f"m{i}") for i in range(METERS)]
    items = [chains[i][k] for k in range(PER_METER) for i in range(METERS)]
    bad: set[int] = set()

    def spoil(position: int, item: Any) -> None:
        items[position] = item
        bad.add(position)

    tampered = copy.deepcopy(items[21])
    tampered["credit"]["wh"] += 1  # content changed, old signature
    spoil(21, tampered)
    spoil(57, resign(items[57], OTHER))  # signed by another key
    wrong_hash = copy.deepcopy(items[130])
    wrong_hash["hash"] = "0" * 64
    spoil(130, wrong_hash)
    spoil(211, {"credit": items[211]["credit"], "signature": items[211]["signature"]})  # no hash: malformed
    spoil(302, resign(items[302], KEY, wh=items[302]["credit"]["wh"] * 1000))  # signed nonsense: its domain rules
    spoil(399, "not a credit")
    return items, bad


def test_the_checks_run_on_several_threads_and_pass_exactly_the_honest_credits() -> None:
    items, bad = mixed_batch()
    flags = preverify(items, KEY.public_key)
    assert flags is not None
    assert [i for i, ok in enumerate(flags) if not ok] == sorted(bad - {302}), \
        "each honest signature passes (the signed nonsense too: its signature is good), every forged one fails"
    assert THREADS == 1 or len(items) >= 2 * MIN_PER_THREAD, "big enough to be split when there are cores"
    assert preverify(items, None) is None
    assert not any(preverify(items, OTHER.public_key) or [True]), "credits naming another key pass for none"


def test_examining_with_checks_done_ahead_gives_the_same_results() -> None:
    items, _ = mixed_batch()
    raw = batch_bytes(items, "k1")
    alone = examine_batch(parse_batch(decode_body(raw), "k1"), KEY.public_key, MemoryView({}, {}, {}))
    batch = parse_batch(decode_body(raw), "k1")
    ahead = examine_batch(batch, KEY.public_key, MemoryView({}, {}, {}), preverify(batch.credits, KEY.public_key))
    assert ahead == alone
    assert alone["rejected"] >= 6  # and every later credit of a spoilt meter is a gap
    assert alone["accepted"] > 100


async def test_both_stores_answer_a_mixed_batch_as_examined_one_credit_at_a_time(backend: CreditStore) -> None:
    await backend.ensure_enrolled(GW, KEY.public_key, int(time.time() * 1000))
    items, _ = mixed_batch()
    reference = MemoryView({}, {}, {})
    for key in ("first", "again"):  # again: duplicates of what was stored, the bad ones rejected anew
        raw = batch_bytes(items, key)
        expected = examine_batch(Batch(GW, key, decode_body(raw)["credits"]), KEY.public_key, reference)
        got = await backend.ingest(GW, key, raw, parse_batch(decode_body(raw), key).credits)
        assert got == expected, key
    assert expected["duplicate"] == sum(m["credits"] for m in await backend.summary(GW)) > 100
