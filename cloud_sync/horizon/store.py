"""The local ledger's SQLite file: entries, history, ledger rows; one durable commit per transaction.

A transaction's changed entries, its history records and its ledger's counters are written in
one SQLite transaction (WAL, ``synchronous=FULL``) before the submitter gets an answer, so an
answer of "applied" survives a SIGKILL or a power cut of the ledger process.

Only ledgers that something happened in (the genesis, a ledger with transactions, an upgrade)
have a row; the empty ones in between are implied by the clock (see ``ledger.py``).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cloud_sync.horizon.entries import (
    Account,
    Asset,
    DataEntry,
    Entry,
    Key,
    Signer,
    TrustLine,
)
from cloud_sync.horizon.errors import LedgerStoreError
from cloud_sync.horizon.history import TxRecord

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 10.0
"""Only this process writes; the wait covers a concurrent read-only inspection (sqlite3 CLI)."""

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE ledgers (
    sequence INTEGER PRIMARY KEY, successful_tx INTEGER NOT NULL, failed_tx INTEGER NOT NULL,
    operation_count INTEGER NOT NULL, tx_set_operation_count INTEGER NOT NULL,
    fee_pool INTEGER NOT NULL, total_coins INTEGER NOT NULL, base_fee INTEGER NOT NULL, base_reserve INTEGER NOT NULL);
CREATE TABLE accounts (
    account_id TEXT PRIMARY KEY, balance INTEGER NOT NULL, seq_num INTEGER NOT NULL,
    num_sub_entries INTEGER NOT NULL, flags INTEGER NOT NULL, home_domain TEXT NOT NULL, inflation_dest TEXT,
    master_weight INTEGER NOT NULL, low_threshold INTEGER NOT NULL, med_threshold INTEGER NOT NULL,
    high_threshold INTEGER NOT NULL, num_sponsored INTEGER NOT NULL, num_sponsoring INTEGER NOT NULL,
    sponsor TEXT, seq_ledger INTEGER NOT NULL, seq_time INTEGER NOT NULL, last_modified_ledger INTEGER NOT NULL);
CREATE TABLE signers (
    account_id TEXT NOT NULL, signer TEXT NOT NULL, weight INTEGER NOT NULL, sponsor TEXT,
    PRIMARY KEY (account_id, signer)) WITHOUT ROWID;
CREATE INDEX signers_by_key ON signers (signer);
CREATE TABLE trustlines (
    account_id TEXT NOT NULL, asset TEXT NOT NULL, balance INTEGER NOT NULL, trust_limit INTEGER NOT NULL,
    flags INTEGER NOT NULL, sponsor TEXT, last_modified_ledger INTEGER NOT NULL,
    PRIMARY KEY (account_id, asset)) WITHOUT ROWID;
CREATE INDEX trustlines_by_asset ON trustlines (asset);
CREATE TABLE data (
    account_id TEXT NOT NULL, name TEXT NOT NULL, value BLOB NOT NULL, sponsor TEXT,
    last_modified_ledger INTEGER NOT NULL, PRIMARY KEY (account_id, name)) WITHOUT ROWID;
CREATE TABLE transactions (
    id INTEGER PRIMARY KEY, hash TEXT NOT NULL UNIQUE, inner_hash TEXT, ledger INTEGER NOT NULL,
    successful INTEGER NOT NULL, record TEXT NOT NULL);
CREATE INDEX transactions_by_inner_hash ON transactions (inner_hash) WHERE inner_hash IS NOT NULL;
CREATE TABLE tx_participants (account_id TEXT NOT NULL, tx_id INTEGER NOT NULL,
    PRIMARY KEY (account_id, tx_id)) WITHOUT ROWID;
CREATE TABLE operations (
    id INTEGER PRIMARY KEY, tx_id INTEGER NOT NULL, is_payment INTEGER NOT NULL, successful INTEGER NOT NULL,
    record TEXT NOT NULL);
CREATE INDEX operations_by_tx ON operations (tx_id);
CREATE TABLE op_participants (account_id TEXT NOT NULL, op_id INTEGER NOT NULL,
    PRIMARY KEY (account_id, op_id)) WITHOUT ROWID;
"""

_ACCOUNT_COLS = ("account_id, balance, seq_num, num_sub_entries, flags, home_domain, inflation_dest, master_weight, "
                 "low_threshold, med_threshold, high_threshold, num_sponsored, num_sponsoring, sponsor, seq_ledger, "
                 "seq_time, last_modified_ledger")


@dataclass(frozen=True, slots=True)
class LedgerRow:
    sequence: int
    successful_tx: int
    failed_tx: int
    operation_count: int
    tx_set_operation_count: int
    fee_pool: int
    total_coins: int
    base_fee: int
    base_reserve: int

    def carried_to(self, sequence: int) -> LedgerRow:
        """The same totals and parameters in a later ledger with nothing in it yet."""
        if sequence == self.sequence:
            return self
        return replace(self, sequence=sequence, successful_tx=0, failed_tx=0, operation_count=0,
                       tx_set_operation_count=0)


