"""Result codes as data: the XDR codes the rules return, and the names Horizon gives them.

The rules return real ``stellar_sdk.xdr`` enum members, so a ``result_xdr`` built from them
decodes with any Stellar library; Horizon's ``result_codes`` strings are looked up here
(from Horizon's ``codes`` package), never derived from Python names.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, Final

from stellar_sdk import xdr

TX = xdr.TransactionResultCode
OP = xdr.OperationResultCode
T = xdr.OperationType

TX_NAMES: Final[dict[xdr.TransactionResultCode, str]] = {
    TX.txFEE_BUMP_INNER_SUCCESS: "tx_fee_bump_inner_success",
    TX.txFEE_BUMP_INNER_FAILED: "tx_fee_bump_inner_failed",
    TX.txNOT_SUPPORTED: "tx_not_supported",
    TX.txSUCCESS: "tx_success",
    TX.txFAILED: "tx_failed",
    TX.txTOO_EARLY: "tx_too_early",
    TX.txTOO_LATE: "tx_too_late",
    TX.txMISSING_OPERATION: "tx_missing_operation",
    TX.txBAD_SEQ: "tx_bad_seq",
    TX.txBAD_AUTH: "tx_bad_auth",
    TX.txINSUFFICIENT_BALANCE: "tx_insufficient_balance",
    TX.txNO_ACCOUNT: "tx_no_source_account",
    TX.txINSUFFICIENT_FEE: "tx_insufficient_fee",
    TX.txBAD_AUTH_EXTRA: "tx_bad_auth_extra",
    TX.txINTERNAL_ERROR: "tx_internal_error",
    TX.txBAD_SPONSORSHIP: "tx_bad_sponsorship",
    TX.txBAD_MIN_SEQ_AGE_OR_GAP: "tx_bad_minseq_age_or_gap",
    TX.txMALFORMED: "tx_malformed",
}

OP_NAMES: Final[dict[xdr.OperationResultCode, str]] = {
    OP.opINNER: "op_inner",
    OP.opBAD_AUTH: "op_bad_auth",
    OP.opNO_ACCOUNT: "op_no_source_account",
    OP.opNOT_SUPPORTED: "op_not_supported",
    OP.opTOO_MANY_SUBENTRIES: "op_too_many_subentries",
    OP.opEXCEEDED_WORK_LIMIT: "op_exceeded_work_limit",
    OP.opTOO_MANY_SPONSORING: "op_too_many_sponsoring",
}

_S, _M, _U, _LR = "op_success", "op_malformed", "op_underfunded", "op_low_reserve"
CA = xdr.CreateAccountResultCode
PAY = xdr.PaymentResultCode
SO = xdr.SetOptionsResultCode
CT = xdr.ChangeTrustResultCode
AT = xdr.AllowTrustResultCode
MD = xdr.ManageDataResultCode
BS = xdr.BumpSequenceResultCode
BSP = xdr.BeginSponsoringFutureReservesResultCode
ESP = xdr.EndSponsoringFutureReservesResultCode
STF = xdr.SetTrustLineFlagsResultCode

_INNER: Final[tuple[tuple[IntEnum, str], ...]] = (
    (CA.CREATE_ACCOUNT_SUCCESS, _S), (CA.CREATE_ACCOUNT_MALFORMED, _M), (CA.CREATE_ACCOUNT_UNDERFUNDED, _U),
    (CA.CREATE_ACCOUNT_LOW_RESERVE, _LR), (CA.CREATE_ACCOUNT_ALREADY_EXIST, "op_already_exists"),
    (PAY.PAYMENT_SUCCESS, _S), (PAY.PAYMENT_MALFORMED, _M), (PAY.PAYMENT_UNDERFUNDED, _U),
    (PAY.PAYMENT_SRC_NO_TRUST, "op_src_no_trust"), (PAY.PAYMENT_SRC_NOT_AUTHORIZED, "op_src_not_authorized"),
    (PAY.PAYMENT_NO_DESTINATION, "op_no_destination"), (PAY.PAYMENT_NO_TRUST, "op_no_trust"),
    (PAY.PAYMENT_NOT_AUTHORIZED, "op_not_authorized"), (PAY.PAYMENT_LINE_FULL, "op_line_full"),
    (PAY.PAYMENT_NO_ISSUER, "op_no_issuer"),
    (SO.SET_OPTIONS_SUCCESS, _S), (SO.SET_OPTIONS_LOW_RESERVE, _LR),
    (SO.SET_OPTIONS_TOO_MANY_SIGNERS, "op_too_many_signers"),
    (SO.SET_OPTIONS_BAD_FLAGS, "op_bad_flags"), (SO.SET_OPTIONS_INVALID_INFLATION, "op_invalid_inflation"),
    (SO.SET_OPTIONS_CANT_CHANGE, "op_cant_change"), (SO.SET_OPTIONS_UNKNOWN_FLAG, "op_unknown_flag"),
    (SO.SET_OPTIONS_THRESHOLD_OUT_OF_RANGE, "op_threshold_out_of_range"),
    (SO.SET_OPTIONS_BAD_SIGNER, "op_bad_signer"),
    (SO.SET_OPTIONS_INVALID_HOME_DOMAIN, "op_invalid_home_domain"),
    (SO.SET_OPTIONS_AUTH_REVOCABLE_REQUIRED, "op_auth_revocable_required"),
    (CT.CHANGE_TRUST_SUCCESS, _S), (CT.CHANGE_TRUST_MALFORMED, _M), (CT.CHANGE_TRUST_NO_ISSUER, "op_no_issuer"),
    (CT.CHANGE_TRUST_INVALID_LIMIT, "op_invalid_limit"), (CT.CHANGE_TRUST_LOW_RESERVE, _LR),
    (CT.CHANGE_TRUST_SELF_NOT_ALLOWED, "op_self_not_allowed"),
    (AT.ALLOW_TRUST_SUCCESS, _S), (AT.ALLOW_TRUST_MALFORMED, _M), (AT.ALLOW_TRUST_NO_TRUST_LINE, "op_no_trustline"),
    (AT.ALLOW_TRUST_TRUST_NOT_REQUIRED, "op_not_required"), (AT.ALLOW_TRUST_CANT_REVOKE, "op_cant_revoke"),
    (AT.ALLOW_TRUST_SELF_NOT_ALLOWED, "op_self_not_allowed"), (AT.ALLOW_TRUST_LOW_RESERVE, _LR),
    (MD.MANAGE_DATA_SUCCESS, _S), (MD.MANAGE_DATA_NOT_SUPPORTED_YET, "op_not_supported_yet"),
    (MD.MANAGE_DATA_NAME_NOT_FOUND, "op_data_name_not_found"), (MD.MANAGE_DATA_LOW_RESERVE, _LR),
    (MD.MANAGE_DATA_INVALID_NAME, "op_data_invalid_name"),
    (BS.BUMP_SEQUENCE_SUCCESS, _S), (BS.BUMP_SEQUENCE_BAD_SEQ, "op_bad_seq"),
    (BSP.BEGIN_SPONSORING_FUTURE_RESERVES_SUCCESS, _S), (BSP.BEGIN_SPONSORING_FUTURE_RESERVES_MALFORMED, _M),
    (BSP.BEGIN_SPONSORING_FUTURE_RESERVES_ALREADY_SPONSORED, "op_already_sponsored"),
    (BSP.BEGIN_SPONSORING_FUTURE_RESERVES_RECURSIVE, "op_recursive"),
    (ESP.END_SPONSORING_FUTURE_RESERVES_SUCCESS, _S),
    (ESP.END_SPONSORING_FUTURE_RESERVES_NOT_SPONSORED, "op_not_sponsored"),
    (STF.SET_TRUST_LINE_FLAGS_SUCCESS, _S), (STF.SET_TRUST_LINE_FLAGS_MALFORMED, _M),
    (STF.SET_TRUST_LINE_FLAGS_NO_TRUST_LINE, "op_no_trustline"),
    (STF.SET_TRUST_LINE_FLAGS_CANT_REVOKE, "op_cant_revoke"),
    (STF.SET_TRUST_LINE_FLAGS_INVALID_STATE, "op_invalid_state"), (STF.SET_TRUST_LINE_FLAGS_LOW_RESERVE, _LR),
)

# IntEnum members of different enums compare equal when their values do (PAYMENT_NO_TRUST and
# CREATE_ACCOUNT_ALREADY_EXIST are both -4), so the names are keyed by (enum class, value).
INNER_NAMES: Final[dict[tuple[type[IntEnum], int], str]] = {(type(code), code.value): name
                                                            for code, name in _INNER}
assert len(INNER_NAMES) == len(_INNER), "every code above keeps its own name"

# (result union arm, result class, success code) per supported operation type.
_ARMS: Final[dict[xdr.OperationType, tuple[str, Any, IntEnum]]] = {
    T.CREATE_ACCOUNT: ("create_account_result", xdr.CreateAccountResult, CA.CREATE_ACCOUNT_SUCCESS),
    T.PAYMENT: ("payment_result", xdr.PaymentResult, PAY.PAYMENT_SUCCESS),
    T.SET_OPTIONS: ("set_options_result", xdr.SetOptionsResult, SO.SET_OPTIONS_SUCCESS),
    T.CHANGE_TRUST: ("change_trust_result", xdr.ChangeTrustResult, CT.CHANGE_TRUST_SUCCESS),
    T.ALLOW_TRUST: ("allow_trust_result", xdr.AllowTrustResult, AT.ALLOW_TRUST_SUCCESS),
    T.MANAGE_DATA: ("manage_data_result", xdr.ManageDataResult, MD.MANAGE_DATA_SUCCESS),
    T.BUMP_SEQUENCE: ("bump_seq_result", xdr.BumpSequenceResult, BS.BUMP_SEQUENCE_SUCCESS),
    T.BEGIN_SPONSORING_FUTURE_RESERVES: ("begin_sponsoring_future_reserves_result",
                                         xdr.BeginSponsoringFutureReservesResult,
                                         BSP.BEGIN_SPONSORING_FUTURE_RESERVES_SUCCESS),
    T.END_SPONSORING_FUTURE_RESERVES: ("end_sponsoring_future_reserves_result",
                                       xdr.EndSponsoringFutureReservesResult,
                                       ESP.END_SPONSORING_FUTURE_RESERVES_SUCCESS),
    T.SET_TRUST_LINE_FLAGS: ("set_trust_line_flags_result", xdr.SetTrustLineFlagsResult,
                             STF.SET_TRUST_LINE_FLAGS_SUCCESS),
}

OpCode = IntEnum
"""What an operation rule returns: an inner code (e.g. PAYMENT_NO_TRUST) or an outer one (opNO_ACCOUNT)."""


def supported(op_type: xdr.OperationType) -> bool:
    return op_type in _ARMS


def success_code(op_type: xdr.OperationType) -> IntEnum:
    return _ARMS[op_type][2]


def is_success(code: IntEnum) -> bool:
    return not isinstance(code, xdr.OperationResultCode) and code.value == 0


def op_result(op_type: xdr.OperationType, code: IntEnum) -> xdr.OperationResult:
    """The XDR OperationResult for a rule's code."""
    if isinstance(code, xdr.OperationResultCode):
        return xdr.OperationResult(code)
    arm, cls, _ = _ARMS[op_type]
    tr = xdr.OperationResultTr(op_type, **{arm: cls(code)})
    return xdr.OperationResult(OP.opINNER, tr)


