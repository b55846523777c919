"""What every receiver store offers, whatever keeps the data: the interface and the rules they share.

Two stores implement :class:`CreditStore`: SQLite (:mod:`.store_sqlite`, embedded, one process,
the default for the demo and tests) and PostgreSQL (:mod:`.store_pg`, several stateless receivers
on one database). Both examine a batch with the same pure code (``cloud_sync.receiver_intake``)
inside one database transaction, under a lock on the gateway's enrolment row, so their answers are
the same for the same requests; the test suite in ``tests/receiver`` runs against both.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cloud_sync.receiver.enrolment import Enrolment, Principal
from cloud_sync.receiver_intake import IdempotencyConflict

RETRY_AFTER_S = 5
"""What a 503 asks a gateway to wait: storage that is busy or restarting is usually back within seconds."""


class StoreUnavailable(Exception):
    """The store cannot answer now (locked, restarting, unreachable); nothing was stored. Answered 503."""


class ReceiverConfigError(Exception):
    """The receiver cannot run as configured; the message says what to change."""


@dataclass(frozen=True, slots=True)
class PullOutcome:
    """One pulled page, examined and stored with the gateway's pull cursor in one transaction."""

    result: dict[str, Any]
    """The page's ``BatchResult``, as a push of the same credits would have got."""
    cursor: int
    """The cursor stored now: past every credit stored, never past a rejected one."""
    stopped: bool
    """True when a credit was rejected: the cursor stays before it, so it is pulled again next time."""


class CreditStore(Protocol):
    """A receiver's storage. Every method is one transaction; a store keeps no state a second receiver lacks."""

    async def principal(self, token: str) -> Principal | None:
        """The gateway whose own token this is (revoked or not), or None for a token no gateway has."""

    async def ingest(self, gateway: str, batch_key: str, raw: bytes, credits: list[Any]) -> dict[str, Any]:
        """Examine and store one batch; its ``BatchResult``.

        Raises ``BatchRefused`` (403) for a gateway not enrolled or revoked,
        :class:`IdempotencyConflict` (422) for a key answered before for other bytes,
        :class:`StoreUnavailable` when nothing could be stored now.
        """

    async def credits(self, gateway: str, meter: str, channel: str | None = None) -> list[dict[str, Any]]:
        """The meter's stored credits (of ``channel`` only, when given): import first, each channel in seq order."""

    async def summary(self, gateway: str | None = None) -> list[dict[str, Any]]:
        """Per (gateway, meter, channel): count, first and last seq, net Wh; one gateway's or all.

        Each channel is its own row (an export Wh is never netted against consumption).
        """

    async def enrol(self, gateway: str, public_key: str, token_sha256: str | None, now_ms: int) -> None:
        """Enrol a gateway (or enrol a revoked one again); ``EnrolmentError`` when it is enrolled already."""

    async def ensure_enrolled(self, gateway: str, public_key: str, now_ms: int) -> Enrolment:
        """``--enroll``: enrol with this key unless enrolled; ``EnrolmentError`` when enrolled with another key."""

    async def set_token(self, gateway: str, token_sha256: str) -> None:
        """A new token for an enrolled gateway (the old one stops working)."""

    async def revoke(self, gateway: str, now_ms: int) -> None:
        """Refuse the gateway's batches from now on (its stored credits stay)."""

    async def gateways(self) -> list[Enrolment]:
        """Every enrolment, revoked ones included, by gateway id."""

    async def pull_cursor(self, gateway: str) -> int:
        """Where pulling from this gateway resumes (0 before the first pull)."""

    async def ingest_pull(self, gateway: str, after: int, page: Sequence[tuple[int, Any]]) -> PullOutcome:
        """Examine and store a page pulled from the gateway after ``after``; move its cursor in the same transaction."""

    async def close(self) -> None: ...


def stored_answer(prior: tuple[str, str] | None, request_sha256: str, batch_key: str) -> dict[str, Any] | None:
    """The answer to replay for a batch key seen before, or None to examine the batch (again).

    The same key with other bytes is an :class:`IdempotencyConflict`: the stored answer stands. A
    stored answer that rejected something is not final: the cause may be fixed by now (an
    enrolment, a predecessor delivered since), and examining the same bytes again is safe because
    every credit is stored at most once and answers ``duplicate`` when seen again.
    """
    if prior is None:
        return None
    digest, response = prior
    if digest != request_sha256:
        raise IdempotencyConflict(batch_key)
    replay: dict[str, Any] = json.loads(response)
    if replay.get("rejected"):
        return None
    replay["replayed"] = True
    return replay


def pulled_cursor(after: int, page: Sequence[tuple[int, Any]], results: Sequence[dict[str, Any]]) -> tuple[int, bool]:
    """The pull cursor after a page: its last credit's, or just before the first rejected credit.

    Stopping before a rejected credit keeps it (and every later credit of its meter, which would
    be a gap) to be pulled again, exactly as a gateway keeps a refused batch first in line.
    """
    cursor = after
    for (position, _), result in zip(page, results, strict=True):
        if result["status"] == "rejected":
            return cursor, True
        cursor = position
    return cursor, False


def is_database_url(value: str) -> bool:
    return value.startswith(("postgresql://", "postgres://"))


def sqlite_path(value: str) -> Path:
    """``sqlite:///relative.db``, ``sqlite:////absolute.db`` (as SQLAlchemy writes them) or a plain path."""
    if value.startswith("sqlite://"):
        rest = value.removeprefix("sqlite://")
        if not rest.startswith("/") or rest == "/":
            raise ReceiverConfigError(f"--db {value!r}: write sqlite:///relative/path.db or sqlite:////absolute/path.db")
        return Path(rest[1:])
    if "://" in value:
        raise ReceiverConfigError(f"--db {value!r}: use postgresql://user@host:port/database, sqlite:///path or a "
                                  "file path")
    return Path(value)


async def open_store(db: str) -> CreditStore:
    """The store a ``--db`` value names, its schema migrated to the current version."""
    store: CreditStore
    if is_database_url(db):
        try:
            from cloud_sync.receiver.store_pg import PgStore
        except ImportError as exc:
            raise ReceiverConfigError(f"a PostgreSQL store needs the asyncpg driver ({exc}): "
                                      "pip install 'meter-gateway[receiver-pg]'") from None
        store = await PgStore.open(db)
    else:
        from cloud_sync.receiver.store_sqlite import ReceiverStore, SqliteStore

        store = SqliteStore(ReceiverStore(sqlite_path(db), {}))
    return store
