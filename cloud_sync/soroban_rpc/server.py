"""One local network on one port: Soroban JSON-RPC at ``/soroban/rpc``, Horizon everywhere else.

``serve_network`` is what tests, the demo and ``meter-gateway stellar soroban`` use: it starts
uvicorn in the caller's loop and yields both URLs (the caller opens and closes the node).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from cloud_sync.horizon.faults import FaultInjector, FaultPlan, Receive, Scope, Send
from cloud_sync.horizon.urls import create_app
from cloud_sync.soroban_rpc.node import SorobanNode
from cloud_sync.soroban_rpc.rpc import RpcFaults, create_rpc_app
from gateway.errors import ConfigError
from gateway.web.server import make_server

START_TIMEOUT_S = 10.0
"""uvicorn binds within milliseconds; this only bounds a broken start on a loaded box."""
RPC_PATH = "/soroban/rpc"


@dataclass(frozen=True, slots=True)
class RunningNetwork:
    horizon_url: str
    rpc_url: str
    node: SorobanNode
    faults: RpcFaults
    horizon_faults: FaultPlan

    @property
    def network_passphrase(self) -> str:
        return self.node.ledger.network_passphrase

    @property
    def contract_id(self) -> str:
        return self.node.contract_address


class _Router:
    def __init__(self, rpc: Any, horizon: Any) -> None:
        self.rpc, self.horizon = rpc, horizon

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == RPC_PATH:
            await self.rpc(scope, receive, send)
        else:
            await self.horizon(scope, receive, send)


@contextlib.asynccontextmanager
async def serve_network(node: SorobanNode, *, host: str = "127.0.0.1", port: int = 0,
                        faults: RpcFaults | None = None,
                        horizon_faults: FaultPlan | None = None) -> AsyncIterator[RunningNetwork]:
    rpc_faults = faults if faults is not None else RpcFaults()
    plan = horizon_faults if horizon_faults is not None else FaultPlan()
    app = _Router(create_rpc_app(node, rpc_faults), FaultInjector(create_app(node.ledger, plan), plan))
    server = make_server(app, host, port)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(START_TIMEOUT_S):
            while not server.started and not task.done():  # noqa: ASYNC110 - uvicorn has no started event
                await asyncio.sleep(0.01)
        if task.done():
            with contextlib.suppress(SystemExit):
                await task
            raise ConfigError(f"the local network cannot listen on {host}:{port} (address in use or not "
                              "available); pick another --listen")
        base = f"http://{host}:{server.bound_port or port}"
        yield RunningNetwork(base, base + RPC_PATH, node, rpc_faults, plan)
    finally:
        server.should_exit = True
        with contextlib.suppress(SystemExit):
            await task
