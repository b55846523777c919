"""The Horizon / Soroban RPC client runs each request in a thread: its bounds, cancellation and exit.

A thread cannot be cancelled, so these are the properties the uplinks rely on instead: a request
ends at its own bound as the SDK's ConnectionError (outcome unknown), a cancelled caller stops
waiting at once, and a request still in flight neither holds up the process's exit nor prints an
error when its answer comes back after the loop has closed.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from stellar_sdk.exceptions import ConnectionError as SdkConnectionError

from cloud_sync.horizon_http import ThreadedRequestsClient

BOUND_S = 0.5
SLOW_S = 30.0
"""Far beyond every wait below: a request to the slow server only ends by its bound or by being dropped."""
EXIT_S = 10.0
"""A child whose in-flight request held up its exit would take SLOW_S."""


def _slow_server(answer_after_s: float) -> Iterator[int]:
    """An HTTP server on loopback that reads a request and answers it only after ``answer_after_s``."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            if not stop.wait(answer_after_s):
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        listener.close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    yield from _slow_server(SLOW_S)


async def test_a_request_that_never_answers_ends_at_its_bound_as_the_sdks_connection_error(silent_port: int) -> None:
    client = ThreadedRequestsClient(get_timeout_s=BOUND_S, post_timeout_s=BOUND_S)
    try:
        t0 = time.monotonic()
        with pytest.raises(SdkConnectionError):
            await client.get(f"http://127.0.0.1:{silent_port}/accounts/x")
        with pytest.raises(SdkConnectionError):
            await client.post(f"http://127.0.0.1:{silent_port}/transactions", data={"tx": "AAAA"})
        assert time.monotonic() - t0 < 2 * BOUND_S + 2.0, "each request ended at its bound"
    finally:
        await client.close()


async def test_a_cancelled_caller_stops_waiting_at_once(silent_port: int) -> None:
    client = ThreadedRequestsClient(post_timeout_s=SLOW_S)
    try:
        task = asyncio.create_task(client.post(f"http://127.0.0.1:{silent_port}/transactions", data={"tx": "AAAA"}))
        await asyncio.sleep(0.2)
        t0 = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.monotonic() - t0 < 1.0
    finally:
        await client.close()


CHILD = """
import asyncio, sys, time
from cloud_sync.horizon_http import ThreadedRequestsClient

async def main():
    client = ThreadedRequestsClient(post_timeout_s=float(sys.argv[2]))
    task = asyncio.create_task(client.post(f"http://127.0.0.1:{sys.argv[1]}/transactions", data={"tx": "AAAA"}))
    await asyncio.sleep(0.3)
    task.cancel()  # as SIGTERM cancels an uplink mid-submit
    try:
        await task
    except asyncio.CancelledError:
        print("cancelled")

asyncio.run(main())
time.sleep(float(sys.argv[3]))  # the loop is closed; an answer arriving now must be dropped quietly
print("exited")
"""


@pytest.mark.parametrize(("answer_after_s", "linger_s"), [(SLOW_S, 0.0), (1.0, 2.0)], ids=["never", "after-close"])
def test_a_request_in_flight_neither_holds_up_the_exit_nor_complains_after_it(answer_after_s: float,
                                                                             linger_s: float) -> None:
    for port in _slow_server(answer_after_s):
        t0 = time.monotonic()
        out = subprocess.run([sys.executable, "-c", CHILD, str(port), str(SLOW_S), str(linger_s)],
                             capture_output=True, text=True, timeout=SLOW_S + 10)
        took = time.monotonic() - t0
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ["cancelled", "exited"]
        assert out.stderr == "", "a late answer was dropped without an error"
        assert took < EXIT_S, f"the process took {took:.1f} s to exit: the request's thread held it up"
