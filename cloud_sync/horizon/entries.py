"""Ledger entries of the local network: plain data, every amount in integer stroops.

These mirror the network's ledger entries (AccountEntry with its signers, TrustLineEntry,
DataEntry) closely enough for the rules to read like stellar-core's, without the XDR
wrappers: the rules in ``ops_*.py`` work on these, the store persists them, ``responses.py``
renders them in Horizon's shapes. Liabilities are always zero here (no offers or pools).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from typing import Final

from stellar_sdk import StrKey

STROOPS_PER_XLM: Final = 10_000_000
INT64_MAX: Final = 2**63 - 1
UINT32_MAX: Final = 2**32 - 1
MAX_WEIGHT: Final = 255
MAX_SIGNERS: Final = 20
"""Signers per account (stellar-core MAX_SIGNERS)."""
MAX_SUBENTRIES: Final = 1000
"""Subentries per account (stellar-core ACCOUNT_SUBENTRY_LIMIT)."""
MAX_OPS_PER_TX: Final = 100

# Account flags (AccountFlags in the XDR).
AUTH_REQUIRED: Final = 0x1
AUTH_REVOCABLE: Final = 0x2
AUTH_IMMUTABLE: Final = 0x4
AUTH_CLAWBACK_ENABLED: Final = 0x8
ALL_ACCOUNT_FLAGS: Final = AUTH_REQUIRED | AUTH_REVOCABLE | AUTH_IMMUTABLE | AUTH_CLAWBACK_ENABLED

# Trustline flags (TrustLineFlags in the XDR).
TL_AUTHORIZED: Final = 0x1
TL_AUTHORIZED_TO_MAINTAIN_LIABILITIES: Final = 0x2
TL_CLAWBACK_ENABLED: Final = 0x4
ALL_TRUSTLINE_FLAGS: Final = TL_AUTHORIZED | TL_AUTHORIZED_TO_MAINTAIN_LIABILITIES | TL_CLAWBACK_ENABLED


@dataclass(frozen=True, slots=True, order=True)
class Asset:
    """A credit asset; the native asset (XLM) is written ``None`` wherever an asset may be native."""

    code: str
    issuer: str

    @property
    def asset_type(self) -> str:
        return "credit_alphanum4" if len(self.code) <= 4 else "credit_alphanum12"

    @property
    def key(self) -> str:
        return f"{self.code}:{self.issuer}"

    @classmethod
    def from_key(cls, key: str) -> Asset:
        code, issuer = key.split(":", 1)
        return cls(code, issuer)


SIGNER_TYPE_ORDER: Final = {"G": 0, "T": 1, "X": 2}
"""Signer keys by strkey prefix: ed25519, pre-auth transaction hash, sha256 hash(x), in XDR order."""


@dataclass(slots=True)
class Signer:
    key: str
    """Strkey: ``G…`` ed25519 public key, ``T…`` pre-authorised transaction, ``X…`` sha256 hash."""
    weight: int
    sponsor: str | None = None

    @property
    def raw(self) -> bytes:
        return signer_raw(self.key)

    def sort_key(self) -> tuple[int, bytes]:
        return SIGNER_TYPE_ORDER[self.key[0]], self.raw


@functools.lru_cache(maxsize=4096)
def signer_raw(key: str) -> bytes:
    """Raw key bytes of a signer strkey (cached: every signature check of a 100-payment batch needs them)."""
    if key.startswith("G"):
        return StrKey.decode_ed25519_public_key(key)
    if key.startswith("T"):
        return StrKey.decode_pre_auth_tx(key)
    if key.startswith("X"):
        return StrKey.decode_sha256_hash(key)
    raise ValueError(f"unsupported signer key {key[:1]}…")


@dataclass(slots=True)
class Account:
    account_id: str
    balance: int
    seq_num: int
    num_sub_entries: int = 0
    flags: int = 0
    home_domain: str = ""
    inflation_dest: str | None = None
    master_weight: int = 1
    low_threshold: int = 0
    med_threshold: int = 0
    high_threshold: int = 0
    signers: list[Signer] = field(default_factory=list)
    num_sponsored: int = 0
    num_sponsoring: int = 0
    sponsor: str | None = None
    seq_ledger: int = 0
    seq_time: int = 0
    last_modified_ledger: int = 0

    def copy(self) -> Account:
        return replace(self, signers=[replace(s) for s in self.signers])

    def signer(self, key: str) -> Signer | None:
        return next((s for s in self.signers if s.key == key), None)


@dataclass(slots=True)
class TrustLine:
    account_id: str
    asset: Asset
    balance: int
    limit: int
    flags: int
    sponsor: str | None = None
    last_modified_ledger: int = 0

    def copy(self) -> TrustLine:
        return replace(self)

    @property
    def authorized(self) -> bool:
        return bool(self.flags & TL_AUTHORIZED)

    @property
    def authorized_to_maintain_liabilities(self) -> bool:
        return bool(self.flags & (TL_AUTHORIZED | TL_AUTHORIZED_TO_MAINTAIN_LIABILITIES))


@dataclass(slots=True)
class DataEntry:
    account_id: str
    name: str
    value: bytes
    sponsor: str | None = None
    last_modified_ledger: int = 0

    def copy(self) -> DataEntry:
        return replace(self)


Entry = Account | TrustLine | DataEntry
Key = tuple[str, str, str]
"""("account", id, "") · ("trustline", id, asset key) · ("data", id, name)."""


def account_key(account_id: str) -> Key:
    return ("account", account_id, "")


def trustline_key(account_id: str, asset: Asset) -> Key:
    return ("trustline", account_id, asset.key)


def data_key(account_id: str, name: str) -> Key:
    return ("data", account_id, name)


def key_of(entry: Entry) -> Key:
    if isinstance(entry, Account):
        return account_key(entry.account_id)
    if isinstance(entry, TrustLine):
        return trustline_key(entry.account_id, entry.asset)
    return data_key(entry.account_id, entry.name)


def min_balance(account: Account, base_reserve: int) -> int:
    """(2 + subentries + sponsoring − sponsored) × base reserve, the network's minimum balance."""
    return (2 + account.num_sub_entries + account.num_sponsoring - account.num_sponsored) * base_reserve


def available_balance(account: Account, base_reserve: int) -> int:
    """What the account may spend: its balance above the minimum (no selling liabilities here)."""
    return account.balance - min_balance(account, base_reserve)


def format_amount(stroops: int) -> str:
    """Stroops as Horizon writes amounts: always seven decimals ("10.0000000")."""
    sign = "-" if stroops < 0 else ""
    whole, frac = divmod(abs(stroops), STROOPS_PER_XLM)
    return f"{sign}{whole}.{frac:07d}"
