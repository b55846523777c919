"""The receiver's HTTP API (``cloud_sync/openapi.yaml``) over any :class:`~.store.CreditStore`.

Who may do what. A request carries ``Authorization: Bearer <token>``:

* a gateway's own token (issued by ``enrol``, stored hashed): the request is that gateway; it may
  send only its own batches and read only its own credits. A revoked gateway's token is answered
  403 with the reason, so the box dead-letters rather than retries in silence;
* the shared token (``--token-file``, kept for the demo and single-gateway set-ups): the operator,
  who may send for any enrolled gateway and read everything;
* anything else: 401. ``insecure_no_auth`` (tests only) makes every request the operator.

The app holds no state between requests: several processes on one PostgreSQL store behave as one.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cloud_sync.credit import CHANNELS, is_id, shown
from cloud_sync.fast_json import dumps_utf8
from cloud_sync.receiver.enrolment import OPERATOR, Principal, refused_other_gateway, refused_revoked
from cloud_sync.receiver.store import RETRY_AFTER_S, CreditStore, ReceiverConfigError, StoreUnavailable
from cloud_sync.receiver.store_sqlite import ReceiverStore, SqliteStore
from cloud_sync.receiver_intake import (
    MAX_BODY_BYTES,
    BatchRefused,
    check_content_type,
    check_idempotency_key,
    decode_body,
    parse_batch,
)

INLINE_DECODE_BYTES = 1024 * 1024
"""Bodies up to this size (a batch of 500 credits is about 350 KB, decoded in about a millisecond) are
decoded on the event loop; larger ones in a worker thread, so a 16 MB body cannot stall other requests."""


class _FastJSONResponse(JSONResponse):
    """The ``BatchResult``, rendered by orjson when installed (the same bytes: it holds no floats)."""

    def render(self, content: Any) -> bytes:
        return dumps_utf8(content)


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _unauthorised() -> JSONResponse:
    return _error(401, "missing or wrong bearer token: send the token this receiver issued to the gateway "
                       "(its token_file)", {"WWW-Authenticate": 'Bearer realm="billing"'})


def _unavailable(exc: StoreUnavailable) -> JSONResponse:
    return _error(503, f"{exc}; nothing was stored, retry later", {"Retry-After": str(RETRY_AFTER_S)})


class _Denied(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise BatchRefused(413, f"body of {declared} bytes; the limit is {MAX_BODY_BYTES}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BatchRefused(413, f"body over the limit of {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(store: CreditStore | ReceiverStore, token: str | None = None, *,
               insecure_no_auth: bool = False) -> Starlette:
    """The HTTP API of ``store``.

    ``token`` is the shared (operator) token, optional: without it only enrolled gateways' own
    tokens get in. ``insecure_no_auth`` (tests only) lets anyone in as the operator.
    """
    if token is not None and (not token or token != token.strip()):
        raise ReceiverConfigError("the bearer token must be non-empty, without surrounding whitespace")
    backend: CreditStore = SqliteStore(store) if isinstance(store, ReceiverStore) else store
    shared = f"Bearer {token}".encode() if token is not None else None

    async def authenticate(request: Request) -> Principal:
        if insecure_no_auth:
            return OPERATOR
        header = request.headers.get("authorization", "")
        given = header.encode("latin-1")
        if shared is not None and secrets.compare_digest(given, shared):
            return OPERATOR
        scheme, _, credential = header.partition(" ")
        if scheme.lower() != "bearer" or not credential:
            raise _Denied(_unauthorised())
        try:
            principal = await backend.principal(credential)
        except StoreUnavailable as exc:
            raise _Denied(_unavailable(exc)) from None
        if principal is None:
            raise _Denied(_unauthorised())
        if principal.revoked:
            raise _Denied(_error(403, refused_revoked(principal.gateway or "")))
        return principal

    async def post_batch(request: Request) -> Response:
        try:
            principal = await authenticate(request)
            check_content_type(request.headers.get("content-type"))
            key = check_idempotency_key(request.headers.get("idempotency-key"))
            raw = await _read_body(request)
            doc = decode_body(raw) if len(raw) <= INLINE_DECODE_BYTES else await run_in_threadpool(decode_body, raw)
            batch = parse_batch(doc, key)
            if principal.gateway is not None and batch.gateway != principal.gateway:
                raise BatchRefused(403, refused_other_gateway(principal.gateway, batch.gateway))
            result = await backend.ingest(batch.gateway, key, raw, batch.credits)
        except _Denied as denied:
            return denied.response
        except BatchRefused as exc:
            return _error(exc.status, exc.message)
        except StoreUnavailable as exc:
            return _unavailable(exc)
        return _FastJSONResponse(result)

    async def get_credits(request: Request) -> Response:
        gateway, meter = request.path_params["gateway"], request.path_params["meter"]
        try:
            principal = await authenticate(request)
            if principal.gateway is not None and gateway != principal.gateway:
                return _error(403, refused_other_gateway(principal.gateway, gateway))
            channel = request.query_params.get("channel")
            if channel is not None and channel not in CHANNELS:
                return _error(400, f"channel must be one of {', '.join(CHANNELS)}, got {shown(channel)}")
            if not (is_id(gateway) and is_id(meter)):
                return JSONResponse({"credits": []})  # no credit is ever stored under such ids
            return JSONResponse({"credits": await backend.credits(gateway, meter, channel)})
        except _Denied as denied:
            return denied.response
        except StoreUnavailable as exc:
            return _unavailable(exc)

    async def get_summary(request: Request) -> Response:
        try:
            principal = await authenticate(request)
            return JSONResponse({"meters": await backend.summary(principal.gateway)})
        except _Denied as denied:
            return denied.response
        except StoreUnavailable as exc:
            return _unavailable(exc)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"ok": True})

    return Starlette(routes=[
        Route("/v1/batches", post_batch, methods=["POST"]),
        Route("/v1/gateways/{gateway}/meters/{meter}/credits", get_credits, methods=["GET"]),
        Route("/v1/summary", get_summary, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
    ])
