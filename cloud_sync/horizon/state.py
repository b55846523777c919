"""Ledger state as seen by the rules: a reader, and nested overlays that commit or vanish.

stellar-core applies every operation inside a nested ``LedgerTxn`` that is committed into
the transaction's when the operation succeeds and dropped when it fails; the transaction's is
committed into the ledger's only if every operation succeeded. :class:`Overlay` is that
nesting: the rules load entries from it, mutate the copies it hands out, create and delete
entries, and the caller commits or drops it. Nothing below an overlay is ever mutated.

Sponsorships opened by ``begin_sponsoring_future_reserves`` live in the overlay too, so a
failed operation's sponsorship disappears with it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from cloud_sync.horizon.entries import (
    Account,
    Asset,
    DataEntry,
    Entry,
    Key,
    TrustLine,
    account_key,
    data_key,
    key_of,
    trustline_key,
)


class EntryReader(Protocol):
    """Read access to ledger entries. Returned objects are read-only to the caller."""

    def get_entry(self, key: Key) -> Entry | None: ...


class MemoryState:
    """Entries in a dict: the base state of pure tests, and of nothing else."""

    def __init__(self, entries: Iterable[Entry] = ()) -> None:
        self._entries: dict[Key, Entry] = {key_of(e): e for e in entries}

    def get_entry(self, key: Key) -> Entry | None:
        return self._entries.get(key)

    def apply(self, changes: Mapping[Key, Entry | None]) -> None:
        for key, entry in changes.items():
            if entry is None:
                self._entries.pop(key, None)
            else:
                self._entries[key] = entry

    def entries(self) -> list[Entry]:
        return list(self._entries.values())


class Overlay:
    """Copy-on-read changes over a parent reader or overlay."""

    def __init__(self, parent: EntryReader | Overlay) -> None:
        self._parent = parent
        self._entries: dict[Key, Entry | None] = {}
        self._sponsorships: dict[str, str] | None = None  # None: the parent's, unchanged
        # The outermost overlay remembers what it read from the reader: a 100-payment batch asks
        # for the same source account a hundred times, and the reader does not change meanwhile.
        self._reads: dict[Key, Entry | None] = {}

    # -- reading -------------------------------------------------------------------------
    def _peek(self, key: Key) -> Entry | None:
        """The current entry without taking ownership (for a child to copy)."""
        if key in self._entries:
            return self._entries[key]
        if isinstance(self._parent, Overlay):
            return self._parent._peek(key)
        if key not in self._reads:
            self._reads[key] = self._parent.get_entry(key)
        return self._reads[key]

    def get_entry(self, key: Key) -> Entry | None:
        return self._peek(key)

    def _load(self, key: Key) -> Entry | None:
        if key in self._entries:
            return self._entries[key]
        base = self._parent._peek(key) if isinstance(self._parent, Overlay) else self._peek(key)
        if base is None:
            return None
        mine = base.copy()
        self._entries[key] = mine
        return mine

    def account(self, account_id: str) -> Account | None:
        """The account, as a copy this overlay owns: mutate it freely."""
        entry = self._load(account_key(account_id))
        assert entry is None or isinstance(entry, Account)
        return entry

    def trustline(self, account_id: str, asset: Asset) -> TrustLine | None:
        entry = self._load(trustline_key(account_id, asset))
        assert entry is None or isinstance(entry, TrustLine)
        return entry

    def data(self, account_id: str, name: str) -> DataEntry | None:
        entry = self._load(data_key(account_id, name))
        assert entry is None or isinstance(entry, DataEntry)
        return entry

    def exists(self, key: Key) -> bool:
        return self._peek(key) is not None

    # -- writing -------------------------------------------------------------------------
    def create(self, entry: Entry) -> None:
        key = key_of(entry)
        if self._peek(key) is not None:
            raise ValueError(f"{key} already exists")
        self._entries[key] = entry

    def erase(self, key: Key) -> None:
        if self._peek(key) is None:
            raise ValueError(f"{key} does not exist")
        self._entries[key] = None

    # -- sponsorships (begin/end_sponsoring_future_reserves) ---------------------------
    def _effective_sponsorships(self) -> dict[str, str]:
        if self._sponsorships is not None:
            return self._sponsorships
        if isinstance(self._parent, Overlay):
            return self._parent._effective_sponsorships()
        return {}

    def sponsor_of(self, sponsored: str) -> str | None:
        """Who pays the reserves of ``sponsored`` right now, if anyone."""
        return self._effective_sponsorships().get(sponsored)

    def is_sponsoring(self, account_id: str) -> bool:
        return account_id in self._effective_sponsorships().values()

    def begin_sponsoring(self, sponsored: str, sponsor: str) -> None:
        self._sponsorships = {**self._effective_sponsorships(), sponsored: sponsor}

    def end_sponsoring(self, sponsored: str) -> None:
        current = dict(self._effective_sponsorships())
        del current[sponsored]
        self._sponsorships = current

    def has_sponsorships(self) -> bool:
        return bool(self._effective_sponsorships())

    # -- nesting -------------------------------------------------------------------------
    def child(self) -> Overlay:
        return Overlay(self)

    def commit(self) -> None:
        """Merge this overlay's changes into its parent overlay."""
        if not isinstance(self._parent, Overlay):
            raise TypeError("only a nested overlay can be committed; persist changes() instead")
        self._parent._entries.update(self._entries)
        if self._sponsorships is not None:
            self._parent._sponsorships = self._sponsorships
        self._entries = {}
        self._sponsorships = None

    def changes(self) -> dict[Key, Entry | None]:
        """Every entry this overlay created, touched or deleted (touched may be unchanged)."""
        return dict(self._entries)
