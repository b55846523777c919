"""Pulling credits from gateways into the receiver's store (for a utility that prefers to pull).

Each gateway serves its outbox at ``GET /api/v1/credits?after=CURSOR&limit=N`` (its local API,
``gateway/web/app.py``, behind the box's web token). For every gateway in a file, this client
resumes from the cursor stored for it, fetches a page, and hands it to the store, which examines
the credits exactly as a pushed batch (enrolled key, signature, hash, domain, chain, history) and
stores them *with the new cursor in the same transaction*: a pull interrupted anywhere resumes where
the last commit left it, and a credit fetched twice is a ``duplicate``, so each is stored once.

A rejected credit stops that gateway's pull for this round and the cursor stays before it: the
credits after it continue its meter's chain and would only be gaps. It is pulled (and examined)
again next round, as a gateway offers a refused batch again.

The gateways file (TOML)::

    [[gateway]]
    id = "gw-0001"                         # the gateway_id, enrolled at this receiver
    url = "http://10.20.0.17:8080"         # the box's local web API
    token_file = "/etc/receiver/gw-0001.web.token"   # the box's web.token, 0600
"""

from __future__ import annotations

import asyncio
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import structlog

from cloud_sync.credit import is_int64
from cloud_sync.receiver.enrolment import EnrolmentError, check_gateway_id
from cloud_sync.receiver.store import CreditStore, ReceiverConfigError, StoreUnavailable
from cloud_sync.receiver_intake import MAX_BODY_BYTES, BatchRefused, decode_body

log = structlog.get_logger("cloud_sync.receiver.pull")

PAGE_LIMIT = 500
"""Credits asked for per page (the gateway serves at most 1000): a page is examined in one transaction."""
MAX_PAGES_PER_ROUND = 200
"""Pages from one gateway per round (100 000 credits), so one box's months of backlog cannot starve the rest."""
REQUEST_TIMEOUT_S = 30.0
"""A box on a slow uplink serves a 500-credit page (about 350 kB) in seconds; past this: retried next round."""
CONCURRENCY = 16
"""Gateways pulled at the same time: enough to hide network latency, few enough not to flood the store."""


class PullError(Exception):
    """A gateway's page could not be fetched or understood; the message says which and why."""


@dataclass(frozen=True, slots=True)
class PullSource:
    gateway: str
    url: str
    token: str = field(repr=False)


@dataclass
class GatewayPull:
    """What one round did for one gateway."""

    gateway: str
    pulled: int = 0
    accepted: int = 0
    duplicate: int = 0
    rejected: int = 0
    cursor: int = 0
    error: str | None = None

    def line(self) -> str:
        text = (f"{self.gateway}: pulled {self.pulled} (accepted {self.accepted}, duplicate {self.duplicate}, "
                f"rejected {self.rejected}), cursor {self.cursor}")
        return text + (f"; error: {self.error}" if self.error else "")


