"""Horizon's routes over a :class:`LocalLedger` (Starlette), plus the ``/_ledger/`` admin routes.

Handlers only parse the request, call the ledger (in a worker thread: it does SQLite I/O under
its lock) and render with ``responses``; no rule lives here.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any, Final
from urllib.parse import parse_qs

import structlog
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from stellar_sdk import StrKey, xdr

from cloud_sync.horizon import responses as r
from cloud_sync.horizon.codes import result_codes
from cloud_sync.horizon.envelope import MalformedEnvelope
from cloud_sync.horizon.errors import FriendbotRefused, LocalLedgerError
from cloud_sync.horizon.faults import FaultPlan, FaultRule
from cloud_sync.horizon.ledger import LocalLedger, Submission
from cloud_sync.horizon.store import Page

log = structlog.get_logger("cloud_sync.horizon")

MAX_BODY_BYTES: Final = 512 * 1024
"""A 100-operation envelope is ~20 KiB; anything far larger is not a transaction."""
MAX_LIMIT: Final = 200
DEFAULT_LIMIT: Final = 10
HASH_RE: Final = re.compile(r"^[0-9a-fA-F]{64}$")

Handler = Callable[[Request], Awaitable[Response]]


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _page(request: Request) -> Page | Response:
    q = request.query_params
    order = q.get("order", "asc")
    if order not in ("asc", "desc"):
        return r.bad_request("order", "order must be asc or desc")
    try:
        limit = int(q.get("limit", DEFAULT_LIMIT))
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIMIT:
        return r.bad_request("limit", f"limit must be a whole number from 1 to {MAX_LIMIT}")
    cursor_text = q.get("cursor", "")
    if cursor_text in ("", "now"):
        cursor = None if cursor_text == "" else (2**63 - 1 if order == "asc" else None)
    elif cursor_text.isdigit():
        cursor = int(cursor_text)
    else:
        return r.bad_request("cursor", "cursor must be a paging_token from a previous page")
    return Page(cursor, order, limit)


def _include_failed(request: Request) -> bool:
    return request.query_params.get("include_failed", "false").lower() == "true"


def _account_id(request: Request) -> str | Response:
    account_id = request.path_params["account_id"]
    if not StrKey.is_valid_ed25519_public_key(account_id):
        return r.bad_request("account_id", "Account ID must start with `G` and contain 56 alphanum characters")
    return str(account_id)


async def _form(request: Request) -> dict[str, str] | Response:
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        return r.bad_request("tx", "request body too large")
    content_type = request.headers.get("content-type", "application/x-www-form-urlencoded").split(";")[0].strip()
    if content_type == "application/json":
        try:
            doc = json.loads(body or b"{}")
        except ValueError:
            return r.bad_request("tx", "body is not JSON")
        return {k: str(v) for k, v in doc.items()} if isinstance(doc, dict) else {}
    if content_type != "application/x-www-form-urlencoded":
        return r.problem(415, "unsupported_media_type", "Unsupported Media Type",
                         "The request has an unsupported content type. Presently, the only supported content type "
                         "is application/x-www-form-urlencoded.")
    return {k: v[-1] for k, v in parse_qs(body.decode("utf-8", errors="replace")).items()}


def create_app(ledger: LocalLedger, faults: FaultPlan) -> Starlette:
    def collection(records: list[dict[str, Any]], request: Request, page: Page,
                   render: Callable[[dict[str, Any], str], dict[str, Any]]) -> Response:
        base = _base(request)
        params = {k: v for k, v in request.query_params.items() if k not in ("cursor", "limit", "order")}
        return r.hal_json(r.page(records, f"{base}{request.url.path}", params, page.order, page.limit,
                                 lambda rec: render(rec, base)))

    def history(kind: str, **scope: Any) -> Handler:
        """A transactions / operations / payments collection, optionally scoped by a path parameter."""
        async def handler(request: Request) -> Response:
            page = _page(request)
            if isinstance(page, Response):
                return page
            kwargs: dict[str, Any] = {"include_failed": _include_failed(request)}
            for name, param in scope.items():
                value = request.path_params[param]
                if param == "account_id" and isinstance(checked := _account_id(request), Response):
                    return checked
                if param == "tx_hash" and not HASH_RE.match(value):
                    return r.bad_request("tx_id", "Transaction hash must be 64 hex characters")
                kwargs[name] = int(value) if param == "sequence" else value.lower() if param == "tx_hash" else value
            if kind == "transactions":
                kwargs.pop("tx_hash", None)
                records = await run_in_threadpool(ledger.store.transactions, page, **kwargs)
                return collection(records, request, page, r.transaction)
            records = await run_in_threadpool(ledger.store.operations, page, payments_only=kind == "payments",
                                              **kwargs)
            return collection(records, request, page, r.operation)
        return handler

    async def root(request: Request) -> Response:
        latest = await run_in_threadpool(ledger.latest_closed)
        return r.hal_json(r.root(_base(request), latest, ledger.network_passphrase,
                                 ledger.closed_at_iso(latest.sequence)))

    async def account(request: Request) -> Response:
        account_id = _account_id(request)
        if isinstance(account_id, Response):
            return account_id
        view = await run_in_threadpool(ledger.account, account_id)
        return r.not_found() if view is None else r.hal_json(r.account(view, _base(request)))

    async def account_data(request: Request) -> Response:
        account_id = _account_id(request)
        if isinstance(account_id, Response):
            return account_id
        view = await run_in_threadpool(ledger.account, account_id)
        entry = next((d for d in view.data if d.name == request.path_params["key"]), None) if view else None
        if entry is None:
            return r.not_found()
        body: dict[str, Any] = {"value": base64.b64encode(entry.value).decode()}
        if entry.sponsor:
            body["sponsor"] = entry.sponsor
        return r.hal_json(body)

    async def accounts(request: Request) -> Response:
        q = request.query_params
        filters = {k: q[k] for k in ("signer", "asset", "sponsor") if q.get(k)}
        if len(filters) != 1:
            return r.bad_request("signer, sponsor, asset", "exactly one of signer, sponsor or asset is required")
        page = _page(request)
        if isinstance(page, Response):
            return page
        cursor = q.get("cursor") or None
        ids = await run_in_threadpool(ledger.store.accounts_where, cursor=cursor, order=page.order,
                                      limit=page.limit, **filters)
        views = [v for v in [await run_in_threadpool(ledger.account, i) for i in ids] if v is not None]
        return collection([r.account(v, _base(request)) for v in views], request, page, lambda rec, _: rec)

    async def transaction(request: Request) -> Response:
        tx_hash = request.path_params["tx_hash"]
        if not HASH_RE.match(tx_hash):
            return r.bad_request("tx_id", "Transaction hash must be 64 hex characters")
        rec = await run_in_threadpool(ledger.transaction, tx_hash)
        if rec is None:
            return r.not_found()
        return r.hal_json(r.transaction({**rec, "id": tx_hash.lower(), "hash": tx_hash.lower()}, _base(request)))

    def answer(sub: Submission, request: Request) -> Response:
        if sub.included and sub.successful:
            assert sub.record is not None
            return r.hal_json(r.transaction(sub.record, _base(request)))
        return r.transaction_failed(sub.envelope_xdr, sub.result_xdr,
                                    result_codes(xdr.TransactionResult.from_xdr(sub.result_xdr)))

    async def submit(request: Request) -> Response:
        form = await _form(request)
        if isinstance(form, Response):
            return form
        tx = form.get("tx")
        if not tx:
            return r.bad_request("tx", "Transaction is required: send the base64 envelope in the form field tx")
        try:
            sub = await run_in_threadpool(ledger.submit, tx)
        except MalformedEnvelope:
            return r.transaction_malformed(tx)
        return answer(sub, request)

    async def submit_async(request: Request) -> Response:
        form = await _form(request)
        if isinstance(form, Response):
            return form
        tx = form.get("tx")
        if not tx:
            return r.bad_request("tx", "Transaction is required: send the base64 envelope in the form field tx")
        try:
            sub = await run_in_threadpool(ledger.submit, tx)
        except MalformedEnvelope:
            return r.transaction_malformed(tx)
        if sub.replayed:
            return JSONResponse({"tx_status": "DUPLICATE", "hash": sub.hash}, status_code=409)
        if sub.included:
            return JSONResponse({"tx_status": "PENDING", "hash": sub.hash}, status_code=201)
        return JSONResponse({"tx_status": "ERROR", "hash": sub.hash, "error_result_xdr": sub.result_xdr},
                            status_code=400)

    async def operation(request: Request) -> Response:
        op_id = request.path_params["op_id"]
        rec = await run_in_threadpool(ledger.store.operation, int(op_id)) if op_id.isdigit() else None
        return r.not_found() if rec is None else r.hal_json(r.operation(rec, _base(request)))

    async def ledgers(request: Request) -> Response:
        page = _page(request)
        if isinstance(page, Response):
            return page
        latest = (await run_in_threadpool(ledger.latest_closed)).sequence
        after = (page.cursor >> 32) if page.cursor is not None else None
        if page.order == "asc":
            first = (after or 0) + 1
            seqs = list(range(first, min(latest, first + page.limit - 1) + 1))
        else:
            top = min(latest, after - 1) if after is not None else latest
            seqs = list(range(top, max(0, top - page.limit), -1))
        infos = await run_in_threadpool(ledger.ledgers, min(seqs), max(seqs)) if seqs else []
        by_seq = {i.sequence: i for i in infos}
        records = [r.ledger(by_seq[s], _base(request), ledger.paging_token(s), ledger.closed_at_iso(s)) for s in seqs]
        return collection(records, request, page, lambda rec, _: rec)

    async def one_ledger(request: Request) -> Response:
        seq = request.path_params["sequence"]
        latest = (await run_in_threadpool(ledger.latest_closed)).sequence
        if not seq.isdigit() or not 1 <= int(seq) <= latest:
            return r.not_found()
        info = await run_in_threadpool(ledger.ledger_info, int(seq))
        return r.hal_json(r.ledger(info, _base(request), ledger.paging_token(info.sequence),
                                   ledger.closed_at_iso(info.sequence)))

    async def fee_stats(request: Request) -> Response:
        return r.hal_json(await run_in_threadpool(ledger.fee_stats))

    async def friendbot(request: Request) -> Response:
        addr = request.query_params.get("addr")
        if addr is None and request.method == "POST":
            form = await _form(request)
            addr = form.get("addr") if isinstance(form, dict) else None
        if not addr:
            return r.bad_request("addr", "friendbot funds the account named by ?addr=G…")
        try:
            sub = await run_in_threadpool(ledger.friendbot, addr)
        except FriendbotRefused as exc:
            return r.problem(400, "bad_request", "Bad Request", str(exc))
        return answer(sub, request)

    # -- admin (not Horizon) ----------------------------------------------------------------
    async def faults_get(request: Request) -> Response:
        return JSONResponse(faults.snapshot())

    async def faults_post(request: Request) -> Response:
        try:
            doc = json.loads(await request.body())
            for rule in doc if isinstance(doc, list) else [doc]:
                faults.add(FaultRule.from_json(rule))
        except ValueError as exc:
            return r.bad_request("faults", str(exc))
        return JSONResponse(faults.snapshot())

    async def faults_delete(request: Request) -> Response:
        faults.clear()
        return JSONResponse(faults.snapshot())

    async def upgrade(request: Request) -> Response:
        try:
            doc = json.loads(await request.body() or b"{}")
            ctx = await run_in_threadpool(lambda: ledger.upgrade(base_fee=doc.get("base_fee"),
                                                                 base_reserve=doc.get("base_reserve")))
        except (ValueError, AttributeError, LocalLedgerError) as exc:
            return r.bad_request("upgrade", f"expected {{'base_fee': int, 'base_reserve': int}}: {exc}")
        return JSONResponse({"ledger": ctx.seq, "base_fee": ctx.base_fee, "base_reserve": ctx.base_reserve})

    async def status(request: Request) -> Response:
        ctx = await run_in_threadpool(ledger.open_ledger)
        return JSONResponse({"network_passphrase": ledger.network_passphrase, "root_account": ledger.root.public_key,
                             "open_ledger": ctx.seq, "open_ledger_closes_at": ctx.close_time,
                             "base_fee": ctx.base_fee, "base_reserve": ctx.base_reserve})

    async def not_found(request: Request, exc: Exception) -> Response:
        return r.not_found()

    async def server_error(request: Request, exc: Exception) -> Response:
        log.error("horizon.server_error", path=request.url.path, error=repr(exc))
        return r.problem(500, "server_error", "Internal Server Error",
                         "An error occurred while processing this request.")

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            return r.not_found()
        return r.problem(exc.status_code, "bad_request", "Bad Request", str(exc.detail))

    routes = [
        Route("/", root),
        Route("/accounts", accounts),
        Route("/accounts/{account_id}", account),
        Route("/accounts/{account_id}/data/{key}", account_data),
        Route("/accounts/{account_id}/transactions", history("transactions", account="account_id")),
        Route("/accounts/{account_id}/operations", history("operations", account="account_id")),
        Route("/accounts/{account_id}/payments", history("payments", account="account_id")),
        Route("/transactions", history("transactions"), methods=["GET"]),
        Route("/transactions", submit, methods=["POST"]),
        Route("/transactions_async", submit_async, methods=["POST"]),
        Route("/transactions/{tx_hash}", transaction),
        Route("/transactions/{tx_hash}/operations", history("operations", tx_hash="tx_hash")),
        Route("/transactions/{tx_hash}/payments", history("payments", tx_hash="tx_hash")),
        Route("/operations", history("operations")),
        Route("/operations/{op_id}", operation),
        Route("/payments", history("payments")),
        Route("/ledgers", ledgers),
        Route("/ledgers/{sequence}", one_ledger),
        Route("/ledgers/{sequence:int}/transactions", history("transactions", ledger="sequence")),
        Route("/ledgers/{sequence:int}/operations", history("operations", ledger="sequence")),
        Route("/ledgers/{sequence:int}/payments", history("payments", ledger="sequence")),
        Route("/fee_stats", fee_stats),
        Route("/friendbot", friendbot, methods=["GET", "POST"]),
        Route("/_ledger/faults", faults_get, methods=["GET"]),
        Route("/_ledger/faults", faults_post, methods=["POST"]),
        Route("/_ledger/faults", faults_delete, methods=["DELETE"]),
        Route("/_ledger/upgrade", upgrade, methods=["POST"]),
        Route("/_ledger/status", status),
    ]
    return Starlette(routes=routes, exception_handlers={404: not_found, HTTPException: http_error,
                                                       Exception: server_error})

