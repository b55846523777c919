"""stellar-sdk's async HTTP client interface over requests, one worker thread per request.

stellar-sdk ships ``ServerAsync`` and ``SorobanServerAsync`` with an aiohttp client only; this
adapter implements its ``BaseAsyncClient`` (get / post / stream / close, each returning the SDK's
``Response``)::

    async with ServerAsync(url, client=ThreadedRequestsClient()) as server:
        account = await server.load_account(gateway_key)

Why requests and not the gateway's httpx: stellar-sdk's package ``__init__`` imports requests
whatever a caller uses, so a box with ``[stellar]`` has it in memory anyway, while httpx and
httpcore would add about 2 MiB there (issue 11: a [stellar] daemon may not cost more than the
ThingsBoard gateway's 69.7 MiB). Horizon and Soroban RPC see a few requests a minute, so a thread
per request costs nothing that matters.

A thread cannot be cancelled. When the awaiting task is (a timeout, SIGTERM), it stops waiting at
once and the thread runs to the end of its own timeout and is forgotten: threads are daemonic, so
they never hold up the daemon's exit, and a result that comes back after the loop has closed is
dropped. For a POST that is what a cancelled httpx request was too: sent or not, its outcome is
unknown, and the uplinks reconcile by sequence number and hash.

requests' timeouts bound the connect and each socket read, not a whole answer, so a thread also
gives up between chunks of the body once its bound has passed, and at most ``MAX_IN_FLIGHT``
threads per client are alive at once: a server that trickles bytes or a DNS lookup that hangs costs
a few threads, never one per retry.

Transport failures and the total time bound become the SDK's ``ConnectionError``; HTTP statuses are
left to the SDK (404 → NotFoundError, 4xx → BadRequestError, 5xx → BadResponseError). Streaming
(Server-Sent Events) is not used by the gateway and is refused. TLS goes through the process's one
verifying context (``cloud_sync.tls``), never a CA bundle parsed per connection pool.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import ssl
import threading
import time
from collections.abc import AsyncGenerator, Callable
from http.cookiejar import DefaultCookiePolicy
from typing import Any, Final, TypeVar

import requests
from requests.adapters import HTTPAdapter
from stellar_sdk.client.base_async_client import BaseAsyncClient
from stellar_sdk.client.response import Response
from stellar_sdk.exceptions import ConnectionError as SdkConnectionError
from stellar_sdk.exceptions import ContentSizeLimitExceededError

from cloud_sync.tls import client_context

T = TypeVar("T")

GET_TIMEOUT_S: Final = 10.0
"""A Horizon read answers in milliseconds; ten seconds means the server or the path is in trouble."""
POST_TIMEOUT_S: Final = 35.0
"""Horizon holds a submission up to ~30 s waiting for the ledger to close before answering 504."""
CHUNK_BYTES: Final = 64 * 1024
MAX_IN_FLIGHT: Final = 8
"""Threads one client may have alive. The uplinks send one request at a time, so more than a few
alive means earlier ones are stuck on a server that does not answer; a new request then fails at once
as unreachable (the uplinks back off) instead of adding a thread."""


class _SharedContextAdapter(HTTPAdapter):
    """HTTPS through one given SSLContext (requests would otherwise load certifi's bundle per pool)."""

    def __init__(self, context: Callable[[], ssl.SSLContext]) -> None:
        self._context = context
        super().__init__()

    def build_connection_pool_key_attributes(self, request: requests.PreparedRequest, verify: Any,
                                             cert: Any = None) -> tuple[dict[str, Any], dict[str, Any]]:
        host, pool = super().build_connection_pool_key_attributes(request, verify, cert)
        if host.get("scheme") == "https":
            pool.pop("ca_certs", None)
            pool.pop("ca_cert_dir", None)
            pool["cert_reqs"] = "CERT_REQUIRED"
            pool["ssl_context"] = self._context()
        return host, pool

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        # Always verified, by the shared context's CAs (it honours SSL_CERT_FILE / SSL_CERT_DIR).
        conn.cert_reqs = "CERT_REQUIRED"
        conn.ca_certs = None
        conn.ca_cert_dir = None


class ThreadedRequestsClient(BaseAsyncClient):
    def __init__(self, *, get_timeout_s: float = GET_TIMEOUT_S, post_timeout_s: float = POST_TIMEOUT_S) -> None:
        self._session = requests.Session()
        self._session.mount("https://", _SharedContextAdapter(client_context))
        # Horizon and Soroban RPC set no cookies worth keeping, and the jar is the one part of a Session
        # its threads would mutate without a lock.
        self._session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        self._get_timeout = get_timeout_s
        self._post_timeout = post_timeout_s
        self._slots = threading.BoundedSemaphore(MAX_IN_FLIGHT)

    async def get(self, url: str, params: dict[str, str] | None = None,
                  max_content_size: int | None = None) -> Response:
        timeout = self._get_timeout

        def fetch(deadline: float) -> Response:
            with self._session.get(url, params=params, timeout=(timeout, timeout), stream=True) as resp:
                return _response(resp, _body(resp, deadline, url, max_content_size))

        return await _in_thread(fetch, timeout, url, self._slots)

    async def post(self, url: str, data: dict[str, str] | None = None,
                   json_data: dict[str, Any] | None = None) -> Response:
        timeout = self._post_timeout

        def send(deadline: float) -> Response:
            with self._session.post(url, data=data, json=json_data, timeout=(timeout, timeout), stream=True) as resp:
                return _response(resp, _body(resp, deadline, url, None))

        return await _in_thread(send, timeout, url, self._slots)

    def stream(self, url: str, params: dict[str, str] | None = None) -> AsyncGenerator[dict[str, Any], None]:
        raise NotImplementedError("ThreadedRequestsClient does not stream Server-Sent Events; poll instead")

    async def close(self) -> None:
        self._session.close()


def _body(resp: requests.Response, deadline: float, url: str, max_content_size: int | None) -> bytes:
    body = bytearray()
    for chunk in resp.iter_content(CHUNK_BYTES):
        body += chunk
        if max_content_size is not None and len(body) > max_content_size:
            raise ContentSizeLimitExceededError(max_content_size, len(body))
        if time.monotonic() > deadline:
            raise SdkConnectionError(f"{url} was still sending its answer at the time bound")
    return bytes(body)


async def _in_thread(call: Callable[[float], T], bound_s: float, url: str, slots: threading.BoundedSemaphore) -> T:
    """``call(deadline)`` in a daemonic thread; its result or exception here, within ``bound_s`` seconds."""
    if not slots.acquire(blocking=False):
        raise SdkConnectionError(f"{MAX_IN_FLIGHT} earlier requests to this server are still unanswered; "
                                 f"not sending another to {url}")
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():  # the caller stopped waiting
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    deadline = time.monotonic() + bound_s

    def run() -> None:
        result: T | None = None
        error: BaseException | None = None
        try:
            result = call(deadline)
        except requests.RequestException as exc:
            error = SdkConnectionError(exc)
            error.__cause__ = exc  # raise ... from exc, across the thread
        except Exception as exc:  # noqa: BLE001 - handed to the awaiting task, which raises it
            error = exc
        finally:
            slots.release()
        # RuntimeError: the loop has closed (the daemon stopped); nobody waits for this any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, result, error)

    try:
        threading.Thread(target=run, name="stellar-http", daemon=True).start()
    except BaseException:
        slots.release()
        raise
    try:
        async with asyncio.timeout(bound_s):
            return await future
    except TimeoutError:
        raise SdkConnectionError(f"no answer from {url} within {bound_s:g} s") from None


def _response(resp: requests.Response, body: bytes) -> Response:
    # Only a charset the server names; requests would guess ISO-8859-1 for text/* and Horizon sends UTF-8.
    encoding = resp.encoding if "charset=" in resp.headers.get("content-type", "").lower() else None
    if encoding is not None:
        try:
            codecs.lookup(encoding)
        except LookupError:  # a charset Python does not know: read it as what Horizon really sends
            encoding = None
    return Response(status_code=resp.status_code, text=body.decode(encoding or "utf-8", errors="replace"),
                    headers={k.lower(): v for k, v in resp.headers.items()}, url=str(resp.url))
