"""stellar-sdk's async HTTP client interface over httpx, so ``ServerAsync`` uses the gateway's one HTTP stack.

stellar-sdk ships ``ServerAsync`` with an aiohttp client only; this adapter implements its
``BaseAsyncClient`` (get / post / stream / close, each returning the SDK's ``Response``) on an
``httpx.AsyncClient``::

    async with ServerAsync(url, client=HttpxAsyncClient()) as server:
        account = await server.load_account(gateway_key)

Transport failures become the SDK's ``ConnectionError``; HTTP statuses are left to the SDK
(404 → NotFoundError, 4xx → BadRequestError, 5xx → BadResponseError). A POST that times out
raises ``ConnectionError`` too: for a transaction that means "outcome unknown", not "failed".
Streaming (Server-Sent Events) is not used by the gateway and is refused.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, Final

import httpx
from stellar_sdk.client.base_async_client import BaseAsyncClient
from stellar_sdk.client.response import Response
from stellar_sdk.exceptions import ConnectionError as SdkConnectionError
from stellar_sdk.exceptions import ContentSizeLimitExceededError

from cloud_sync.tls import client_context

GET_TIMEOUT_S: Final = 10.0
"""A Horizon read answers in milliseconds; ten seconds means the server or the path is in trouble."""
POST_TIMEOUT_S: Final = 35.0
"""Horizon holds a submission up to ~30 s waiting for the ledger to close before answering 504."""


class HttpxAsyncClient(BaseAsyncClient):
    def __init__(self, client: httpx.AsyncClient | None = None, *, get_timeout_s: float = GET_TIMEOUT_S,
                 post_timeout_s: float = POST_TIMEOUT_S) -> None:
        # The process's one TLS context (cloud_sync.tls), not a CA bundle parsed per client.
        self._client = client if client is not None else httpx.AsyncClient(verify=client_context())
        self._owned = client is None
        self._get_timeout = httpx.Timeout(get_timeout_s)
        self._post_timeout = httpx.Timeout(post_timeout_s)

    async def get(self, url: str, params: dict[str, str] | None = None,
                  max_content_size: int | None = None) -> Response:
        try:
            async with self._client.stream("GET", url, params=params, timeout=self._get_timeout) as resp:
                body = bytearray()
                async for chunk in resp.aiter_bytes():
                    body += chunk
                    if max_content_size is not None and len(body) > max_content_size:
                        raise ContentSizeLimitExceededError(max_content_size, len(body))
                return _response(resp, bytes(body))
        except httpx.HTTPError as exc:
            raise SdkConnectionError(exc) from exc

    async def post(self, url: str, data: dict[str, str] | None = None,
                   json_data: dict[str, Any] | None = None) -> Response:
        try:
            resp = await self._client.post(url, data=data, json=json_data, timeout=self._post_timeout)
        except httpx.HTTPError as exc:
            raise SdkConnectionError(exc) from exc
        return _response(resp, resp.content)

    def stream(self, url: str, params: dict[str, str] | None = None) -> AsyncGenerator[dict[str, Any], None]:
        raise NotImplementedError("HttpxAsyncClient does not stream Server-Sent Events; poll instead")

    async def close(self) -> None:
        if self._owned:
            await self._client.aclose()


def _response(resp: httpx.Response, body: bytes) -> Response:
    return Response(status_code=resp.status_code, text=body.decode(resp.encoding or "utf-8", errors="replace"),
                    headers=dict(resp.headers), url=str(resp.url))
