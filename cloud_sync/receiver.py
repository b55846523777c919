"""Reference receiver for the central billing API (``openapi.yaml``).

A small, complete implementation of the contract, used by the demo and the
tests and as a model for a real central system: it verifies every credit
(signature against the enrolled gateway key, hash, sequence continuity and
chain link) and stores each (gateway, meter, seq) exactly once, however often
a gateway resends it.

Run it on its own::

    python -m cloud_sync.receiver --db receiver.db --port 8081 \
        --enroll gw-0001=GABC... --token-file token.txt
"""

from __future__ import annotations

import argparse
import hashlib
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cloud_sync.credit import ChainTip, CreditRejected, Rejection, parse_wire, verify

MAX_BODY_BYTES = 16 * 1024 * 1024

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
"""


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

    def _tip(self, gateway: str, meter: str) -> ChainTip | None:
        row = self._db.execute(
            "SELECT seq, hash FROM credits WHERE gateway=? AND meter=? ORDER BY seq DESC LIMIT 1",
            (gateway, meter)).fetchone()
        return ChainTip(row[0], row[1]) if row else None

    def ingest(self, gateway: str, batch_key: str, raw: bytes, credits: list[Any]) -> dict[str, Any]:
        digest = hashlib.sha256(raw).hexdigest()
        with self._lock:
            prior = self._db.execute(
                "SELECT request_sha256, response FROM batches WHERE gateway=? AND batch_key=?",
                (gateway, batch_key)).fetchone()
            if prior and prior[0] == digest:
                replay: dict[str, Any] = json.loads(prior[1])
                # A stored answer that rejected something is not final: the cause may be fixed by now
                # (enrolment, a predecessor delivered since). Evaluating again is safe, because every
                # credit is stored at most once and answers `duplicate` when seen again.
                if not replay.get("rejected"):
                    replay["replayed"] = True
                    return replay
            now_ms = int(time.time() * 1000)
            results: list[dict[str, Any]] = []
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for item in credits:
                    results.append(self._one(gateway, item, now_ms))
                counts = {s: sum(1 for r in results if r["status"] == s) for s in ("accepted", "duplicate", "rejected")}
                response = {"batch": batch_key, "results": results, **counts}
                self._db.execute(
                    "INSERT OR REPLACE INTO batches VALUES (?,?,?,?,?)",
                    (gateway, batch_key, digest, json.dumps(response), now_ms))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return response

    def _one(self, gateway: str, item: Any, now_ms: int) -> dict[str, Any]:
        try:
            body, digest, _ = parse_wire(item)
            if body["gateway"] != gateway:
                raise CreditRejected(Rejection.MALFORMED, "credit names another gateway than its batch")
            meter, seq = body["meter"], body["seq"]
            stored = self._db.execute(
                "SELECT hash FROM credits WHERE gateway=? AND meter=? AND seq=?", (gateway, meter, seq)).fetchone()
            if stored:
                if stored[0] == digest:
                    return {"meter": meter, "seq": seq, "status": "duplicate"}
                raise CreditRejected(Rejection.REPLAY, f"seq {seq} was already accepted with different content")
            body, digest = verify(item, expected_key=self.enrolled.get(gateway), tip=self._tip(gateway, meter))
        except CreditRejected as exc:
            fields = item.get("credit") if isinstance(item, dict) else None
            meter_id = fields.get("meter") if isinstance(fields, dict) else None
            seq_no = fields.get("seq") if isinstance(fields, dict) else None
            return {"meter": meter_id, "seq": seq_no, "status": "rejected", "reason": exc.reason.value,
                    "detail": exc.detail}
        self._db.execute(
            "INSERT INTO credits VALUES (?,?,?,?,?,?,?,?)",
            (gateway, meter, seq, digest, body["wh"], body["start"], json.dumps(item), now_ms))
        return {"meter": meter, "seq": seq, "status": "accepted"}

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


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(store: ReceiverStore, token: str | None) -> Starlette:
    def authorised(request: Request) -> bool:
        if token is None:
            return True
        given = request.headers.get("authorization", "")
        return secrets.compare_digest(given.encode(), f"Bearer {token}".encode())

    async def post_batch(request: Request) -> Response:
        if not authorised(request):
            return _error(401, "missing or wrong bearer token")
        key = request.headers.get("idempotency-key")
        if not key:
            return _error(400, "Idempotency-Key header is required")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return _error(413, "batch too large")
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_BODY_BYTES:
                return _error(413, "batch too large")
        try:
            doc = json.loads(raw)
        except json.JSONDecodeError:
            return _error(400, "body is not JSON")
        if not isinstance(doc, dict) or not isinstance(doc.get("gateway"), str) \
                or not isinstance(doc.get("credits"), list) or doc.get("batch") != key:
            return _error(400, "expected {gateway, batch (= Idempotency-Key), credits: [...]}")
        if doc["gateway"] not in store.enrolled:
            return _error(403, f"gateway {doc['gateway']!r} is not enrolled")
        result = await run_in_threadpool(store.ingest, doc["gateway"], key, raw, doc["credits"])
        return JSONResponse(result)

    async def get_credits(request: Request) -> Response:
        if not authorised(request):
            return _error(401, "missing or wrong bearer token")
        gateway, meter = request.path_params["gateway"], request.path_params["meter"]
        return JSONResponse({"credits": await run_in_threadpool(store.credits, gateway, meter)})

    async def get_summary(request: Request) -> Response:
        if not authorised(request):
            return _error(401, "missing or wrong bearer token")
        return JSONResponse({"meters": await run_in_threadpool(store.summary)})

    async def healthz(_: Request) -> Response:
        return JSONResponse({"ok": True})

    return Starlette(routes=[
        Route("/v1/batches", post_batch, methods=["POST"]),
        Route("/v1/gateways/{gateway}/meters/{meter}/credits", get_credits),
        Route("/v1/summary", get_summary),
        Route("/healthz", healthz),
    ])


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m cloud_sync.receiver", description=__doc__.split("\n")[0])
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--listen", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--enroll", action="append", default=[], metavar="GATEWAY=GKEY",
                        help="accept credits from this gateway id signed by this public key (repeatable)")
    parser.add_argument("--token-file", type=Path, help="require this bearer token")
    args = parser.parse_args(argv)
    enrolled = dict(item.split("=", 1) for item in args.enroll)
    token = args.token_file.read_text().strip() if args.token_file else None
    store = ReceiverStore(args.db, enrolled)
    uvicorn.run(create_app(store, token), host=args.listen, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
