"""Signatures against signer weights, as stellar-core's SignatureChecker counts them.

For one check, an account's signers (its master key at the master weight unless that is 0,
then its extra signers) are matched against the envelope's signatures: a pre-authorised
transaction signer counts if its key is this transaction's hash, a hash(x) signer if a
signature is a preimage of its key, an ed25519 signer if a signature verifies under it. Each
signer counts once, each weight at most 255, and the check passes as soon as the weights
reach the threshold — which needs at least one matching signature even when the threshold
is 0. A signature that no check used makes the transaction ``tx_bad_auth_extra``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from stellar_sdk import Keypair, xdr
from stellar_sdk.exceptions import BadSignatureError

from cloud_sync.horizon.entries import MAX_WEIGHT, Account, Signer


class SignatureChecker:
    def __init__(self, contents_hash: bytes, signatures: Sequence[xdr.DecoratedSignature]) -> None:
        self._hash = contents_hash
        self._sigs = [(s.hint.signature_hint, s.signature.signature) for s in signatures]
        self._used = [False] * len(self._sigs)
        self._verified: dict[tuple[int, bytes], bool] = {}
        self.used_one_time: set[str] = set()
        """Pre-authorised transaction signers that matched (removed once the transaction applies)."""

    def _ed25519_ok(self, index: int, public_key: bytes) -> bool:
        cached = self._verified.get((index, public_key))
        if cached is None:
            try:
                Keypair.from_raw_ed25519_public_key(public_key).verify(self._hash, self._sigs[index][1])
                cached = True
            except BadSignatureError:
                cached = False
            self._verified[(index, public_key)] = cached
        return cached

    def check(self, signers: Sequence[Signer], needed: int) -> bool:
        total = 0
        for s in signers:
            if s.key.startswith("T") and s.raw == self._hash:
                self.used_one_time.add(s.key)
                total += min(s.weight, MAX_WEIGHT)
                if total >= needed:
                    return True
        for prefix in ("X", "G"):
            remaining = [s for s in signers if s.key.startswith(prefix)]
            for i, (hint, sig) in enumerate(self._sigs):
                for s in remaining:
                    raw = s.raw
                    if hint != raw[-4:]:
                        continue
                    ok = hashlib.sha256(sig).digest() == raw if prefix == "X" else self._ed25519_ok(i, raw)
                    if ok:
                        self._used[i] = True
                        total += min(s.weight, MAX_WEIGHT)
                        if total >= needed:
                            return True
                        remaining.remove(s)
                        break
        return False

    def check_account(self, account: Account, needed: int) -> bool:
        """Does the account's signing weight reach ``needed``?"""
        return self.check(signers_of(account), needed)

    def check_no_account(self, account_id: str) -> bool:
        """For an operation source that does not exist yet: its master key must have signed."""
        return self.check([Signer(account_id, 1)], 0)

    def all_used(self) -> bool:
        return all(self._used)


def signers_of(account: Account) -> list[Signer]:
    master = [Signer(account.account_id, account.master_weight)] if account.master_weight else []
    return master + account.signers
