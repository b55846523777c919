"""The thin I/O layer to Horizon: stellar-sdk's ``ServerAsync`` over requests
(worker threads, ``cloud_sync.horizon_http``).

It only translates: every answer becomes plain data, every failure one of two exceptions that
say what the caller should do — :class:`HorizonUnavailable` (no clear answer: a timeout, a
reset, 5xx, 429 — the outcome of a submission is *unknown*, resend the same bytes later,
after ``retry_after`` if the server gave one) and :class:`Refused` (a clear 4xx answer with
Horizon's result codes). Nothing here decides what to do next; :mod:`.submitter` does.
"""

from __future__ import annotations

import base64
import email.utils
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Final

from stellar_sdk.exceptions import (
    BadRequestError,
    BadResponseError,
    BaseRequestError,
    NotFoundError,
    raise_request_exception,
)
from stellar_sdk.server_async import ServerAsync

from cloud_sync.horizon_http import ThreadedRequestsClient
from cloud_sync.stellar.amounts import to_stroops
from cloud_sync.stellar.txbuild import NetworkView, result_codes
from gateway.errors import GatewayError

GET_TIMEOUT_S: Final = 10.0
"""A Horizon read answers in milliseconds; ten seconds means the server or the path is in trouble."""
PAGE_LIMIT: Final = 200
"""Horizon's largest page."""
MAX_PAGES: Final = 500
"""Bounds a listing (100 000 records) so a misbehaving server cannot keep a loop going forever."""


class HorizonError(GatewayError):
    """Base of what talking to Horizon can raise."""


