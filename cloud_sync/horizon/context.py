"""What a rule knows besides the entries: the ledger it applies in, and whose operation it is."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from cloud_sync.horizon.entries import Account
from cloud_sync.horizon.state import Overlay


@dataclass(frozen=True, slots=True)
class LedgerContext:
    """The ledger a transaction is applied in (the open one)."""

    network_id: bytes
    seq: int
    close_time: int
    """The ledger's close time (Unix seconds): what time bounds are checked against."""
    base_fee: int
    base_reserve: int


@dataclass(frozen=True, slots=True)
class OpContext:
    view: Overlay
    ledger: LedgerContext
    source: str
    """The operation's source account (its own, or the transaction's)."""

    def source_account(self) -> Account:
        account = self.view.account(self.source)
        assert account is not None, "apply_operation checks the source account exists"
        return account


class Threshold(IntEnum):
    LOW = 0
    MEDIUM = 1
    HIGH = 2


def needed_weight(account: Account, level: Threshold) -> int:
    return (account.low_threshold, account.med_threshold, account.high_threshold)[level]
