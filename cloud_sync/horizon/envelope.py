"""Decoding submitted envelopes into what the rules need, and small XDR ↔ plain-value helpers.

A legacy v0 envelope is read as the v1 transaction it stands for, and hashed as one (as
stellar-core does). Muxed accounts (``M…``) are accepted, as on the real network, and resolve
to their underlying ``G…`` account; the product refuses them at its own layer.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
from dataclasses import dataclass

from stellar_sdk import MuxedAccount, StrKey, xdr

from cloud_sync.horizon.entries import Asset


class MalformedEnvelope(ValueError):
    """The request's ``tx`` is not a base64 XDR TransactionEnvelope (Horizon's transaction_malformed)."""


@dataclass(frozen=True, slots=True)
class Preconditions:
    min_time: int = 0
    max_time: int = 0
    """0: no upper time bound."""
    min_ledger: int = 0
    max_ledger: int = 0
    """0: no upper ledger bound; otherwise the first ledger the transaction may NOT be in."""
    min_seq_num: int | None = None
    min_seq_age: int = 0
    min_seq_ledger_gap: int = 0
    extra_signers: tuple[xdr.SignerKey, ...] = ()
    has_time_bounds: bool = False
    has_ledger_bounds: bool = False


@dataclass(frozen=True, slots=True)
class TxFrame:
    """One (inner or plain) transaction, decoded."""

    tx: xdr.Transaction
    hash: bytes
    source: str
    source_muxed: str | None
    fee: int
    seq_num: int
    cond: Preconditions
    ops: tuple[xdr.Operation, ...]
    signatures: tuple[xdr.DecoratedSignature, ...]
    has_soroban_data: bool


@dataclass(frozen=True, slots=True)
class FeeBumpFrame:
    hash: bytes
    fee_source: str
    fee_source_muxed: str | None
    fee: int
    inner: TxFrame
    signatures: tuple[xdr.DecoratedSignature, ...]


Frame = TxFrame | FeeBumpFrame


def network_id(passphrase: str) -> bytes:
    return hashlib.sha256(passphrase.encode()).digest()


def decode_envelope(envelope_b64: str) -> xdr.TransactionEnvelope:
    try:
        raw = base64.b64decode(envelope_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedEnvelope(f"tx is not base64: {exc}") from None
    try:
        return xdr.TransactionEnvelope.from_xdr_bytes(raw)
    except Exception as exc:  # noqa: BLE001 - xdrlib3 raises assorted types on truncated or bad input
        raise MalformedEnvelope(f"tx is not an XDR TransactionEnvelope: {exc}") from None


def frame_of(envelope: xdr.TransactionEnvelope, net_id: bytes) -> Frame:
    t = envelope.type
    if t == xdr.EnvelopeType.ENVELOPE_TYPE_TX_V0:
        assert envelope.v0 is not None
        return _tx_frame(_v0_as_v1(envelope.v0.tx), envelope.v0.signatures, net_id)
    if t == xdr.EnvelopeType.ENVELOPE_TYPE_TX:
        assert envelope.v1 is not None
        return _tx_frame(envelope.v1.tx, envelope.v1.signatures, net_id)
    if t == xdr.EnvelopeType.ENVELOPE_TYPE_TX_FEE_BUMP:
        assert envelope.fee_bump is not None
        fb = envelope.fee_bump.tx
        assert fb.inner_tx.v1 is not None
        inner = _tx_frame(fb.inner_tx.v1.tx, fb.inner_tx.v1.signatures, net_id)
        payload = xdr.TransactionSignaturePayload(
            xdr.Hash(net_id),
            xdr.TransactionSignaturePayloadTaggedTransaction(xdr.EnvelopeType.ENVELOPE_TYPE_TX_FEE_BUMP,
                                                             fee_bump=fb))
        g, m = muxed_ids(fb.fee_source)
        return FeeBumpFrame(hashlib.sha256(payload.to_xdr_bytes()).digest(), g, m, fb.fee.int64, inner,
                            tuple(envelope.fee_bump.signatures))
    raise MalformedEnvelope(f"envelope type {t!r} cannot be submitted")


def _v0_as_v1(v0: xdr.TransactionV0) -> xdr.Transaction:
    source = xdr.MuxedAccount(xdr.CryptoKeyType.KEY_TYPE_ED25519, ed25519=v0.source_account_ed25519)
    cond = (xdr.Preconditions(xdr.PreconditionType.PRECOND_TIME, time_bounds=v0.time_bounds)
            if v0.time_bounds is not None else xdr.Preconditions(xdr.PreconditionType.PRECOND_NONE))
    return xdr.Transaction(source, v0.fee, v0.seq_num, cond, v0.memo, v0.operations, xdr.TransactionExt(0))


def _tx_frame(tx: xdr.Transaction, signatures: list[xdr.DecoratedSignature], net_id: bytes) -> TxFrame:
    payload = xdr.TransactionSignaturePayload(
        xdr.Hash(net_id),
        xdr.TransactionSignaturePayloadTaggedTransaction(xdr.EnvelopeType.ENVELOPE_TYPE_TX, tx=tx))
    g, m = muxed_ids(tx.source_account)
    return TxFrame(tx=tx, hash=hashlib.sha256(payload.to_xdr_bytes()).digest(), source=g, source_muxed=m,
                   fee=tx.fee.uint32, seq_num=tx.seq_num.sequence_number.int64, cond=_preconditions(tx.cond),
                   ops=tuple(tx.operations), signatures=tuple(signatures), has_soroban_data=tx.ext.v != 0)


def _preconditions(cond: xdr.Preconditions) -> Preconditions:
    if cond.type == xdr.PreconditionType.PRECOND_NONE:
        return Preconditions()
    if cond.type == xdr.PreconditionType.PRECOND_TIME:
        assert cond.time_bounds is not None
        bounds = cond.time_bounds
        return Preconditions(min_time=bounds.min_time.time_point.uint64, max_time=bounds.max_time.time_point.uint64,
                             has_time_bounds=True)
    v2 = cond.v2
    assert v2 is not None
    tb, lb = v2.time_bounds, v2.ledger_bounds
    return Preconditions(
        min_time=tb.min_time.time_point.uint64 if tb else 0,
        max_time=tb.max_time.time_point.uint64 if tb else 0,
        min_ledger=lb.min_ledger.uint32 if lb else 0,
        max_ledger=lb.max_ledger.uint32 if lb else 0,
        min_seq_num=v2.min_seq_num.sequence_number.int64 if v2.min_seq_num is not None else None,
        min_seq_age=v2.min_seq_age.duration.uint64,
        min_seq_ledger_gap=v2.min_seq_ledger_gap.uint32,
        extra_signers=tuple(v2.extra_signers),
        has_time_bounds=tb is not None,
        has_ledger_bounds=lb is not None,
    )


# -- plain values from XDR ---------------------------------------------------------------
@functools.lru_cache(maxsize=4096)
def g_address(raw: bytes) -> str:
    """``G…`` of a raw ed25519 key (cached: a batch names the same few accounts a hundred times)."""
    return StrKey.encode_ed25519_public_key(raw)


def account_id_str(account: xdr.AccountID) -> str:
    assert account.account_id.ed25519 is not None
    return g_address(account.account_id.ed25519.uint256)


def muxed_ids(account: xdr.MuxedAccount) -> tuple[str, str | None]:
    """(underlying G… account, M… address or None) of a muxed-or-not account."""
    if account.type == xdr.CryptoKeyType.KEY_TYPE_ED25519:
        assert account.ed25519 is not None
        return g_address(account.ed25519.uint256), None
    muxed = MuxedAccount.from_xdr_object(account)
    return muxed.account_id, muxed.account_muxed


def muxed_id(account: xdr.MuxedAccount) -> int | None:
    return MuxedAccount.from_xdr_object(account).account_muxed_id


def asset_code_str(raw: bytes) -> str:
    return raw.rstrip(b"\0").decode("ascii", errors="replace")


def asset_code_valid(raw: bytes, twelve: bool) -> bool:
    """stellar-core's isAssetValid for a code: [a-zA-Z0-9], zero padded, 1-4 or 5-12 characters."""
    count, zeros = 0, False
    for b in raw:
        if b == 0:
            zeros = True
        elif zeros or b > 0x7F or not chr(b).isalnum():
            return False
        else:
            count += 1
    return count > 4 if twelve else count > 0