class HorizonUnavailable(HorizonError):
    """No clear answer. For a submission: the transaction may or may not have been applied."""

    def __init__(self, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class Refused(HorizonError):
    """A clear refusal (4xx) with Horizon's result codes."""

    def __init__(self, status: int, tx_code: str, op_codes: list[str], detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.tx_code = tx_code
        self.op_codes = op_codes

    @property
    def failing_op(self) -> tuple[int, str] | None:
        """(index, code) of the first operation that did not succeed, if any."""
        for i, code in enumerate(self.op_codes):
            if code != "op_success":
                return i, code
        return None


@dataclass(frozen=True, slots=True)
class TxRecord:
    """A transaction found in the network's history: included, its fee charged."""

    hash: str
    ledger: int
    successful: bool
    tx_code: str
    op_codes: list[str]


def _retry_after(exc: BaseRequestError) -> float | None:
    """The SDK keeps the response, headers included, as the exception's first argument."""
    response = exc.args[0] if exc.args else None
    headers = getattr(response, "headers", None) or {}
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (ValueError, TypeError, OverflowError):
        return None


UNEXPECTED = (BaseRequestError, KeyError, IndexError, ValueError, TypeError)
"""What a call can raise: the SDK's request errors, and an answer not shaped like Horizon's."""


def _translate(exc: BaseException) -> HorizonError:
    if isinstance(exc, BadRequestError):
        if exc.status == 429 or exc.status == 408:
            return HorizonUnavailable(f"HTTP {exc.status} {exc.title or ''}".strip(), _retry_after(exc))
        extras = exc.extras or {}
        codes = extras.get("result_codes") if isinstance(extras, dict) else None
        if isinstance(codes, dict):
            return Refused(exc.status, str(codes.get("transaction")),
                           [str(c) for c in codes.get("operations") or []],
                           f"HTTP {exc.status}: {codes}")
        kind = (exc.type or "").rsplit("/", 1)[-1] or "bad_request"
        return Refused(exc.status, kind, [], f"HTTP {exc.status} {kind}: {exc.detail or exc.title}")
    if isinstance(exc, BadResponseError):
        return HorizonUnavailable(f"HTTP {exc.status} {(exc.type or '').rsplit('/', 1)[-1]}", _retry_after(exc))
    if isinstance(exc, BaseRequestError):
        return HorizonUnavailable(f"{type(exc).__name__}: {exc}")
    return HorizonUnavailable(f"an answer not shaped like Horizon's: {type(exc).__name__}: {exc}")


def _epoch(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())


def balance_of(account: dict[str, Any], code: str | None, issuer: str | None) -> int | None:
    """Stroops of an asset (``code`` None = XLM) on an account record, None without a trustline."""
    for line in account.get("balances", []):
        if code is None and line.get("asset_type") == "native":
            return to_stroops(line["balance"])
        if code is not None and line.get("asset_code") == code and line.get("asset_issuer") == issuer:
            return to_stroops(line["balance"])
    return None


def data_value(account: dict[str, Any], key: str) -> str | None:
    raw = (account.get("data") or {}).get(key)
    return base64.b64decode(raw).decode("utf-8", errors="replace") if isinstance(raw, str) else None


class HorizonClient:
    """One Horizon server; ``async with`` it (it owns an HTTP session)."""

    def __init__(self, url: str, *, post_timeout_s: float) -> None:
        self.url = url.rstrip("/")
        self._client = ThreadedRequestsClient(get_timeout_s=GET_TIMEOUT_S, post_timeout_s=post_timeout_s)
        self._server = ServerAsync(self.url, client=self._client)

    async def __aenter__(self) -> HorizonClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        await self._server.close()

    async def latest(self) -> NetworkView:
        """The latest closed ledger: the network's own sequence and clock."""
        try:
            page = await self._server.ledgers().order(desc=True).limit(1).call()
            record = page["_embedded"]["records"][0]
            return NetworkView(int(record["sequence"]), _epoch(record["closed_at"]),
                               int(record["base_fee_in_stroops"]), int(record["base_reserve_in_stroops"]))
        except UNEXPECTED as exc:
            raise _translate(exc) from exc

    async def network_passphrase(self) -> str:
        """The passphrase Horizon's root resource names (what every signature must be made for)."""
        try:
            root = await self._server.root().call()
            return str(root["network_passphrase"])
        except UNEXPECTED as exc:
            raise _translate(exc) from exc

    async def account(self, account_id: str) -> dict[str, Any] | None:
        """The account record, or None if the network has no such account."""
        try:
            record: dict[str, Any] = await self._server.accounts().account_id(account_id).call()
            return record
        except NotFoundError:
            return None
        except UNEXPECTED as exc:
            raise _translate(exc) from exc

    async def sequence(self, account_id: str) -> int | None:
        record = await self.account(account_id)
        return None if record is None else int(record["sequence"])

    async def submit(self, envelope_xdr: str) -> dict[str, Any]:
        """POST the envelope; the transaction record on success, else Refused or HorizonUnavailable."""
        try:
            # The SDK's submit_transaction would decode the envelope again (and check SEP-29 memos, which
            # meter accounts never require): the stored bytes go out as they are.
            response = await self._client.post(f"{self.url}/transactions", data={"tx": envelope_xdr})
            raise_request_exception(response)
            record: dict[str, Any] = response.json()
            return record
        except UNEXPECTED as exc:
            raise _translate(exc) from exc

    async def lookup(self, tx_hash: str) -> TxRecord | None:
        """The transaction from the network's history, or None if it was never included."""
        try:
            record = await self._server.transactions().transaction(tx_hash).call()
        except NotFoundError:
            return None
        except UNEXPECTED as exc:
            raise _translate(exc) from exc
        tx_code, op_codes = result_codes(record["result_xdr"])
        return TxRecord(tx_hash, int(record["ledger"]), bool(record["successful"]), tx_code, op_codes)

    async def accounts_with_signer(self, signer: str) -> AsyncIterator[dict[str, Any]]:
        """Every account that has ``signer`` as a signer (Horizon's ``/accounts?signer=``), page by page."""
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            builder = self._server.accounts().for_signer(signer).limit(PAGE_LIMIT)
            if cursor:
                builder = builder.cursor(cursor)
            try:
                page = await builder.call()
            except UNEXPECTED as exc:
                raise _translate(exc) from exc
            records = page["_embedded"]["records"]
            for record in records:
                yield record
            if len(records) < PAGE_LIMIT:
                return
            cursor = records[-1]["paging_token"]
