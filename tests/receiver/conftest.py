"""Fixtures for the reference receiver's tests: a store on a real SQLite file, served over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from receiver_kit import GW, KEY, TOKEN, Client

from cloud_sync.receiver import ReceiverStore, create_app
from gateway.web.server import serving


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ReceiverStore]:
    s = ReceiverStore(tmp_path / "receiver.db", {GW: KEY.public_key})
    yield s
    s.close()


@pytest.fixture
async def client(store: ReceiverStore) -> AsyncIterator[Client]:
    async with serving(create_app(store, TOKEN)) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        yield Client(http)