def asset_of(asset: xdr.Asset | xdr.ChangeTrustAsset) -> tuple[Asset | None, bool]:
    """(asset, valid); native is ``None``. Pool shares come back as (None, False)."""
    if asset.type == xdr.AssetType.ASSET_TYPE_NATIVE:
        return None, True
    if asset.type == xdr.AssetType.ASSET_TYPE_CREDIT_ALPHANUM4:
        assert asset.alpha_num4 is not None
        raw = asset.alpha_num4.asset_code.asset_code4
        return Asset(asset_code_str(raw), account_id_str(asset.alpha_num4.issuer)), asset_code_valid(raw, False)
    if asset.type == xdr.AssetType.ASSET_TYPE_CREDIT_ALPHANUM12:
        assert asset.alpha_num12 is not None
        raw = asset.alpha_num12.asset_code.asset_code12
        return Asset(asset_code_str(raw), account_id_str(asset.alpha_num12.issuer)), asset_code_valid(raw, True)
    return None, False


def signer_key_str(key: xdr.SignerKey) -> str | None:
    """A signer key as strkey; ``None`` for kinds this ledger does not support (signed payloads)."""
    if key.type == xdr.SignerKeyType.SIGNER_KEY_TYPE_ED25519:
        assert key.ed25519 is not None
        return StrKey.encode_ed25519_public_key(key.ed25519.uint256)
    if key.type == xdr.SignerKeyType.SIGNER_KEY_TYPE_PRE_AUTH_TX:
        assert key.pre_auth_tx is not None
        return StrKey.encode_pre_auth_tx(key.pre_auth_tx.uint256)
    if key.type == xdr.SignerKeyType.SIGNER_KEY_TYPE_HASH_X:
        assert key.hash_x is not None
        return StrKey.encode_sha256_hash(key.hash_x.uint256)
    return None


def string_valid(raw: bytes) -> bool:
    """stellar-core's isStringValid: printable ASCII only (no control characters, nothing ≥ 0x7F)."""
    return all(0x20 <= b < 0x7F for b in raw)
