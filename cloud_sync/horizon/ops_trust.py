"""Moving value and holding assets: payment, change_trust, allow_trust, set_trust_line_flags.

A payment is applied as stellar-core applies it (as a path payment with an empty path): the
destination is credited first, then the source debited, so a payment that is both too big
and to an account without a trustline fails ``op_no_trust``. The issuer of an asset holds no
trustline to it: paying from the issuer creates the asset out of nothing (mint), paying to it
destroys what arrives (burn), and neither side has a balance or limit to check.
"""

from __future__ import annotations

from enum import IntEnum

from stellar_sdk import xdr

from cloud_sync.horizon.codes import AT, CT, PAY, STF
from cloud_sync.horizon.context import OpContext
from cloud_sync.horizon.entries import (
    ALL_TRUSTLINE_FLAGS,
    AUTH_CLAWBACK_ENABLED,
    AUTH_REQUIRED,
    AUTH_REVOCABLE,
    INT64_MAX,
    TL_AUTHORIZED,
    TL_AUTHORIZED_TO_MAINTAIN_LIABILITIES,
    TL_CLAWBACK_ENABLED,
    Account,
    Asset,
    TrustLine,
    account_key,
    available_balance,
    trustline_key,
)
from cloud_sync.horizon.envelope import account_id_str, asset_code_str, asset_code_valid, asset_of, muxed_ids
from cloud_sync.horizon.sponsorship import Reserve, create_subentry, outer_code, remove_subentry

OP = xdr.OperationResultCode


# -- payment -----------------------------------------------------------------------------
def check_payment(body: xdr.OperationBody, source: str) -> IntEnum | None:
    op = body.payment_op
    assert op is not None
    _, valid = asset_of(op.asset)
    if op.amount.int64 <= 0 or not valid:
        return PAY.PAYMENT_MALFORMED
    return None


def apply_payment(body: xdr.OperationBody, ctx: OpContext) -> IntEnum:
    op = body.payment_op
    assert op is not None
    asset, _ = asset_of(op.asset)
    destination, _ = muxed_ids(op.destination)
    amount, view = op.amount.int64, ctx.view
    if destination == ctx.source and asset is None:
        return PAY.PAYMENT_SUCCESS
    to_issuer = asset is not None and asset.issuer == destination
    if not to_issuer and not view.exists(account_key(destination)):
        return PAY.PAYMENT_NO_DESTINATION
    # Credit the destination.
    if asset is None:
        dest = view.account(destination)
        assert dest is not None
        if dest.balance > INT64_MAX - amount:
            return PAY.PAYMENT_LINE_FULL
        dest.balance += amount
    elif not to_issuer:
        line = view.trustline(destination, asset)
        if line is None:
            return PAY.PAYMENT_NO_TRUST
        if not line.authorized:
            return PAY.PAYMENT_NOT_AUTHORIZED
        if line.balance > line.limit - amount:
            return PAY.PAYMENT_LINE_FULL
        line.balance += amount
    # Debit the source.
    if asset is None:
        src = ctx.source_account()
        if amount > available_balance(src, ctx.ledger.base_reserve):
            return PAY.PAYMENT_UNDERFUNDED
        src.balance -= amount
    elif asset.issuer != ctx.source:
        line = view.trustline(ctx.source, asset)
        if line is None:
            return PAY.PAYMENT_SRC_NO_TRUST
        if not line.authorized:
            return PAY.PAYMENT_SRC_NOT_AUTHORIZED
        if line.balance < amount:
            return PAY.PAYMENT_UNDERFUNDED
        line.balance -= amount
    return PAY.PAYMENT_SUCCESS


# -- change_trust ------------------------------------------------------------------------
def check_change_trust(body: xdr.OperationBody, source: str) -> IntEnum | None:
    op = body.change_trust_op
    assert op is not None
    if op.line.type == xdr.AssetType.ASSET_TYPE_POOL_SHARE:
        return OP.opNOT_SUPPORTED  # liquidity pools are not part of this ledger
    asset, valid = asset_of(op.line)
    if op.limit.int64 < 0 or not valid or asset is None or asset.issuer == source:
        return CT.CHANGE_TRUST_MALFORMED
    return None


def apply_change_trust(body: xdr.OperationBody, ctx: OpContext) -> IntEnum:
    op = body.change_trust_op
    assert op is not None
    asset, _ = asset_of(op.line)
    assert asset is not None
    limit, view = op.limit.int64, ctx.view
    line = view.trustline(ctx.source, asset)
    if line is not None:
        if limit < line.balance:
            return CT.CHANGE_TRUST_INVALID_LIMIT
        if limit == 0:
            remove_subentry(view, ctx.source_account(), line.sponsor)
            view.erase(trustline_key(ctx.source, asset))
        elif not view.exists(account_key(asset.issuer)):
            return CT.CHANGE_TRUST_NO_ISSUER
        else:
            line.limit = limit
        return CT.CHANGE_TRUST_SUCCESS
    if limit == 0:
        return CT.CHANGE_TRUST_INVALID_LIMIT
    issuer = view.get_entry(account_key(asset.issuer))
    if issuer is None:
        return CT.CHANGE_TRUST_NO_ISSUER
    assert isinstance(issuer, Account)
    flags = 0 if issuer.flags & AUTH_REQUIRED else TL_AUTHORIZED
    if issuer.flags & AUTH_CLAWBACK_ENABLED:
        flags |= TL_CLAWBACK_ENABLED
    reserve, sponsor = create_subentry(view, ctx.ledger, ctx.source_account())
    if reserve is not Reserve.SUCCESS:
        return outer_code(reserve) or CT.CHANGE_TRUST_LOW_RESERVE
    view.create(TrustLine(ctx.source, asset, balance=0, limit=limit, flags=flags, sponsor=sponsor))
    return CT.CHANGE_TRUST_SUCCESS