@dataclass(frozen=True, slots=True)
class Page:
    """Horizon paging: records after ``cursor`` in ``order``, at most ``limit``."""

    cursor: int | None = None
    order: str = "asc"
    limit: int = 10


class LedgerStore:
    def __init__(self, path: Path) -> None:
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                                       timeout=BUSY_TIMEOUT_S)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            if (check := self._db.execute("PRAGMA quick_check").fetchone()[0]) != "ok":
                raise LedgerStoreError(f"{path} is damaged ({check}); move it aside to start a fresh ledger")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                # One script, one transaction: a crash mid-creation leaves version 0 and nothing half-made.
                self._db.executescript(f"BEGIN IMMEDIATE;{_SCHEMA}PRAGMA user_version={SCHEMA_VERSION};COMMIT;")
            elif version != SCHEMA_VERSION:
                raise LedgerStoreError(f"{path} has schema version {version}, this program knows "
                                       f"{SCHEMA_VERSION}; use the matching meter-gateway version")
        except sqlite3.Error as exc:
            raise LedgerStoreError(f"cannot open the ledger database {path}: {exc}") from exc
        self.path = path

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- meta and ledger rows ---------------------------------------------------------------
    def meta(self) -> dict[str, str]:
        with self._lock:
            return dict(self._db.execute("SELECT key, value FROM meta").fetchall())

    def initialise(self, meta: dict[str, str], genesis: LedgerRow, root: Account) -> None:
        with self._lock, self._transaction():
            self._db.executemany("INSERT INTO meta VALUES (?, ?)", sorted(meta.items()))
            self._put_ledger(genesis)
            self._put_entry(root)

    def latest_row(self, at_or_before: int | None = None) -> LedgerRow:
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM ledgers WHERE sequence <= ? ORDER BY sequence DESC LIMIT 1",
                (at_or_before if at_or_before is not None else 2**62,)).fetchone()
        assert row is not None, "the genesis ledger always has a row"
        return LedgerRow(*row)

    def rows_between(self, first: int, last: int) -> dict[int, LedgerRow]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM ledgers WHERE sequence BETWEEN ? AND ?", (first, last)).fetchall()
        return {r[0]: LedgerRow(*r) for r in rows}

    def put_ledger(self, row: LedgerRow) -> None:
        with self._lock, self._transaction():
            self._put_ledger(row)

    def _put_ledger(self, row: LedgerRow) -> None:
        self._db.execute("INSERT OR REPLACE INTO ledgers VALUES (?,?,?,?,?,?,?,?,?)",
                         (row.sequence, row.successful_tx, row.failed_tx, row.operation_count,
                          row.tx_set_operation_count, row.fee_pool, row.total_coins, row.base_fee, row.base_reserve))

    # -- entries (EntryReader) ------------------------------------------------------------
    def get_entry(self, key: Key) -> Entry | None:
        kind, account_id, sub = key
        with self._lock:
            if kind == "account":
                return self._account(account_id)
            if kind == "trustline":
                row = self._db.execute(
                    "SELECT balance, trust_limit, flags, sponsor, last_modified_ledger FROM trustlines "
                    "WHERE account_id=? AND asset=?", (account_id, sub)).fetchone()
                return TrustLine(account_id, Asset.from_key(sub), *row) if row else None
            row = self._db.execute(
                "SELECT value, sponsor, last_modified_ledger FROM data WHERE account_id=? AND name=?",
                (account_id, sub)).fetchone()
            return DataEntry(account_id, sub, bytes(row[0]), row[1], row[2]) if row else None

    def _account(self, account_id: str) -> Account | None:
        row = self._db.execute(f"SELECT {_ACCOUNT_COLS} FROM accounts WHERE account_id=?", (account_id,)).fetchone()
        if row is None:
            return None
        signers = [Signer(k, w, s) for k, w, s in self._db.execute(
            "SELECT signer, weight, sponsor FROM signers WHERE account_id=?", (account_id,))]
        signers.sort(key=Signer.sort_key)
        (aid, balance, seq, subs, flags, home, infl, master, low, med, high, sponsored, sponsoring, sponsor,
         seq_ledger, seq_time, modified) = row
        return Account(aid, balance, seq, subs, flags, home, infl, master, low, med, high, signers, sponsored,
                       sponsoring, sponsor, seq_ledger, seq_time, modified)

    def trustlines_of(self, account_id: str) -> list[TrustLine]:
        with self._lock:
            rows = self._db.execute(
                "SELECT asset, balance, trust_limit, flags, sponsor, last_modified_ledger FROM trustlines "
                "WHERE account_id=? ORDER BY asset", (account_id,)).fetchall()
        return [TrustLine(account_id, Asset.from_key(a), *rest) for a, *rest in rows]

    def data_of(self, account_id: str) -> list[DataEntry]:
        with self._lock:
            rows = self._db.execute("SELECT name, value, sponsor, last_modified_ledger FROM data WHERE account_id=? "
                                    "ORDER BY name", (account_id,)).fetchall()
        return [DataEntry(account_id, n, bytes(v), s, m) for n, v, s, m in rows]

    def accounts_where(self, *, signer: str | None = None, asset: str | None = None, sponsor: str | None = None,
                       cursor: str | None = None, order: str = "asc", limit: int = 10) -> list[str]:
        """Account ids with this signer / holding this asset / sponsored by this account (Horizon's filters)."""
        arg: list[str | None]
        if signer is not None:
            sql, arg = ("SELECT account_id FROM accounts WHERE (account_id=? AND master_weight > 0) OR account_id IN "
                        "(SELECT account_id FROM signers WHERE signer=?)"), [signer, signer]
        elif asset is not None:
            sql, arg = "SELECT account_id FROM trustlines WHERE asset=?", [asset]
        else:
            sql, arg = "SELECT account_id FROM accounts WHERE sponsor=?", [sponsor]
        op, direction = (">", "ASC") if order == "asc" else ("<", "DESC")
        where = f" AND account_id {op} ?" if cursor else ""
        query = f"SELECT account_id FROM ({sql}) WHERE 1{where} ORDER BY account_id {direction} LIMIT ?"
        with self._lock:
            return [row[0] for row in self._db.execute(query, [*arg, *([cursor] if cursor else []), limit])]

    # -- one durable commit per included transaction --------------------------------------
    def commit(self, changes: dict[Key, Entry | None], ledger: int, record: TxRecord | None,
               row: LedgerRow) -> None:
        with self._lock, self._transaction():
            for key, entry in changes.items():
                before = self.get_entry(key)
                if entry is None:
                    if before is not None:
                        self._delete_entry(key)
                    continue
                entry.last_modified_ledger = before.last_modified_ledger if before is not None else ledger
                if entry != before:
                    entry.last_modified_ledger = ledger
                    self._put_entry(entry)
            if record is not None:
                self._put_record(record)
            self._put_ledger(row)

    def _put_entry(self, entry: Entry) -> None:
        if isinstance(entry, Account):
            a = entry
            self._db.execute(
                f"INSERT OR REPLACE INTO accounts ({_ACCOUNT_COLS}) VALUES ({','.join('?' * 17)})",
                (a.account_id, a.balance, a.seq_num, a.num_sub_entries, a.flags, a.home_domain, a.inflation_dest,
                 a.master_weight, a.low_threshold, a.med_threshold, a.high_threshold, a.num_sponsored,
                 a.num_sponsoring, a.sponsor, a.seq_ledger, a.seq_time, a.last_modified_ledger))
            self._db.execute("DELETE FROM signers WHERE account_id=?", (a.account_id,))
            self._db.executemany("INSERT INTO signers VALUES (?,?,?,?)",
                                 [(a.account_id, s.key, s.weight, s.sponsor) for s in a.signers])
        elif isinstance(entry, TrustLine):
            t = entry
            self._db.execute("INSERT OR REPLACE INTO trustlines VALUES (?,?,?,?,?,?,?)",
                             (t.account_id, t.asset.key, t.balance, t.limit, t.flags, t.sponsor,
                              t.last_modified_ledger))
        else:
            d = entry
            self._db.execute("INSERT OR REPLACE INTO data VALUES (?,?,?,?,?)",
                             (d.account_id, d.name, d.value, d.sponsor, d.last_modified_ledger))

    def _delete_entry(self, key: Key) -> None:
        kind, account_id, sub = key
        if kind == "account":
            self._db.execute("DELETE FROM accounts WHERE account_id=?", (account_id,))
            self._db.execute("DELETE FROM signers WHERE account_id=?", (account_id,))
        elif kind == "trustline":
            self._db.execute("DELETE FROM trustlines WHERE account_id=? AND asset=?", (account_id, sub))
        else:
            self._db.execute("DELETE FROM data WHERE account_id=? AND name=?", (account_id, sub))

    def _put_record(self, rec: TxRecord) -> None:
        self._db.execute("INSERT INTO transactions VALUES (?,?,?,?,?,?)",
                         (rec.id, rec.hash, rec.inner_hash, rec.ledger, int(rec.successful), json.dumps(rec.record)))
        self._db.executemany("INSERT INTO tx_participants VALUES (?,?)", [(a, rec.id) for a in rec.participants])
        self._db.executemany("INSERT INTO operations VALUES (?,?,?,?,?)",
                             [(op.id, rec.id, int(op.is_payment), int(op.successful), json.dumps(op.record))
                              for op in rec.operations])
        self._db.executemany("INSERT INTO op_participants VALUES (?,?)",
                             [(a, op.id) for op in rec.operations for a in op.participants])

    class _Tx:
        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def __enter__(self) -> None:
            self.db.execute("BEGIN IMMEDIATE")

        def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
            if exc_type is None:
                try:
                    self.db.execute("COMMIT")
                except sqlite3.Error as error:
                    self.db.execute("ROLLBACK")
                    raise LedgerStoreError(f"could not commit to the ledger database: {error}") from error
            else:
                self.db.execute("ROLLBACK")

    def _transaction(self) -> LedgerStore._Tx:
        return LedgerStore._Tx(self._db)

    # -- history queries --------------------------------------------------------------------
    def transaction(self, tx_hash: str) -> dict[str, Any] | None:
        """The stored record of a transaction by its hash (or, for a fee bump, its inner hash)."""
        with self._lock:
            row = self._db.execute("SELECT record FROM transactions WHERE hash=?", (tx_hash,)).fetchone() or \
                self._db.execute("SELECT record FROM transactions WHERE inner_hash=?", (tx_hash,)).fetchone()
        return json.loads(row[0]) if row else None

    def next_order(self, ledger: int) -> int:
        with self._lock:
            row = self._db.execute("SELECT MAX(id) FROM transactions WHERE id >= ? AND id < ?",
                                   (ledger << 32, (ledger + 1) << 32)).fetchone()
        return 1 if row[0] is None else ((row[0] >> 12) & 0xFFFFF) + 1

    def transactions(self, page: Page, *, account: str | None = None, ledger: int | None = None,
                     include_failed: bool = False) -> list[dict[str, Any]]:
        where, args = self._filters("t.id", page, ledger, include_failed, "t.successful")
        if account is not None:
            sql = ("SELECT t.record FROM tx_participants p JOIN transactions t ON t.id = p.tx_id "
                   f"WHERE p.account_id=?{where}")
            args = [account, *args]
        else:
            sql = f"SELECT t.record FROM transactions t WHERE 1{where}"
        return self._records(sql, page, "t.id", args)

    def operations(self, page: Page, *, account: str | None = None, tx_hash: str | None = None,
                   ledger: int | None = None, payments_only: bool = False,
                   include_failed: bool = False) -> list[dict[str, Any]]:
        where, args = self._filters("o.id", page, ledger, include_failed, "o.successful")
        if payments_only:
            where += " AND o.is_payment = 1"
        if tx_hash is not None:
            where += " AND o.tx_id = (SELECT id FROM transactions WHERE hash=? OR inner_hash=? LIMIT 1)"
            args += [tx_hash, tx_hash]
        if account is not None:
            sql = ("SELECT o.record FROM op_participants p JOIN operations o ON o.id = p.op_id "
                   f"WHERE p.account_id=?{where}")
            args = [account, *args]
        else:
            sql = f"SELECT o.record FROM operations o WHERE 1{where}"
        return self._records(sql, page, "o.id", args)

    @staticmethod
    def _filters(column: str, page: Page, ledger: int | None, include_failed: bool,
                 success_column: str) -> tuple[str, list[Any]]:
        where, args = "", []
        if page.cursor is not None:
            where += f" AND {column} {'>' if page.order == 'asc' else '<'} ?"
            args.append(page.cursor)
        if ledger is not None:
            where += f" AND {column} >= ? AND {column} < ?"
            args += [ledger << 32, (ledger + 1) << 32]
        if not include_failed:
            where += f" AND {success_column} = 1"
        return where, args

    def _records(self, sql: str, page: Page, column: str, args: list[Any]) -> list[dict[str, Any]]:
        sql += f" ORDER BY {column} {'ASC' if page.order == 'asc' else 'DESC'} LIMIT ?"
        with self._lock:
            rows = self._db.execute(sql, [*args, page.limit]).fetchall()
        return [json.loads(r[0]) for r in rows]

    def operation(self, op_id: int) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT record FROM operations WHERE id=?", (op_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def fee_samples(self, first_ledger: int, last_ledger: int) -> list[tuple[int, int, int]]:
        """(fee charged, max fee, operation count) of the transactions in these ledgers."""
        with self._lock:
            rows = self._db.execute("SELECT record FROM transactions WHERE id >= ? AND id < ?",
                                    (first_ledger << 32, (last_ledger + 1) << 32)).fetchall()
        out = []
        for (raw,) in rows:
            rec = json.loads(raw)
            out.append((int(rec["fee_charged"]), int(rec["max_fee"]), int(rec["operation_count"])))
        return out
