"""Reference receiver for the central billing API (``openapi.yaml``).

A small, complete implementation of the contract, used by the demo and the
tests and as a model for a real central system: it verifies every credit
(signature against the enrolled gateway key, hash, every field's domain,
sequence continuity, chain link and the interval's history; see
:mod:`cloud_sync.credit`) and stores each (gateway, meter, seq) exactly once,
however often a gateway resends it. What it decides about a request is in
:mod:`cloud_sync.receiver_intake` (pure); this module stores (SQLite) and serves (HTTP).

Run it on its own::

    python -m cloud_sync.receiver --db receiver.db --port 8081 \
        --enroll gw-0001=GABC... --token-file token.txt

Every request but ``/healthz`` needs ``Authorization: Bearer <token>``. Only
tests may run it without (``--insecure-no-auth``, which says so on stderr).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import secrets
import sqlite3
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from stellar_sdk import Keypair

from cloud_sync.credit import KEY_PATTERN, ChainTip, Credited, is_id
from cloud_sync.receiver_intake import (
    MAX_BODY_BYTES,
    Batch,
    BatchRefused,
    IdempotencyConflict,
    check_content_type,
    check_idempotency_key,
    decode_body,
    examine_batch,
    parse_batch,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS credits (
    gateway TEXT NOT NULL, meter TEXT NOT NULL, seq INTEGER NOT NULL,
    hash TEXT NOT NULL, wh INTEGER NOT NULL, start INTEGER NOT NULL,
    wire TEXT NOT NULL, received_ms INTEGER NOT NULL,
    PRIMARY KEY (gateway, meter, seq)
);
CREATE TABLE IF NOT EXISTS batches (
    gateway TEXT NOT NULL, batch_key TEXT NOT NULL, request_sha256 TEXT NOT NULL,
    response TEXT NOT NULL, received_ms INTEGER NOT NULL,
    PRIMARY KEY (gateway, batch_key)
);
-- The credits of one quarter-hour, to check that corrections add up (built on first open of an older file).
CREATE INDEX IF NOT EXISTS credits_by_start ON credits (gateway, meter, start);
"""


class ReceiverConfigError(Exception):
    """The receiver cannot run as configured; the message says what to change."""


class _SqliteView:
    """One gateway's credits inside the current transaction (see :class:`CreditView`)."""

    def __init__(self, db: sqlite3.Connection, gateway: str, now_ms: int) -> None:
        self._db, self._gateway, self._now_ms = db, gateway, now_ms

    def stored(self, meter: str, seq: int) -> dict[str, Any] | None:
        row = self._db.execute("SELECT wire FROM credits WHERE gateway=? AND meter=? AND seq=?",
                               (self._gateway, meter, seq)).fetchone()
        return json.loads(row[0]) if row else None

    def tip(self, meter: str) -> ChainTip | None:
        row = self._db.execute(
            "SELECT seq, hash FROM credits WHERE gateway=? AND meter=? ORDER BY seq DESC LIMIT 1",
            (self._gateway, meter)).fetchone()
        return ChainTip(row[0], row[1]) if row else None

    def credited(self, meter: str, start: int) -> Sequence[Credited]:
        rows = self._db.execute("SELECT seq, wh, wire FROM credits WHERE gateway=? AND meter=? AND start=?",
                                (self._gateway, meter, start)).fetchall()
        return [Credited(seq, json.loads(wire)["credit"]["kind"], wh) for seq, wh, wire in rows]

    def add(self, body: dict[str, Any], digest: str, item: dict[str, Any]) -> None:
        self._db.execute("INSERT INTO credits VALUES (?,?,?,?,?,?,?,?)",
                         (self._gateway, body["meter"], body["seq"], digest, body["wh"], body["start"],
                          json.dumps(item), self._now_ms))


class ReceiverStore:
    """SQLite storage of verified credits; one lock makes each batch atomic."""

    def __init__(self, path: Path, enrolled: Mapping[str, str]) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self.enrolled = dict(enrolled)

    def close(self) -> None:
        self._db.close()

    def ingest(self, gateway: str, batch_key: str, raw: bytes, credits: list[Any]) -> dict[str, Any]:
        """Examine and store one batch in one transaction; return its ``BatchResult``.

        Raises :class:`IdempotencyConflict` when ``batch_key`` was answered before
        for other bytes: that answer stands, nothing is examined.
        """
        digest = hashlib.sha256(raw).hexdigest()
        with self._lock:
            prior = self._db.execute(
                "SELECT request_sha256, response FROM batches WHERE gateway=? AND batch_key=?",
                (gateway, batch_key)).fetchone()
            if prior and prior[0] != digest:
                raise IdempotencyConflict(batch_key)
            if prior:
                replay: dict[str, Any] = json.loads(prior[1])
                # A stored answer that rejected something is not final: the cause may be fixed by now
                # (enrolment, a predecessor delivered since). Evaluating the same bytes again is safe,
                # because every credit is stored at most once and answers `duplicate` when seen again.
                if not replay.get("rejected"):
                    replay["replayed"] = True
                    return replay
            now_ms = int(time.time() * 1000)
            self._db.execute("BEGIN IMMEDIATE")
            try:
                response = examine_batch(Batch(gateway, batch_key, credits), self.enrolled.get(gateway),
                                         _SqliteView(self._db, gateway, now_ms))
                self._db.execute("INSERT OR REPLACE INTO batches VALUES (?,?,?,?,?)",
                                 (gateway, batch_key, digest, json.dumps(response), now_ms))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return response

    def credits(self, gateway: str, meter: str) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT wire FROM credits WHERE gateway=? AND meter=? ORDER BY seq", (gateway, meter)).fetchall()
        return [json.loads(w) for (w,) in rows]

    def summary(self) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT gateway, meter, COUNT(*), MIN(seq), MAX(seq), SUM(wh) FROM credits GROUP BY gateway, meter"
        ).fetchall()
        return [{"gateway": g, "meter": m, "credits": n, "first_seq": a, "last_seq": b, "wh": wh}
                for g, m, n, a, b, wh in rows]


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _unauthorised() -> JSONResponse:
    return _error(401, "missing or wrong bearer token", {"WWW-Authenticate": 'Bearer realm="billing"'})


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