def load_sources(path: Path) -> list[PullSource]:
    """The gateways file; :class:`ReceiverConfigError` naming the entry and the problem."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ReceiverConfigError(f"--gateways {path}: cannot read it ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ReceiverConfigError(f"--gateways {path}: not TOML: {exc}") from None
    entries = doc.get("gateway")
    if not isinstance(entries, list) or not entries:
        raise ReceiverConfigError(f"--gateways {path}: expected one [[gateway]] table per gateway "
                                  "(id, url, token_file)")
    sources, seen = [], set()
    for n, entry in enumerate(entries, 1):
        where = f"--gateways {path}: gateway #{n}"
        if not isinstance(entry, dict) or set(entry) != {"id", "url", "token_file"}:
            raise ReceiverConfigError(f"{where}: needs exactly id, url and token_file")
        gateway, url, token_file = entry["id"], entry["url"], entry["token_file"]
        try:
            check_gateway_id(str(gateway))
        except EnrolmentError as exc:
            raise ReceiverConfigError(f"{where}: {exc}") from None
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ReceiverConfigError(f"{where}: url must be the box's web API, http(s)://host:port")
        if gateway in seen:
            raise ReceiverConfigError(f"{where}: gateway {gateway!r} is listed twice")
        seen.add(gateway)
        token_path = (path.parent / str(token_file)).resolve()
        try:
            token = token_path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ReceiverConfigError(f"{where}: token_file {token_path}: cannot read it ({exc})") from None
        if not token:
            raise ReceiverConfigError(f"{where}: token_file {token_path} is empty; copy the box's web.token into it")
        sources.append(PullSource(str(gateway), url.rstrip("/"), token))
    return sources


def parse_page(raw: bytes, after: int) -> tuple[list[tuple[int, Any]], bool]:
    """A pull page as (cursor, wire item) pairs in increasing cursor order, and whether more follow."""
    try:
        doc = decode_body(raw)
    except BatchRefused as exc:
        raise PullError(f"the page is not JSON: {exc.message}") from None
    if type(doc) is not dict or type(doc.get("credits")) is not list or type(doc.get("more")) is not bool:
        raise PullError("the page is not {credits: [...], next_cursor, more}")
    page: list[tuple[int, Any]] = []
    last = after
    for entry in doc["credits"]:
        if type(entry) is not dict or not is_int64(entry.get("cursor")) or "item" not in entry:
            raise PullError("a page entry is not {cursor: integer, item: credit}")
        if entry["cursor"] <= last:
            raise PullError(f"cursors must increase past {after}: got {entry['cursor']} after {last}")
        last = entry["cursor"]
        page.append((last, entry["item"]))
    return page, bool(doc["more"]) and bool(page)


async def _fetch(http: httpx.AsyncClient, source: PullSource, after: int, limit: int) -> bytes:
    try:
        async with http.stream("GET", f"{source.url}/api/v1/credits", params={"after": after, "limit": limit},
                               headers={"Authorization": f"Bearer {source.token}"}) as response:
            if response.status_code != 200:
                text = (await response.aread())[:300].decode("utf-8", "replace")
                hint = "; check its token_file (the box's web.token)" if response.status_code == 401 else ""
                raise PullError(f"HTTP {response.status_code} from {source.url}: {text}{hint}")
            chunks, size = [], 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise PullError(f"the page from {source.url} is over {MAX_BODY_BYTES} bytes")
                chunks.append(chunk)
            return b"".join(chunks)
    except httpx.HTTPError as exc:
        raise PullError(f"{type(exc).__name__} from {source.url}: {exc}") from None


async def pull_gateway(store: CreditStore, http: httpx.AsyncClient, source: PullSource, *,
                       limit: int = PAGE_LIMIT, max_pages: int = MAX_PAGES_PER_ROUND) -> GatewayPull:
    """Pull one gateway until it has nothing more (or a credit is rejected, or the round's pages are spent)."""
    done = GatewayPull(source.gateway)
    try:
        done.cursor = await store.pull_cursor(source.gateway)
        for _ in range(max_pages):
            page, more = parse_page(await _fetch(http, source, done.cursor, limit), done.cursor)
            if not page:
                break
            outcome = await store.ingest_pull(source.gateway, done.cursor, page)
            done.pulled += len(page)
            for status in ("accepted", "duplicate", "rejected"):
                setattr(done, status, getattr(done, status) + outcome.result[status])
            done.cursor = outcome.cursor
            if outcome.stopped:
                first = next(r for r in outcome.result["results"] if r["status"] == "rejected")
                done.error = (f"credit {first['meter']}#{first['seq']} rejected ({first['reason']}: "
                              f"{first['detail']}); pulling resumes there next round")
                log.error("pull_rejected", gateway=source.gateway, cursor=done.cursor, reason=first["reason"],
                          detail=first["detail"])
                break
            if not more:
                break
    except (PullError, StoreUnavailable) as exc:
        done.error = str(exc)
        log.warning("pull_failed", gateway=source.gateway, cursor=done.cursor, error=done.error)
    except BatchRefused as exc:  # not enrolled, or revoked
        done.error = exc.message
        log.warning("pull_refused", gateway=source.gateway, error=exc.message)
    else:
        log.info("pull_done", gateway=source.gateway, pulled=done.pulled, accepted=done.accepted,
                 duplicate=done.duplicate, cursor=done.cursor)
    return done


async def pull_round(store: CreditStore, sources: list[PullSource], *, limit: int = PAGE_LIMIT,
                     concurrency: int = CONCURRENCY, max_pages: int = MAX_PAGES_PER_ROUND) -> list[GatewayPull]:
    """One pass over every gateway, ``concurrency`` at a time; one result per gateway, in file order."""
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S) as http:
        async def one(source: PullSource) -> GatewayPull:
            async with gate:
                return await pull_gateway(store, http, source, limit=limit, max_pages=max_pages)
        async with asyncio.TaskGroup() as tasks:
            running = [tasks.create_task(one(s)) for s in sources]
    return [t.result() for t in running]
