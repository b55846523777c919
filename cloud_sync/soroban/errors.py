"""The contract's error names, and how to read them from what Soroban RPC answers.

A contract error reaches a client two ways: a failed simulation's ``error`` text
(``HostError: Error(Contract, #13) …``), and a FAILED transaction's diagnostic event whose
topics are ``[Symbol("error"), Error(Contract, #n)]``. Either way only the code is reliable;
its name comes from the contract's ``SharingError`` enum, listed here (seed 001's seven names,
then the deployed contract's own: ``cloud_sync.soroban_rpc.contract.SharingError``, which a test
keeps equal to this table).
"""

from __future__ import annotations

import re
from typing import Final

from stellar_sdk import xdr

CONTRACT_ERRORS: Final[dict[int, str]] = {
    1: "NotInitialized", 2: "ProsumerNotRegistered", 3: "AgreementNotFound", 4: "DeliveryDeadlinePassed",
    5: "TransactionAlreadySettled", 6: "SelfSharingNotAllowed", 7: "PaymentFailed", 8: "AlreadyInitialized",
    9: "ProsumerAlreadyRegistered", 10: "InvalidAmount", 11: "InvalidDeadline", 12: "AgreementNotActive",
    13: "ExcessiveDelivery", 14: "NotAuthorized", 15: "TransactionNotFound", 16: "TransactionDisputed",
    17: "NotDisputed", 18: "DeadlineNotPassed", 19: "AuthMissing",
}
AUTH_REFUSED: Final = "AuthRefused"
"""Our name for ``Error(Auth, …)``: the provider's authorisation entry did not verify."""
_SIM_CODE = re.compile(r"Error\(Contract, #(\d+)\)")


def name_of(code: int) -> str:
    return CONTRACT_ERRORS.get(code, f"ContractError{code}")


def from_simulation(error: str) -> str | None:
    """The contract error's name in a failed simulation's text, or None (not a contract error)."""
    found = _SIM_CODE.search(error)
    return name_of(int(found.group(1))) if found else None


def from_events(events_xdr: list[str] | None) -> tuple[str, str]:
    """(error name, detail) from a FAILED transaction's diagnostic events."""
    for raw in events_xdr or []:
        try:
            event = xdr.DiagnosticEvent.from_xdr(raw)
        except (ValueError, TypeError, IndexError):
            continue
        body = event.event.body.v0
        if body is None or len(body.topics) < 2 or body.topics[1].error is None:
            continue
        err = body.topics[1].error
        detail = body.data.str.sc_string.decode("utf-8", "replace") if body.data.str is not None else ""
        if err.type == xdr.SCErrorType.SCE_CONTRACT and err.contract_code is not None:
            return name_of(err.contract_code.uint32), detail
        if err.type == xdr.SCErrorType.SCE_AUTH:
            return AUTH_REFUSED, detail
        return f"Host{err.type.name}", detail
    return "Failed", "the transaction failed without a diagnostic event"
