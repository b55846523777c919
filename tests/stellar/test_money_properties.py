"""Money invariants of the rules under random sequences of valid and invalid transactions.

Whatever is submitted — payments beyond balances, to accounts without trustlines, over limits,
badly signed, out of sequence, trustlines added and removed, accounts created — afterwards:

* native XLM is conserved: the sum of all balances plus the fee pool never changes;
* the asset's supply (all trustline balances) equals what the issuer minted minus what came back;
* no account is below its minimum balance, no trustline below 0 or above its limit;
* every account's subentry count is exactly its trustlines + data entries + signers;
* a refused transaction changes nothing; an accepted but failed one only its fee and sequence.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st
from stellar_sdk import Asset as SdkAsset
from stellar_sdk import Keypair

from cloud_sync.horizon.entries import Account, Asset, DataEntry, TrustLine, min_balance
from tests.stellar.conftest import XLM, Net, names


def key(i: int) -> Keypair:
    return Keypair.from_raw_ed25519_seed(bytes([i + 1]) * 32)


@dataclass(frozen=True)
class Step:
    kind: str
    src: int
    dst: int
    amount: int
    fault: str


steps = st.builds(
    Step,
    kind=st.sampled_from(["native", "credit", "credit", "trust", "untrust", "create", "multi"]),
    src=st.integers(0, 5), dst=st.integers(0, 5),
    amount=st.one_of(st.integers(1, 40 * XLM), st.integers(1, 200)),
    fault=st.sampled_from(["none"] * 6 + ["bad_sig", "bad_seq", "extra_sig"]),
)


def snapshot(net: Net) -> list[object]:
    return sorted((copy.deepcopy(e) for e in net.state.entries()), key=repr)


@settings(max_examples=60, deadline=None)
@given(st.lists(steps, min_size=1, max_size=25))
def test_money_is_conserved_and_reserves_hold(script: list[Step]) -> None:
    net = Net(root=key(99))
    issuer = net.fund(key(0), "50")
    holders = [net.fund(key(i), "6") for i in range(1, 5)]
    people = [issuer, *holders]
    kwh, sdk_kwh = Asset("KWH", issuer.public_key), SdkAsset("KWH", issuer.public_key)
    for h in holders[:2]:
        net.trust(h, kwh, limit="100")
    total = sum(a.balance for a in net.state.entries() if isinstance(a, Account)) + net.fee_pool
    minted = burned = 0
    created = 10

    for step in script:
        src = people[step.src % len(people)]
        dst = people[step.dst % len(people)]
        builder = net.tx(src, seq=(net.account(src).seq_num + 5) if step.fault == "bad_seq" else None)
        amount = f"{step.amount / XLM:.7f}"
        mint = burn = 0
        if step.kind == "native":
            builder.append_payment_op(dst.public_key, SdkAsset.native(), amount)
        elif step.kind in ("credit", "multi"):
            builder.append_payment_op(dst.public_key, sdk_kwh, amount)
            mint = step.amount if src is issuer and dst is not issuer else 0
            burn = step.amount if dst is issuer and src is not issuer else 0
            if step.kind == "multi":
                builder.append_payment_op(dst.public_key, SdkAsset.native(), "0.5")
        elif step.kind == "trust":
            builder.append_change_trust_op(sdk_kwh, f"{step.amount % 500}")
        elif step.kind == "untrust":
            builder.append_change_trust_op(sdk_kwh, "0")
        else:
            created += 1
            builder.append_create_account_op(key(created).public_key, amount)
        tx = builder.build()
        signers = {"bad_sig": [key(77)], "extra_sig": [src, key(78)]}.get(step.fault, [src])
        before = snapshot(net)
        source_before = copy.deepcopy(net.account(src))
        out = net.submit(tx, *signers)

        if not out.included:
            assert snapshot(net) == before, names(out)
        elif not out.successful:
            after = net.account(src)
            assert after.balance == source_before.balance - out.fee_charged
            assert after.seq_num == source_before.seq_num + 1
            others = [e for e in snapshot(net) if not (isinstance(e, Account) and e.account_id == src.public_key)]
            assert others == [e for e in before if not (isinstance(e, Account) and e.account_id == src.public_key)]
        else:
            minted += mint
            burned += burn

        entries = net.state.entries()
        accounts = [e for e in entries if isinstance(e, Account)]
        lines = [e for e in entries if isinstance(e, TrustLine)]
        assert sum(a.balance for a in accounts) + net.fee_pool == total
        assert sum(t.balance for t in lines) == minted - burned
        for a in accounts:
            assert a.balance >= min_balance(a, net.base_reserve), a
            owned = sum(1 for e in entries if isinstance(e, TrustLine | DataEntry) and e.account_id == a.account_id)
            assert a.num_sub_entries == owned + len(a.signers)
        for t in lines:
            assert 0 <= t.balance <= t.limit