def create_app(store: ReceiverStore, token: str | None, *, insecure_no_auth: bool = False) -> Starlette:
    """The HTTP API of ``store``. ``token`` is required; ``insecure_no_auth`` (tests only) lets anyone in."""
    if token is None and not insecure_no_auth:
        raise ReceiverConfigError("the receiver needs a bearer token (or insecure_no_auth=True, for tests only)")
    if token is not None and (not token or token != token.strip()):
        raise ReceiverConfigError("the bearer token must be non-empty, without surrounding whitespace")
    expected = f"Bearer {token}".encode() if token is not None else None

    def authorised(request: Request) -> bool:
        if expected is None:
            return True
        given = request.headers.get("authorization", "").encode("latin-1")
        return secrets.compare_digest(given, expected)

    async def post_batch(request: Request) -> Response:
        if not authorised(request):
            return _unauthorised()
        try:
            check_content_type(request.headers.get("content-type"))
            key = check_idempotency_key(request.headers.get("idempotency-key"))
            raw = await _read_body(request)
            batch = parse_batch(await run_in_threadpool(decode_body, raw), key)
            if batch.gateway not in store.enrolled:
                raise BatchRefused(403, f"gateway {batch.gateway!r} is not enrolled")
            result = await run_in_threadpool(store.ingest, batch.gateway, key, raw, batch.credits)
        except BatchRefused as exc:
            return _error(exc.status, exc.message)
        except sqlite3.OperationalError as exc:  # locked, disk full, I/O error: nothing was committed
            return _error(503, f"storage unavailable ({exc}); retry later", {"Retry-After": "5"})
        return JSONResponse(result)

    async def get_credits(request: Request) -> Response:
        if not authorised(request):
            return _unauthorised()
        gateway, meter = request.path_params["gateway"], request.path_params["meter"]
        if not (is_id(gateway) and is_id(meter)):
            return JSONResponse({"credits": []})  # no credit is ever stored under such ids
        return JSONResponse({"credits": await run_in_threadpool(store.credits, gateway, meter)})

    async def get_summary(request: Request) -> Response:
        if not authorised(request):
            return _unauthorised()
        return JSONResponse({"meters": await run_in_threadpool(store.summary)})

    async def healthz(_: Request) -> Response:
        return JSONResponse({"ok": True})

    return Starlette(routes=[
        Route("/v1/batches", post_batch, methods=["POST"]),
        Route("/v1/gateways/{gateway}/meters/{meter}/credits", get_credits, methods=["GET"]),
        Route("/v1/summary", get_summary, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
    ])


def _enrolment(entries: list[str]) -> dict[str, str]:
    enrolled: dict[str, str] = {}
    for entry in entries:
        gateway, sep, key = entry.partition("=")
        if not sep or not is_id(gateway):
            raise ReceiverConfigError(f"--enroll {entry!r}: expected GATEWAY=GKEY, GATEWAY being the gateway_id "
                                      "(1-64 of A-Z a-z 0-9 _ . -)")
        try:
            if not re.fullmatch(KEY_PATTERN, key):
                raise ValueError(key)
            Keypair.from_public_key(key)
        except ValueError:
            raise ReceiverConfigError(f"--enroll {entry!r}: {key!r} is not a public key; use what "
                                      "`meter-gateway identity` prints (G...)") from None
        if gateway in enrolled:
            raise ReceiverConfigError(f"--enroll: gateway {gateway!r} is enrolled twice")
        enrolled[gateway] = key
    return enrolled


def _token(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ReceiverConfigError(f"--token-file {path}: cannot read it ({exc})") from None
    if not token:
        raise ReceiverConfigError(f"--token-file {path} is empty; write the bearer token the gateways send into it")
    return token


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m cloud_sync.receiver", description=__doc__.split("\n")[0])
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--listen", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--enroll", action="append", default=[], metavar="GATEWAY=GKEY",
                        help="accept credits from this gateway id signed by this public key (repeatable)")
    parser.add_argument("--token-file", type=Path, help="file holding the bearer token every request must carry")
    parser.add_argument("--insecure-no-auth", action="store_true",
                        help="accept requests without any token: for tests on loopback only, never in production")
    args = parser.parse_args(argv)
    if args.token_file and args.insecure_no_auth:
        parser.error("give either --token-file or --insecure-no-auth, not both")
    if not args.token_file and not args.insecure_no_auth:
        parser.error("--token-file is required: a file holding the bearer token the gateways send "
                     "(--insecure-no-auth runs without authentication, for tests only)")
    try:
        enrolled = _enrolment(args.enroll)
        token = _token(args.token_file) if args.token_file else None
    except ReceiverConfigError as exc:
        parser.error(str(exc))
    if token is None:
        print("WARNING: receiver running with no authentication (--insecure-no-auth): anyone who can reach "
              f"{args.listen}:{args.port} may submit and read credits; use --token-file outside tests",
              file=sys.stderr, flush=True)
    try:
        store = ReceiverStore(args.db, enrolled)
    except sqlite3.Error as exc:
        print(f"error: cannot open the receiver database {args.db}: {exc}", file=sys.stderr)
        return 1
    uvicorn.run(create_app(store, token, insecure_no_auth=token is None), host=args.listen, port=args.port,
                log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
