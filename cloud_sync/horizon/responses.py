"""Horizon's wire shapes: resources with HAL links, paged collections, and problem+json errors.

Field names and types follow Horizon (amounts as 7-decimal strings, sequence numbers and fees
as strings, ledger numbers as integers); see FIELD_NOTES.md. Everything here is a pure
function of stored facts and the base URL the client used.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from typing import Any, Final
from urllib.parse import urlencode

from starlette.responses import JSONResponse, Response

from cloud_sync.horizon.entries import (
    AUTH_CLAWBACK_ENABLED,
    AUTH_IMMUTABLE,
    AUTH_REQUIRED,
    AUTH_REVOCABLE,
    TL_CLAWBACK_ENABLED,
    format_amount,
)
from cloud_sync.horizon.history import iso
from cloud_sync.horizon.ledger import PROTOCOL_VERSION, AccountView, LedgerInfo

ERRORS: Final = "https://stellar.org/horizon-errors/"
HORIZON_VERSION: Final = "meter-gateway-local-ledger"
SIGNER_TYPES: Final = {"G": "ed25519_public_key", "T": "preauth_tx", "X": "sha256_hash"}


def link(href: str, templated: bool = False) -> dict[str, Any]:
    return {"href": href, "templated": True} if templated else {"href": href}


def hal_json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body, indent=2), status_code=status, headers=headers,
                    media_type="application/hal+json; charset=utf-8")


# -- problems --------------------------------------------------------------------------------
def problem(status: int, kind: str, title: str, detail: str, extras: dict[str, Any] | None = None,
            headers: dict[str, str] | None = None) -> Response:
    body: dict[str, Any] = {"type": ERRORS + kind, "title": title, "status": status, "detail": detail}
    if extras is not None:
        body["extras"] = extras
    return JSONResponse(body, status_code=status, headers=headers, media_type="application/problem+json")


def not_found() -> Response:
    return problem(404, "not_found", "Resource Missing",
                   "The resource at the url requested was not found.  This usually occurs for one of two reasons:  "
                   "The url requested is not valid, or no data in our database could be found with the parameters "
                   "provided.")


def bad_request(field: str, reason: str) -> Response:
    return problem(400, "bad_request", "Bad Request", "The request you sent was invalid in some way.",
                   {"invalid_field": field, "reason": reason})


def transaction_malformed(envelope: str) -> Response:
    return problem(400, "transaction_malformed", "Transaction Malformed",
                   "Horizon could not decode the transaction envelope in this request. A transaction should be an "
                   "XDR TransactionEnvelope struct encoded using base64.  The envelope read from this request is "
                   "echoed in the `extras.envelope_xdr` field of this response for your convenience.",
                   {"envelope_xdr": envelope})


def transaction_failed(envelope_xdr: str, result_xdr: str, result_codes: dict[str, Any]) -> Response:
    return problem(400, "transaction_failed", "Transaction Failed",
                   "The transaction failed when submitted to the stellar network. The `extras.result_codes` field "
                   "on this response contains further details.  Descriptions of each code can be found at: "
                   "https://developers.stellar.org/docs/data/apis/horizon/api-reference/errors/http-status-codes/"
                   "horizon-specific/transaction-failed",
                   {"envelope_xdr": envelope_xdr, "result_codes": result_codes, "result_xdr": result_xdr})


def timeout() -> Response:
    return problem(504, "timeout", "Timeout",
                   "Your request timed out before completing.  Please try your request again. If you are submitting "
                   "a transaction make sure you are sending exactly the same transaction (with the same sequence "
                   "number).")


def server_over_capacity() -> Response:
    return problem(503, "server_over_capacity", "Server Over Capacity",
                   "This horizon server is currently overloaded.  Please wait for several minutes before trying your "
                   "request again.")


def rate_limit_exceeded(retry_after_s: int) -> Response:
    return problem(429, "rate_limit_exceeded", "Rate Limit Exceeded",
                   "The rate limit for the requesting IP address is over its alloted limit.  The allowed limit and "
                   "requests left per time period are communicated to clients via the http response headers "
                   "'X-RateLimit-*' headers.", headers={"Retry-After": str(retry_after_s)})


# -- resources -------------------------------------------------------------------------------
def account(view: AccountView, base: str) -> dict[str, Any]:
    a = view.account
    self_url = f"{base}/accounts/{a.account_id}"
    balances: list[dict[str, Any]] = []
    for t in view.trustlines:
        bal: dict[str, Any] = {
            "balance": format_amount(t.balance), "limit": format_amount(t.limit),
            "buying_liabilities": "0.0000000", "selling_liabilities": "0.0000000",
            "last_modified_ledger": t.last_modified_ledger, "is_authorized": t.authorized,
            "is_authorized_to_maintain_liabilities": t.authorized_to_maintain_liabilities,
            "is_clawback_enabled": bool(t.flags & TL_CLAWBACK_ENABLED),
            "asset_type": t.asset.asset_type, "asset_code": t.asset.code, "asset_issuer": t.asset.issuer,
        }
        if t.sponsor:
            bal["sponsor"] = t.sponsor
        balances.append(bal)
    balances.append({"balance": format_amount(a.balance), "buying_liabilities": "0.0000000",
                     "selling_liabilities": "0.0000000", "asset_type": "native"})
    signers = [_signer(s.key, s.weight, s.sponsor) for s in a.signers]
    signers.append(_signer(a.account_id, a.master_weight, None))
    body: dict[str, Any] = {
        "_links": {
            "self": link(self_url),
            **{name: link(f"{self_url}/{name}{{?cursor,limit,order}}", templated=True)
               for name in ("transactions", "operations", "payments", "effects", "offers", "trades")},
            "data": link(f"{self_url}/data/{{key}}", templated=True),
        },
        "id": a.account_id, "account_id": a.account_id, "sequence": str(a.seq_num),
        "sequence_ledger": a.seq_ledger, "sequence_time": str(a.seq_time), "subentry_count": a.num_sub_entries,
        "last_modified_ledger": a.last_modified_ledger, "last_modified_time": iso(view.last_modified_time),
        "thresholds": {"low_threshold": a.low_threshold, "med_threshold": a.med_threshold,
                       "high_threshold": a.high_threshold},
        "flags": {"auth_required": bool(a.flags & AUTH_REQUIRED), "auth_revocable": bool(a.flags & AUTH_REVOCABLE),
                  "auth_immutable": bool(a.flags & AUTH_IMMUTABLE),
                  "auth_clawback_enabled": bool(a.flags & AUTH_CLAWBACK_ENABLED)},
        "balances": balances, "signers": signers,
        "data": {d.name: base64.b64encode(d.value).decode() for d in view.data},
        "num_sponsoring": a.num_sponsoring, "num_sponsored": a.num_sponsored, "paging_token": a.account_id,
    }
    if a.home_domain:
        body["home_domain"] = a.home_domain
    if a.inflation_dest:
        body["inflation_destination"] = a.inflation_dest
    if a.sponsor:
        body["sponsor"] = a.sponsor
    return body


def _signer(key: str, weight: int, sponsor: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"weight": weight, "key": key, "type": SIGNER_TYPES[key[0]]}
    if sponsor:
        out["sponsor"] = sponsor
    return out


def transaction(rec: dict[str, Any], base: str) -> dict[str, Any]:
    tx_url = f"{base}/transactions/{rec['hash']}"
    links = {
        "self": link(tx_url), "account": link(f"{base}/accounts/{rec['source_account']}"),
        "ledger": link(f"{base}/ledgers/{rec['ledger']}"),
        "operations": link(f"{tx_url}/operations{{?cursor,limit,order}}", templated=True),
        "effects": link(f"{tx_url}/effects{{?cursor,limit,order}}", templated=True),
        "precedes": link(f"{base}/transactions?order=asc&cursor={rec['paging_token']}"),
        "succeeds": link(f"{base}/transactions?order=desc&cursor={rec['paging_token']}"),
        "transaction": link(tx_url),
    }
    return {"_links": links, **rec}


def operation(rec: dict[str, Any], base: str) -> dict[str, Any]:
    op_url = f"{base}/operations/{rec['id']}"
    links = {
        "self": link(op_url), "transaction": link(f"{base}/transactions/{rec['transaction_hash']}"),
        "effects": link(f"{op_url}/effects"),
        "succeeds": link(f"{base}/effects?order=desc&cursor={rec['paging_token']}"),
        "precedes": link(f"{base}/effects?order=asc&cursor={rec['paging_token']}"),
    }
    return {"_links": links, **rec}


def ledger(info: LedgerInfo, base: str, paging_token: str, closed_at: str) -> dict[str, Any]:
    r = info.row
    url = f"{base}/ledgers/{r.sequence}"
    body: dict[str, Any] = {
        "_links": {"self": link(url),
                   **{name: link(f"{url}/{name}{{?cursor,limit,order}}", templated=True)
                      for name in ("transactions", "operations", "payments", "effects")}},
        "id": info.hash(), "paging_token": paging_token, "hash": info.hash(),
        "sequence": r.sequence, "successful_transaction_count": r.successful_tx,
        "failed_transaction_count": r.failed_tx, "operation_count": r.operation_count,
        "tx_set_operation_count": r.tx_set_operation_count, "closed_at": closed_at,
        "total_coins": format_amount(r.total_coins), "fee_pool": format_amount(r.fee_pool),
        "base_fee_in_stroops": r.base_fee, "base_reserve_in_stroops": r.base_reserve,
        "max_tx_set_size": 1000, "protocol_version": PROTOCOL_VERSION,
    }
    if r.sequence > 1:
        body["prev_hash"] = info.hash(r.sequence - 1)
    return body


def page(records: Sequence[dict[str, Any]], url: str, params: dict[str, str], order: str, limit: int,
         render: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
    """A Horizon collection: ``_embedded.records`` and self/next/prev links by paging token."""
    def href(cursor: str, direction: str) -> str:
        return f"{url}?{urlencode({**params, 'cursor': cursor, 'limit': str(limit), 'order': direction})}"

    first = records[0]["paging_token"] if records else params.get("cursor", "")
    last = records[-1]["paging_token"] if records else params.get("cursor", "")
    back = "desc" if order == "asc" else "asc"
    return {
        "_links": {"self": link(href(params.get("cursor", ""), order)), "next": link(href(last, order)),
                   "prev": link(href(first, back))},
        "_embedded": {"records": [render(r) for r in records]},
    }


def root(base: str, latest: LedgerInfo, passphrase: str, closed_at: str) -> dict[str, Any]:
    return {
        "_links": {
            "account": link(f"{base}/accounts/{{account_id}}", templated=True),
            "accounts": link(f"{base}/accounts{{?signer,sponsor,asset,cursor,limit,order}}", templated=True),
            "account_transactions": link(f"{base}/accounts/{{account_id}}/transactions{{?cursor,limit,order}}",
                                         templated=True),
            "fee_stats": link(f"{base}/fee_stats"),
            "friendbot": link(f"{base}/friendbot{{?addr}}", templated=True),
            "ledger": link(f"{base}/ledgers/{{sequence}}", templated=True),
            "ledgers": link(f"{base}/ledgers{{?cursor,limit,order}}", templated=True),
            "operation": link(f"{base}/operations/{{id}}", templated=True),
            "operations": link(f"{base}/operations{{?cursor,limit,order,include_failed}}", templated=True),
            "payments": link(f"{base}/payments{{?cursor,limit,order,include_failed}}", templated=True),
            "self": link(f"{base}/"),
            "transaction": link(f"{base}/transactions/{{hash}}", templated=True),
            "transactions": link(f"{base}/transactions{{?cursor,limit,order}}", templated=True),
        },
        "horizon_version": HORIZON_VERSION, "core_version": HORIZON_VERSION,
        "ingest_latest_ledger": latest.sequence, "history_latest_ledger": latest.sequence,
        "history_latest_ledger_closed_at": closed_at, "history_elder_ledger": 1,
        "core_latest_ledger": latest.sequence, "network_passphrase": passphrase,
        "current_protocol_version": PROTOCOL_VERSION, "supported_protocol_version": PROTOCOL_VERSION,
        "core_supported_protocol_version": PROTOCOL_VERSION,
    }

