"""Operations on accounts themselves: create_account, set_options, manage_data, bump_sequence.

Each operation has a ``check_*`` (stellar-core's doCheckValid: what can be judged from the
operation and its source alone, before the transaction is accepted) and an ``apply_*``
(doApply: against the ledger, inside the operation's own overlay). Both return the XDR code.
"""

from __future__ import annotations

from enum import IntEnum

from stellar_sdk import xdr

from cloud_sync.horizon.codes import BS, CA, MD, SO
from cloud_sync.horizon.context import OpContext, Threshold
from cloud_sync.horizon.entries import (
    ALL_ACCOUNT_FLAGS,
    AUTH_CLAWBACK_ENABLED,
    AUTH_IMMUTABLE,
    AUTH_REVOCABLE,
    MAX_SIGNERS,
    MAX_WEIGHT,
    Account,
    DataEntry,
    Signer,
    account_key,
    available_balance,
    data_key,
)
from cloud_sync.horizon.envelope import account_id_str, signer_key_str, string_valid
from cloud_sync.horizon.sponsorship import Reserve, create_account_entry, create_subentry, outer_code, remove_subentry


# -- create_account ----------------------------------------------------------------------
def check_create_account(body: xdr.OperationBody, source: str) -> IntEnum | None:
    op = body.create_account_op
    assert op is not None
    if op.starting_balance.int64 < 0 or account_id_str(op.destination) == source:
        return CA.CREATE_ACCOUNT_MALFORMED
    return None


def apply_create_account(body: xdr.OperationBody, ctx: OpContext) -> IntEnum:
    op = body.create_account_op
    assert op is not None
    destination, starting = account_id_str(op.destination), op.starting_balance.int64
    if ctx.view.exists(account_key(destination)):
        return CA.CREATE_ACCOUNT_ALREADY_EXIST
    new = Account(destination, balance=starting, seq_num=ctx.ledger.seq << 32)
    reserve = create_account_entry(ctx.view, ctx.ledger, new)
    if reserve is not Reserve.SUCCESS:
        return outer_code(reserve) or CA.CREATE_ACCOUNT_LOW_RESERVE
    source = ctx.source_account()
    if available_balance(source, ctx.ledger.base_reserve) < starting:
        return CA.CREATE_ACCOUNT_UNDERFUNDED
    source.balance -= starting
    ctx.view.create(new)
    return CA.CREATE_ACCOUNT_SUCCESS


# -- set_options -------------------------------------------------------------------------
def threshold_set_options(body: xdr.OperationBody) -> Threshold:
    """Changing the master weight, a threshold or a signer needs the high threshold."""
    op = body.set_options_op
    assert op is not None
    fields = (op.master_weight, op.low_threshold, op.med_threshold, op.high_threshold, op.signer)
    if any(field is not None for field in fields):
        return Threshold.HIGH
    return Threshold.MEDIUM


def _u32(value: xdr.Uint32 | None) -> int | None:
    return None if value is None else value.uint32


def check_set_options(body: xdr.OperationBody, source: str) -> IntEnum | None:
    op = body.set_options_op
    assert op is not None
    set_flags, clear_flags = _u32(op.set_flags), _u32(op.clear_flags)
    if (set_flags or 0) & ~ALL_ACCOUNT_FLAGS or (clear_flags or 0) & ~ALL_ACCOUNT_FLAGS:
        return SO.SET_OPTIONS_UNKNOWN_FLAG
    if set_flags is not None and clear_flags is not None and set_flags & clear_flags:
        return SO.SET_OPTIONS_BAD_FLAGS
    for weight in (op.master_weight, op.low_threshold, op.med_threshold, op.high_threshold):
        if weight is not None and weight.uint32 > MAX_WEIGHT:
            return SO.SET_OPTIONS_THRESHOLD_OUT_OF_RANGE
    if op.signer is not None:
        key = signer_key_str(op.signer.key)
        # Signed-payload signers (CAP-40) are not supported by this ledger: refused as a bad signer.
        if key is None or key == source or op.signer.weight.uint32 > MAX_WEIGHT:
            return SO.SET_OPTIONS_BAD_SIGNER
    if op.home_domain is not None and not string_valid(op.home_domain.string32):
        return SO.SET_OPTIONS_INVALID_HOME_DOMAIN
    return None


