"""Fixtures for the reference receiver's tests, each run against both stores.

``sqlite``: a real SQLite file. ``postgresql``: a real PostgreSQL server started once per session
(Debian's server binaries, a temporary directory, a free loopback port, as ``nobody`` when the
tests run as root), with a fresh database per test. Where the binaries are absent the PostgreSQL
cases are skipped with the reason, unless ``METER_GATEWAY_TEST_SERVICES=required`` (CI sets it):
then they fail.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from receiver_kit import GW, KEY, TOKEN, Client

from cloud_sync.receiver import CreditStore, ReceiverStore, create_app, open_store
from cloud_sync.receiver.pg_sandbox import PgSandbox, PgUnavailable
from gateway.web.server import serving

STORES = ("sqlite", "postgresql")
REQUIRED_ENV = "METER_GATEWAY_TEST_SERVICES"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgSandbox]:
    try:
        sandbox = PgSandbox(fsync=False)  # the tests kill receivers, never the server: durability is not under test
    except PgUnavailable as exc:
        if os.environ.get(REQUIRED_ENV) == "required":
            pytest.fail(f"{exc} ({REQUIRED_ENV}=required)")
        pytest.skip(str(exc))
    sandbox.start()
    yield sandbox
    sandbox.stop()


@pytest.fixture(params=STORES)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store of each kind, as ``--db`` names it."""
    if request.param == "sqlite":
        return str(tmp_path / "receiver.db")
    server: PgSandbox = request.getfixturevalue("pg_server")
    return server.create_database()


@pytest.fixture
def new_db(request: pytest.FixtureRequest, tmp_path: Path, db_url: str) -> Callable[[], str]:
    """More fresh stores of the same kind as ``db_url``."""
    made = [0]

    def make() -> str:
        made[0] += 1
        if db_url.startswith("postgresql://"):
            server: PgSandbox = request.getfixturevalue("pg_server")
            return server.create_database()
        return str(tmp_path / f"receiver-{made[0]}.db")
    return make


@pytest.fixture
async def backend(db_url: str) -> AsyncIterator[CreditStore]:
    store = await open_store(db_url)
    await store.ensure_enrolled(GW, KEY.public_key, 0)
    yield store
    await store.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ReceiverStore]:
    """The SQLite store as the demo uses it (synchronously)."""
    s = ReceiverStore(tmp_path / "receiver.db", {GW: KEY.public_key})
    yield s
    s.close()


@pytest.fixture
async def client(backend: CreditStore) -> AsyncIterator[Client]:
    async with serving(create_app(backend, TOKEN)) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        yield Client(http)
