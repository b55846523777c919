"""Soroban authorisation entries checked as the host checks a Stellar account's ``require_auth``.

An entry with address credentials authorises its address for its root invocation when:

* the invocation is exactly the transaction's (this contract, this function, these arguments —
  compared as XDR) with no sub-invocations (this contract calls no other);
* ``signatureExpirationLedger`` is not before the ledger it applies in, and not further ahead
  than an entry may live (``MAX_SIGNATURE_TTL_LEDGERS``);
* its nonce was never used by that address (nonces are consumed only by a successful
  invocation, as the host writes them with the contract's changes);
* its signature — ``Vec<Map{public_key, signature}>``, keys strictly ascending — holds ed25519
  signatures over SHA-256 of the ``HashIdPreimage`` (``ENVELOPE_TYPE_SOROBAN_AUTHORIZATION``:
  network id, nonce, expiration ledger, invocation; the address-bound ``…_WITH_ADDRESS`` form
  for V2 credentials), each by a signer of the account, whose weights reach the account's
  **medium** threshold (the Stellar account contract's rule).

Source-account credentials authorise the transaction's source, whose envelope signatures the
transaction check has already weighed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from stellar_sdk import Keypair, StrKey, scval, xdr
from stellar_sdk.exceptions import BadSignatureError

from cloud_sync.horizon.entries import MAX_WEIGHT, Account
from cloud_sync.horizon.envelope import account_id_str
from cloud_sync.horizon.signatures import signers_of

MAX_SIGNATURE_TTL_LEDGERS = 535_680
"""About 31 days of 5-second ledgers: the network's maximum entry lifetime."""


class AuthFailure(Exception):
    """An authorisation entry does not authorise its address (the host traps the invocation)."""


@dataclass(frozen=True, slots=True)
class CheckedEntry:
    address: str
    nonce: int | None
    """None for source-account credentials (no nonce to consume)."""


def preimage_hash(entry: xdr.SorobanAuthorizationEntry, creds: xdr.SorobanAddressCredentials,
                  network_id: bytes, v2: bool) -> bytes:
    if v2:
        pre = xdr.HashIDPreimage(
            type=xdr.EnvelopeType.ENVELOPE_TYPE_SOROBAN_AUTHORIZATION_WITH_ADDRESS,
            soroban_authorization_with_address=xdr.HashIDPreimageSorobanAuthorizationWithAddress(
                network_id=xdr.Hash(network_id), nonce=creds.nonce,
                signature_expiration_ledger=creds.signature_expiration_ledger, address=creds.address,
                invocation=entry.root_invocation))
    else:
        pre = xdr.HashIDPreimage(
            type=xdr.EnvelopeType.ENVELOPE_TYPE_SOROBAN_AUTHORIZATION,
            soroban_authorization=xdr.HashIDPreimageSorobanAuthorization(
                network_id=xdr.Hash(network_id), nonce=creds.nonce,
                signature_expiration_ledger=creds.signature_expiration_ledger, invocation=entry.root_invocation))
    return hashlib.sha256(pre.to_xdr_bytes()).digest()


def check_entry(entry: xdr.SorobanAuthorizationEntry, invocation: xdr.InvokeContractArgs, *, tx_source: str,
                network_id: bytes, ledger_seq: int, account_of: Callable[[str], Account | None],
                nonce_used: Callable[[str, int], bool]) -> CheckedEntry:
    root = entry.root_invocation
    if (root.function.type != xdr.SorobanAuthorizedFunctionType.SOROBAN_AUTHORIZED_FUNCTION_TYPE_CONTRACT_FN
            or root.function.contract_fn is None
            or root.function.contract_fn.to_xdr_bytes() != invocation.to_xdr_bytes()):
        raise AuthFailure("the entry authorises a different invocation than the transaction's")
    if root.sub_invocations:
        raise AuthFailure("the entry authorises sub-invocations this contract never makes")
    kind = entry.credentials.type
    if kind == xdr.SorobanCredentialsType.SOROBAN_CREDENTIALS_SOURCE_ACCOUNT:
        return CheckedEntry(tx_source, None)
    if kind == xdr.SorobanCredentialsType.SOROBAN_CREDENTIALS_ADDRESS:
        creds, v2 = entry.credentials.address, False
    elif kind == xdr.SorobanCredentialsType.SOROBAN_CREDENTIALS_ADDRESS_V2:
        creds, v2 = entry.credentials.address_v2, True
    else:
        raise AuthFailure(f"credentials of type {kind.name} are not supported by the stand-in")
    assert creds is not None
    if creds.address.type != xdr.SCAddressType.SC_ADDRESS_TYPE_ACCOUNT or creds.address.account_id is None:
        raise AuthFailure("only account (G…) addresses can authorise here")
    address = account_id_str(creds.address.account_id)
    expiry = creds.signature_expiration_ledger.uint32
    if expiry < ledger_seq:
        raise AuthFailure(f"signature of {address} expired at ledger {expiry} (now {ledger_seq}); sign it again")
    if expiry >= ledger_seq + MAX_SIGNATURE_TTL_LEDGERS:
        raise AuthFailure(f"signature expiration ledger {expiry} is too far ahead of {ledger_seq}")
    nonce = creds.nonce.int64
    if nonce_used(address, nonce):
        raise AuthFailure(f"nonce {nonce} of {address} was already used (replayed authorisation)")
    account = account_of(address)
    if account is None:
        raise AuthFailure(f"account {address} does not exist")
    payload = preimage_hash(entry, creds, network_id, v2)
    weight = _weigh(creds.signature, payload, account)
    if weight < max(account.med_threshold, 1):
        raise AuthFailure(f"signatures for {address} weigh {weight}, its medium threshold is {account.med_threshold}")
    return CheckedEntry(address, nonce)


def _weigh(signature: xdr.SCVal, payload: bytes, account: Account) -> int:
    try:
        items = scval.from_vec(signature)
    except ValueError:
        raise AuthFailure("the signature is not a Vec of {public_key, signature} maps") from None
    weights = {s.raw: s.weight for s in signers_of(account) if s.key.startswith("G")}
    total, previous = 0, b""
    for item in items:
        try:
            fields = {scval.from_symbol(k): scval.from_bytes(v) for k, v in scval.from_map(item).items()}
            public_key, sig = fields["public_key"], fields["signature"]
        except (ValueError, KeyError):
            raise AuthFailure("each signature must be a map {public_key: Bytes, signature: Bytes}") from None
        if public_key <= previous:
            raise AuthFailure("signatures must be sorted by public key, each key once")
        previous = public_key
        if public_key not in weights:
            raise AuthFailure(f"{StrKey.encode_ed25519_public_key(public_key)} is not a signer of {account.account_id}")
        try:
            Keypair.from_raw_ed25519_public_key(public_key).verify(payload, sig)
        except BadSignatureError:
            raise AuthFailure("a signature does not verify over the authorisation payload (forged or for "
                              "another invocation, nonce or expiration)") from None
        total += min(weights[public_key], MAX_WEIGHT)
    return total
