"""Errors of the local ledger, in the gateway's tree (so ``meter-gateway`` reports them cleanly).

    GatewayError
    └── LocalLedgerError        the local ledger cannot run as asked
        ├── LedgerStoreError        its SQLite file cannot be opened, is damaged, or a write failed
        └── FriendbotRefused        friendbot will not fund this address (bad address, already funded)
"""

from __future__ import annotations

from gateway.errors import GatewayError


class LocalLedgerError(GatewayError):
    """The local Horizon-compatible ledger cannot do what was asked."""


class LedgerStoreError(LocalLedgerError):
    """The ledger's SQLite file cannot be opened, is damaged, or a write did not happen."""


class FriendbotRefused(LocalLedgerError):
    """Friendbot funds only new, valid ``G…`` addresses."""