def op_result_name(result: xdr.OperationResult) -> str:
    if result.code != OP.opINNER:
        return OP_NAMES[result.code]
    tr = result.tr
    assert tr is not None
    arm = _ARMS.get(tr.type)
    if arm is None:  # an operation type this ledger never applies
        return "op_success"
    code: IntEnum = getattr(tr, arm[0]).code
    return INNER_NAMES[(type(code), code.value)]


def result_codes(result: xdr.TransactionResult) -> dict[str, Any]:
    """Horizon's ``extras.result_codes`` for a transaction result."""
    r = result.result
    if r.code in (TX.txFEE_BUMP_INNER_SUCCESS, TX.txFEE_BUMP_INNER_FAILED):
        assert r.inner_result_pair is not None
        inner = r.inner_result_pair.result.result
        codes: dict[str, Any] = {"transaction": TX_NAMES[r.code], "inner_transaction": TX_NAMES[inner.code]}
        if inner.code in (TX.txSUCCESS, TX.txFAILED):
            codes["operations"] = [op_result_name(o) for o in inner.results or []]
        return codes
    codes = {"transaction": TX_NAMES[r.code]}
    if r.code in (TX.txSUCCESS, TX.txFAILED):
        codes["operations"] = [op_result_name(o) for o in r.results or []]
    return codes
