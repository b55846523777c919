"""Serving a :class:`LocalLedger` over HTTP inside the caller's event loop.

``serve_ledger`` is what tests and the demo use: it starts uvicorn on a port (0: a free one),
yields the URL, and stops the server and closes the ledger's database when the block ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from cloud_sync.horizon.faults import FaultInjector, FaultPlan
from cloud_sync.horizon.ledger import LocalLedger
from cloud_sync.horizon.urls import create_app
from gateway.errors import ConfigError
from gateway.web.server import make_server

START_TIMEOUT_S = 10.0
"""uvicorn binds within milliseconds; this only bounds a broken start on a loaded box."""


@dataclass(frozen=True, slots=True)
class RunningLedger:
    url: str
    ledger: LocalLedger
    faults: FaultPlan

    @property
    def network_passphrase(self) -> str:
        return self.ledger.network_passphrase


@contextlib.asynccontextmanager
async def serve_ledger(ledger: LocalLedger, *, host: str = "127.0.0.1", port: int = 0,
                       faults: FaultPlan | None = None) -> AsyncIterator[RunningLedger]:
    """Serve ``ledger`` over HTTP until the block ends (the caller opens and closes the ledger)."""
    plan = faults if faults is not None else FaultPlan()
    server = make_server(FaultInjector(create_app(ledger, plan), plan), host, port)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(START_TIMEOUT_S):
            while not server.started and not task.done():  # noqa: ASYNC110 - uvicorn has no started event
                await asyncio.sleep(0.01)
        if task.done():
            with contextlib.suppress(SystemExit):  # uvicorn exits when it cannot bind
                await task
            raise ConfigError(f"the local ledger cannot listen on {host}:{port} (address in use or not "
                              "available); pick another --listen")
        yield RunningLedger(f"http://{host}:{server.bound_port or port}", ledger, plan)
    finally:
        server.should_exit = True
        with contextlib.suppress(SystemExit):
            await task
