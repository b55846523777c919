"""Which operations this ledger applies, at which signing threshold, by which rules.

Every other operation type (offers, path payments, claimable balances, account merge,
clawback, revoke sponsorship, liquidity pools, Soroban) is refused with ``op_not_supported``
before the transaction is accepted: no fee is charged for it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from stellar_sdk import xdr

from cloud_sync.horizon import ops_accounts as acc
from cloud_sync.horizon import ops_trust as trust
from cloud_sync.horizon import sponsorship as sp
from cloud_sync.horizon.context import OpContext, Threshold

T = xdr.OperationType


def _fixed(level: Threshold) -> Callable[[xdr.OperationBody], Threshold]:
    return lambda body: level


@dataclass(frozen=True, slots=True)
class OpRule:
    threshold: Callable[[xdr.OperationBody], Threshold]
    check: Callable[[xdr.OperationBody, str], IntEnum | None]
    """Judged before acceptance, from the operation and its source id alone (None: fine)."""
    apply: Callable[[xdr.OperationBody, OpContext], IntEnum]


RULES: Final[dict[xdr.OperationType, OpRule]] = {
    T.CREATE_ACCOUNT: OpRule(_fixed(Threshold.MEDIUM), acc.check_create_account, acc.apply_create_account),
    T.PAYMENT: OpRule(_fixed(Threshold.MEDIUM), trust.check_payment, trust.apply_payment),
    T.SET_OPTIONS: OpRule(acc.threshold_set_options, acc.check_set_options, acc.apply_set_options),
    T.CHANGE_TRUST: OpRule(_fixed(Threshold.MEDIUM), trust.check_change_trust, trust.apply_change_trust),
    T.ALLOW_TRUST: OpRule(_fixed(Threshold.LOW), trust.check_allow_trust, trust.apply_allow_trust),
    T.MANAGE_DATA: OpRule(_fixed(Threshold.MEDIUM), acc.check_manage_data, acc.apply_manage_data),
    T.BUMP_SEQUENCE: OpRule(_fixed(Threshold.LOW), acc.check_bump_sequence, acc.apply_bump_sequence),
    T.BEGIN_SPONSORING_FUTURE_RESERVES: OpRule(_fixed(Threshold.MEDIUM), sp.check_begin, sp.apply_begin),
    T.END_SPONSORING_FUTURE_RESERVES: OpRule(_fixed(Threshold.MEDIUM), sp.check_end, sp.apply_end),
    T.SET_TRUST_LINE_FLAGS: OpRule(_fixed(Threshold.LOW), trust.check_set_trust_line_flags,
                                   trust.apply_set_trust_line_flags),
}
