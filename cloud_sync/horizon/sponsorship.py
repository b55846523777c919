"""Reserves, and who pays them: sponsorship (CAP-33) and the two operations that open and close it.

Between ``begin_sponsoring_future_reserves(A)`` (source S) and A's
``end_sponsoring_future_reserves``, every entry A gains — its account itself, a trustline, a
signer, a data entry — is paid for by S: S's ``num_sponsoring`` grows and so does its minimum
balance, A's ``num_sponsored`` grows by the same and its minimum balance stays. Without a
sponsor the owner must have the reserve available. A transaction that leaves a sponsorship
open fails with ``tx_bad_sponsorship``.
"""

from __future__ import annotations

from enum import Enum, IntEnum

from stellar_sdk import xdr

from cloud_sync.horizon.codes import BSP, ESP
from cloud_sync.horizon.context import LedgerContext, OpContext
from cloud_sync.horizon.entries import MAX_SUBENTRIES, UINT32_MAX, Account, available_balance, min_balance
from cloud_sync.horizon.envelope import account_id_str
from cloud_sync.horizon.state import Overlay


class Reserve(Enum):
    SUCCESS = "success"
    LOW_RESERVE = "low_reserve"
    TOO_MANY_SUBENTRIES = "too_many_subentries"
    TOO_MANY_SPONSORING = "too_many_sponsoring"


def create_subentry(view: Overlay, ledger: LedgerContext, owner: Account) -> tuple[Reserve, str | None]:
    """Account for one new subentry of ``owner``; returns its sponsor (to record on the entry)."""
    if owner.num_sub_entries >= MAX_SUBENTRIES:
        return Reserve.TOO_MANY_SUBENTRIES, None
    sponsor_id = view.sponsor_of(owner.account_id)
    if sponsor_id is None:
        if available_balance(owner, ledger.base_reserve) < ledger.base_reserve:
            return Reserve.LOW_RESERVE, None
        owner.num_sub_entries += 1
        return Reserve.SUCCESS, None
    sponsor = view.account(sponsor_id)
    assert sponsor is not None, "a sponsorship's sponsor was the source of begin_sponsoring"
    if sponsor.num_sponsoring >= UINT32_MAX:
        return Reserve.TOO_MANY_SPONSORING, None
    if available_balance(sponsor, ledger.base_reserve) < ledger.base_reserve:
        return Reserve.LOW_RESERVE, None
    sponsor.num_sponsoring += 1
    owner.num_sponsored += 1
    owner.num_sub_entries += 1
    return Reserve.SUCCESS, sponsor_id


def remove_subentry(view: Overlay, owner: Account, sponsor_id: str | None) -> None:
    """Release the reserve of a removed subentry, back to whoever paid it."""
    if sponsor_id is not None:
        sponsor = owner if sponsor_id == owner.account_id else view.account(sponsor_id)
        assert sponsor is not None
        sponsor.num_sponsoring -= 1
        owner.num_sponsored -= 1
    owner.num_sub_entries -= 1


def create_account_entry(view: Overlay, ledger: LedgerContext, new: Account) -> Reserve:
    """Reserve for a new account: 2 base reserves, from its sponsor or from its own starting balance."""
    sponsor_id = view.sponsor_of(new.account_id)
    if sponsor_id is None:
        return Reserve.SUCCESS if new.balance >= min_balance(new, ledger.base_reserve) else Reserve.LOW_RESERVE
    sponsor = view.account(sponsor_id)
    assert sponsor is not None
    if sponsor.num_sponsoring > UINT32_MAX - 2:
        return Reserve.TOO_MANY_SPONSORING
    if available_balance(sponsor, ledger.base_reserve) < 2 * ledger.base_reserve:
        return Reserve.LOW_RESERVE
    sponsor.num_sponsoring += 2
    new.num_sponsored = 2
    new.sponsor = sponsor_id
    return Reserve.SUCCESS


def outer_code(result: Reserve) -> xdr.OperationResultCode | None:
    """The operation-level code for a reserve failure that has no per-operation code."""
    if result is Reserve.TOO_MANY_SUBENTRIES:
        return xdr.OperationResultCode.opTOO_MANY_SUBENTRIES
    if result is Reserve.TOO_MANY_SPONSORING:
        return xdr.OperationResultCode.opTOO_MANY_SPONSORING
    return None


# -- begin_sponsoring_future_reserves / end_sponsoring_future_reserves ---------------------
def check_begin(body: xdr.OperationBody, source: str) -> IntEnum | None:
    op = body.begin_sponsoring_future_reserves_op
    assert op is not None
    if account_id_str(op.sponsored_id) == source:
        return BSP.BEGIN_SPONSORING_FUTURE_RESERVES_MALFORMED
    return None


def apply_begin(body: xdr.OperationBody, ctx: OpContext) -> IntEnum:
    op = body.begin_sponsoring_future_reserves_op
    assert op is not None
    sponsored = account_id_str(op.sponsored_id)
    if ctx.view.sponsor_of(sponsored) is not None:
        return BSP.BEGIN_SPONSORING_FUTURE_RESERVES_ALREADY_SPONSORED
    if ctx.view.sponsor_of(ctx.source) is not None or ctx.view.is_sponsoring(sponsored):
        return BSP.BEGIN_SPONSORING_FUTURE_RESERVES_RECURSIVE
    ctx.view.begin_sponsoring(sponsored, ctx.source)
    return BSP.BEGIN_SPONSORING_FUTURE_RESERVES_SUCCESS


def check_end(body: xdr.OperationBody, source: str) -> IntEnum | None:
    return None


def apply_end(body: xdr.OperationBody, ctx: OpContext) -> IntEnum:
    if ctx.view.sponsor_of(ctx.source) is None:
        return ESP.END_SPONSORING_FUTURE_RESERVES_NOT_SPONSORED
    ctx.view.end_sponsoring(ctx.source)
    return ESP.END_SPONSORING_FUTURE_RESERVES_SUCCESS
