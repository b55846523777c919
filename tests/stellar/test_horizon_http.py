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

from cloud_sync.horizon_http import MAX_IN_FLIGHT, ThreadedRequestsClient

BOUND_S = 0.5
SLOW_S = 30.0
"""Far beyond every wait below: a request to the slow server only ends by its bound or by being dropped."""
EXIT_S = 10.0
"""A child whose in-flight request held up its exit would take SLOW_S."""


OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


def _slow_server(answer_after_s: float, answer: bytes = OK, trickle: bytes = b"") -> Iterator[int]:
    """An HTTP server on loopback that reads a request and answers it only after ``answer_after_s``;
    then, with ``trickle``, it sends that every 50 ms until the test ends (a body that never completes)."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            if stop.wait(answer_after_s):
                return
            try:
                conn.sendall(answer)
                while trickle and not stop.wait(0.05):
                    conn.sendall(trickle)
            except OSError:  # the client gave up
                return

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


def _http_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "stellar-http")


async def _threads_gone(within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while _http_threads() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return _http_threads() == 0


async def test_a_request_that_never_answers_ends_at_its_bound_as_the_sdks_connection_error(silent_port: int) -> None:
    client = ThreadedRequestsClient(get_timeout_s=BOUND_S, post_timeout_s=BOUND_S)
    try:
        t0 = time.monotonic()
        with pytest.raises(SdkConnectionError):
            await asyncio.wait_for(client.get(f"http://127.0.0.1:{silent_port}/accounts/x"), SLOW_S / 3)
        with pytest.raises(SdkConnectionError):
            await asyncio.wait_for(client.post(f"http://127.0.0.1:{silent_port}/transactions", data={"tx": "AAAA"}),
                                   SLOW_S / 3)
        assert time.monotonic() - t0 < 2 * BOUND_S + 2.0, "each request ended at its bound"
    finally:
        await client.close()


CHUNKED = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
SIZED = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"


@pytest.mark.parametrize("method", ["get", "post"])
async def test_a_body_that_trickles_forever_ends_at_the_bound_and_so_does_its_thread(method: str) -> None:
    """Bytes every 50 ms: requests' read timeout (the bound too) never fires, only the total bound can."""
    for port in _slow_server(0.0, CHUNKED, trickle=b"1\r\n \r\n"):
        client = ThreadedRequestsClient(get_timeout_s=BOUND_S, post_timeout_s=BOUND_S)
        try:
            t0 = time.monotonic()
            call = (client.get(f"http://127.0.0.1:{port}/ledgers") if method == "get"
                    else client.post(f"http://127.0.0.1:{port}/transactions", data={"tx": "AAAA"}))
            with pytest.raises(SdkConnectionError):
                await asyncio.wait_for(call, SLOW_S / 3)
            assert time.monotonic() - t0 < BOUND_S + 1.0
            assert await _threads_gone(2.0), "the thread stopped reading at its bound too"
        finally:
            await client.close()


async def test_the_caller_is_answered_at_the_bound_even_while_its_thread_is_stuck_in_one_read() -> None:
    """A declared length trickled a byte at a time: the thread sits in one read (where it cannot look at
    the clock); the caller still has its ConnectionError at the bound."""
    for port in _slow_server(0.0, SIZED, trickle=b" "):
        client = ThreadedRequestsClient(get_timeout_s=BOUND_S, post_timeout_s=BOUND_S)
        try:
            t0 = time.monotonic()
            with pytest.raises(SdkConnectionError):
                await asyncio.wait_for(client.get(f"http://127.0.0.1:{port}/ledgers"), SLOW_S / 3)
            assert time.monotonic() - t0 < BOUND_S + 1.0
        finally:
            await client.close()


async def test_stuck_requests_cap_the_threads_and_free_their_slots_when_they_end() -> None:
    for port in _slow_server(1.5):
        client = ThreadedRequestsClient(post_timeout_s=SLOW_S)
        try:
            url = f"http://127.0.0.1:{port}/transactions"
            stuck = [asyncio.create_task(client.post(url, data={"tx": "AAAA"})) for _ in range(MAX_IN_FLIGHT)]
            await asyncio.sleep(0.2)
            assert _http_threads() == MAX_IN_FLIGHT
            t0 = time.monotonic()
            with pytest.raises(SdkConnectionError, match="still unanswered"):
                await client.post(url, data={"tx": "AAAA"})
            assert time.monotonic() - t0 < 0.5, "refused at once, not queued"
            assert _http_threads() == MAX_IN_FLIGHT, "no thread was started for it"
            for task in stuck:
                task.cancel()
            assert await _threads_gone(SLOW_S / 3), "the cancelled callers' threads ended with their answers"
            assert (await client.post(url, data={"tx": "AAAA"})).status_code == 200, "their slots are free again"
        finally:
            await client.close()


async def test_an_answer_after_the_caller_gave_up_is_dropped_quietly_while_the_loop_runs() -> None:
    loop = asyncio.get_running_loop()
    errors: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        for port in _slow_server(0.5):
            client = ThreadedRequestsClient(post_timeout_s=SLOW_S)
            try:
                task = asyncio.create_task(client.post(f"http://127.0.0.1:{port}/transactions", data={"tx": "AAAA"}))
                await asyncio.sleep(0.1)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                assert await _threads_gone(SLOW_S / 3)
                await asyncio.sleep(0.1)  # the thread's call_soon_threadsafe has run
            finally:
                await client.close()
    finally:
        loop.set_exception_handler(None)
    assert errors == []


async def test_a_charset_python_does_not_know_is_read_as_utf8_not_raised() -> None:
    body = '{"memo":"\u20ac"}'.encode()
    answer = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=bogus\r\n"
              b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    for port in _slow_server(0.0, answer):
        client = ThreadedRequestsClient()
        try:
            resp = await client.get(f"http://127.0.0.1:{port}/ledgers")
        finally:
            await client.close()
        assert resp.text == '{"memo":"\u20ac"}'


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
from cloud_sync.horizon_http import MAX_IN_FLIGHT, ThreadedRequestsClient

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