def apply_set_options(body: xdr.OperationBody, ctx: OpContext) -> IntEnum:
    op = body.set_options_op
    assert op is not None
    account = ctx.source_account()
    if op.inflation_dest is not None:
        dest = account_id_str(op.inflation_dest)
        if not ctx.view.exists(account_key(dest)):
            return SO.SET_OPTIONS_INVALID_INFLATION
        account.inflation_dest = dest
    for flags, setting in ((_u32(op.clear_flags), False), (_u32(op.set_flags), True)):
        if flags is None:
            continue
        if flags & ALL_ACCOUNT_FLAGS and account.flags & AUTH_IMMUTABLE:
            return SO.SET_OPTIONS_CANT_CHANGE
        account.flags = account.flags | flags if setting else account.flags & ~flags
    if account.flags & AUTH_CLAWBACK_ENABLED and not account.flags & AUTH_REVOCABLE:
        return SO.SET_OPTIONS_AUTH_REVOCABLE_REQUIRED
    if op.home_domain is not None:
        account.home_domain = op.home_domain.string32.decode("ascii")
    if op.master_weight is not None:
        account.master_weight = op.master_weight.uint32
    if op.low_threshold is not None:
        account.low_threshold = op.low_threshold.uint32
    if op.med_threshold is not None:
        account.med_threshold = op.med_threshold.uint32
    if op.high_threshold is not None:
        account.high_threshold = op.high_threshold.uint32
    if op.signer is not None:
        key = signer_key_str(op.signer.key)
        assert key is not None, "check_set_options refuses unsupported signer kinds"
        weight = op.signer.weight.uint32
        existing = account.signer(key)
        if weight and existing is not None:
            existing.weight = weight
        elif weight:
            if len(account.signers) >= MAX_SIGNERS:
                return SO.SET_OPTIONS_TOO_MANY_SIGNERS
            reserve, sponsor = create_subentry(ctx.view, ctx.ledger, account)
            if reserve is not Reserve.SUCCESS:
                return outer_code(reserve) or SO.SET_OPTIONS_LOW_RESERVE
            account.signers.append(Signer(key, weight, sponsor))
            account.signers.sort(key=Signer.sort_key)
        elif existing is not None:
            remove_subentry(ctx.view, account, existing.sponsor)
            account.signers.remove(existing)
    return SO.SET_OPTIONS_SUCCESS


# -- manage_data -------------------------------------------------------------------------
def check_manage_data(body: xdr.OperationBody, source: str) -> IntEnum | None:
    op = body.manage_data_op
    assert op is not None
    name = op.data_name.string64
    if not name or not string_valid(name):
        return MD.MANAGE_DATA_INVALID_NAME
    return None


def apply_manage_data(body: xdr.OperationBody, ctx: OpContext) -> IntEnum:
    op = body.manage_data_op
    assert op is not None
    name = op.data_name.string64.decode("ascii")
    account = ctx.source_account()
    entry = ctx.view.data(ctx.source, name)
    if op.data_value is not None:
        if entry is not None:
            entry.value = op.data_value.data_value
            return MD.MANAGE_DATA_SUCCESS
        reserve, sponsor = create_subentry(ctx.view, ctx.ledger, account)
        if reserve is not Reserve.SUCCESS:
            return outer_code(reserve) or MD.MANAGE_DATA_LOW_RESERVE
        ctx.view.create(DataEntry(ctx.source, name, op.data_value.data_value, sponsor))
        return MD.MANAGE_DATA_SUCCESS
    if entry is None:
        return MD.MANAGE_DATA_NAME_NOT_FOUND
    remove_subentry(ctx.view, account, entry.sponsor)
    ctx.view.erase(data_key(ctx.source, name))
    return MD.MANAGE_DATA_SUCCESS


# -- bump_sequence -----------------------------------------------------------------------
def check_bump_sequence(body: xdr.OperationBody, source: str) -> IntEnum | None:
    op = body.bump_sequence_op
    assert op is not None
    return BS.BUMP_SEQUENCE_BAD_SEQ if op.bump_to.sequence_number.int64 < 0 else None


def apply_bump_sequence(body: xdr.OperationBody, ctx: OpContext) -> IntEnum:
    op = body.bump_sequence_op
    assert op is not None
    account = ctx.source_account()
    account.seq_num = max(account.seq_num, op.bump_to.sequence_number.int64)
    account.seq_ledger, account.seq_time = ctx.ledger.seq, ctx.ledger.close_time
    return BS.BUMP_SEQUENCE_SUCCESS
