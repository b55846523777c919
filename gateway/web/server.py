"""Run an ASGI app inside the daemon's TaskGroup.

uvicorn normally owns the process: it installs its own SIGINT/SIGTERM
handlers. Here the daemon owns signals and shutdown order, so the server is
started without them and stopped by the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import uvicorn

TICK_S = 1.0
"""How often the embedded server looks at its clock and its exit flag. uvicorn's own loop does so every
0.1 s: ten wake-ups a second of an otherwise idle daemon, most of its fixed CPU cost. Its Date header
is renewed once a second either way; a stop is seen at once (``should_exit`` wakes it)."""


class EmbeddedServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        self._exit = asyncio.Event()
        super().__init__(config)

    @property
    def should_exit(self) -> bool:
        return self._exit.is_set()

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        if value:
            self._exit.set()
        else:
            self._exit.clear()

    async def main_loop(self) -> None:
        # on_tick(0) every time: counter 0 is the tick on which uvicorn renews its Date header.
        while not await self.on_tick(0):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TICK_S):
                    await self._exit.wait()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    @property
    def bound_port(self) -> int | None:
        for server in getattr(self, "servers", []):
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return None


def make_server(app: Any, host: str, port: int, tls: tuple[Path, Path] | None = None) -> EmbeddedServer:
    """``tls``: (certificate, key) PEM files to serve HTTPS."""
    cert, key = (str(tls[0]), str(tls[1])) if tls else (None, None)
    # ws="none": the app has no WebSocket route, and uvicorn's "auto" would import a WebSocket library
    # (wsproto, with h11) at start: 1.5 MiB of a box's memory for an upgrade that can only be refused.
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, ws="none",
                            lifespan="off", timeout_graceful_shutdown=2, ssl_certfile=cert, ssl_keyfile=key)
    return EmbeddedServer(config)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def serving(app: Any, host: str = "127.0.0.1", port: int = 0,
                  tls: tuple[Path, Path] | None = None) -> AsyncIterator[str]:
    """Serve ``app`` for the duration of the block; yields its base URL (a free port if 0)."""
    port = port or free_port(host)
    server = make_server(app, host, port, tls)
    task = asyncio.create_task(server.serve())
    while not server.started and not task.done():  # noqa: ASYNC110 - uvicorn has no started event
        await asyncio.sleep(0.01)
    if task.done():
        await task  # it failed to start: raise why
    try:
        yield f"{'https' if tls else 'http'}://{host}:{port}"
    finally:
        server.should_exit = True
        await task