# -- allow_trust / set_trust_line_flags (the issuer authorises holders) -------------------
_AUTH_MASK = TL_AUTHORIZED | TL_AUTHORIZED_TO_MAINTAIN_LIABILITIES


def _auth_level(flags: int) -> int:
    """0 unauthorised < 1 may only maintain liabilities < 2 authorised."""
    return 2 if flags & TL_AUTHORIZED else 1 if flags & TL_AUTHORIZED_TO_MAINTAIN_LIABILITIES else 0


def allow_trust_asset(op: xdr.AllowTrustOp, issuer: str) -> tuple[Asset | None, bool]:
    code = op.asset
    if code.type == xdr.AssetType.ASSET_TYPE_CREDIT_ALPHANUM4:
        assert code.asset_code4 is not None
        raw = code.asset_code4.asset_code4
        return Asset(asset_code_str(raw), issuer), asset_code_valid(raw, False)
    if code.type == xdr.AssetType.ASSET_TYPE_CREDIT_ALPHANUM12:
        assert code.asset_code12 is not None
        raw = code.asset_code12.asset_code12
        return Asset(asset_code_str(raw), issuer), asset_code_valid(raw, True)
    return None, False


def check_allow_trust(body: xdr.OperationBody, source: str) -> IntEnum | None:
    op = body.allow_trust_op
    assert op is not None
    authorize = op.authorize.uint32
    asset, valid = allow_trust_asset(op, source)
    if (asset is None or not valid or authorize & ~_AUTH_MASK or authorize == _AUTH_MASK
            or account_id_str(op.trustor) == source):
        return AT.ALLOW_TRUST_MALFORMED
    return None


def _issuer_may_set(ctx: OpContext, line: TrustLine, new_flags: int) -> bool:
    """Lowering a holder's authorisation needs AUTH_REVOCABLE on the issuer."""
    issuer = ctx.source_account()
    return bool(issuer.flags & AUTH_REVOCABLE) or _auth_level(new_flags) >= _auth_level(line.flags)


def apply_allow_trust(body: xdr.OperationBody, ctx: OpContext) -> IntEnum:
    op = body.allow_trust_op
    assert op is not None
    asset, _ = allow_trust_asset(op, ctx.source)
    assert asset is not None
    line = ctx.view.trustline(account_id_str(op.trustor), asset)
    if line is None:
        return AT.ALLOW_TRUST_NO_TRUST_LINE
    new_flags = (line.flags & ~_AUTH_MASK) | op.authorize.uint32
    if not _issuer_may_set(ctx, line, new_flags):
        return AT.ALLOW_TRUST_CANT_REVOKE
    line.flags = new_flags
    return AT.ALLOW_TRUST_SUCCESS


def check_set_trust_line_flags(body: xdr.OperationBody, source: str) -> IntEnum | None:
    op = body.set_trust_line_flags_op
    assert op is not None
    asset, valid = asset_of(op.asset)
    set_flags, clear_flags = op.set_flags.uint32, op.clear_flags.uint32
    if (asset is None or not valid or asset.issuer != source or account_id_str(op.trustor) == source
            or set_flags & clear_flags or set_flags & TL_CLAWBACK_ENABLED
            or (set_flags | clear_flags) & ~ALL_TRUSTLINE_FLAGS or set_flags & _AUTH_MASK == _AUTH_MASK):
        return STF.SET_TRUST_LINE_FLAGS_MALFORMED
    return None


def apply_set_trust_line_flags(body: xdr.OperationBody, ctx: OpContext) -> IntEnum:
    op = body.set_trust_line_flags_op
    assert op is not None
    asset, _ = asset_of(op.asset)
    assert asset is not None
    line = ctx.view.trustline(account_id_str(op.trustor), asset)
    if line is None:
        return STF.SET_TRUST_LINE_FLAGS_NO_TRUST_LINE
    new_flags = (line.flags & ~op.clear_flags.uint32) | op.set_flags.uint32
    if new_flags & _AUTH_MASK == _AUTH_MASK:
        return STF.SET_TRUST_LINE_FLAGS_INVALID_STATE
    if not _issuer_may_set(ctx, line, new_flags):
        return STF.SET_TRUST_LINE_FLAGS_CANT_REVOKE
    line.flags = new_flags
    return STF.SET_TRUST_LINE_FLAGS_SUCCESS
