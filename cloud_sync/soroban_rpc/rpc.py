"""The JSON-RPC 2.0 shell over :class:`SorobanNode`, with method-level fault injection.

Faults (:class:`RpcFaults`) are scripted per method, like the Horizon stand-in's per path, and
optionally random with a fixed seed (repeatable). Modes:

* ``503`` — HTTP 503, nothing applied;
* ``try_again_later`` — ``sendTransaction`` answers TRY_AGAIN_LATER, nothing applied;
* ``timeout_after`` — the request is applied, then the answer is replaced by HTTP 504 (the
  client never learns that the contract applied);
* ``hang_after`` — the request is applied, then the answer is held :data:`HANG_S` seconds (a client
  with a shorter timeout gives up first) and finally replaced by HTTP 504;
* ``ok`` — a gap in a script.

Configure with ``RpcFaults([...])``, ``--faults FILE`` (JSON list of
``{"method", "modes", "repeat"?}`` or ``{"method", "mode", "probability", "seed"}``) or at run time
with the JSON-RPC methods ``_faults.add`` / ``_faults.clear`` / ``_faults.get``.
"""

from __future__ import annotations

import asyncio
import base64
import random
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from stellar_sdk import xdr

from cloud_sync.horizon.ledger import PROTOCOL_VERSION
from cloud_sync.soroban_rpc.node import RpcInvalidParams, SorobanNode

log = structlog.get_logger("cloud_sync.soroban_rpc.rpc")

MODES = ("ok", "503", "try_again_later", "timeout_after", "hang_after")
HANG_S = 3.0
"""How long ``hang_after`` holds an answer: longer than the client timeouts the tests set."""
RETENTION_LEDGERS = 17_280


@dataclass
class FaultRule:
    method: str
    modes: tuple[str, ...] = ()
    repeat: bool = False
    probability: float = 0.0
    mode: str = "ok"
    seed: int = 0
    position: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        for m in (*self.modes, self.mode):
            if m not in MODES:
                raise ValueError(f"unknown fault mode {m!r}; use one of {MODES}")
        self.rng = random.Random(self.seed)

    @classmethod
    def from_json(cls, doc: Any) -> FaultRule:
        if not isinstance(doc, dict) or not isinstance(doc.get("method"), str):
            raise ValueError('a fault rule needs "method" (e.g. "sendTransaction")')
        return cls(doc["method"], tuple(doc.get("modes", ())), bool(doc.get("repeat", False)),
                   float(doc.get("probability", 0.0)), str(doc.get("mode", "ok")), int(doc.get("seed", 0)))

    def next(self) -> str | None:
        if self.modes:
            if self.position >= len(self.modes) and not self.repeat:
                return None
            mode = self.modes[self.position % len(self.modes)]
            self.position += 1
            return mode
        return self.mode if self.rng.random() < self.probability else None


class RpcFaults:
    def __init__(self, rules: list[FaultRule] | None = None) -> None:
        self._lock = threading.Lock()
        self.rules = list(rules or [])
        self.delivered: Counter[str] = Counter()
        self.calls: list[str] = []
        """Every method asked for, in order (so a test can tell what a client did first after a restart)."""

    def add(self, rule: FaultRule) -> None:
        with self._lock:
            self.rules.append(rule)

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def next(self, method: str) -> str:
        with self._lock:
            self.calls.append(method)
            for rule in self.rules:
                if rule.method == method and (mode := rule.next()) is not None:
                    if mode != "ok":
                        self.delivered[f"{method}:{mode}"] += 1
                    return mode
            return "ok"


def _ok(rid: Any, result: dict[str, Any]) -> JSONResponse:
    return JSONResponse({"jsonrpc": "2.0", "id": rid, "result": result})


def _err(rid: Any, code: int, message: str) -> JSONResponse:
    return JSONResponse({"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message}})


def create_rpc_app(node: SorobanNode, faults: RpcFaults) -> Starlette:
    ledger = node.ledger

    def latest() -> dict[str, Any]:
        info = ledger.latest_closed()
        return {"latestLedger": info.sequence, "latestLedgerCloseTime": str(info.closed_at),
                "oldestLedger": max(1, info.sequence - RETENTION_LEDGERS),
                "oldestLedgerCloseTime": str(ledger.close_time(max(1, info.sequence - RETENTION_LEDGERS)))}

    def call(method: str, params: dict[str, Any]) -> dict[str, Any]:
        if method == "getHealth":
            lt = latest()
            return {"status": "healthy", "latestLedger": lt["latestLedger"], "oldestLedger": lt["oldestLedger"],
                    "ledgerRetentionWindow": RETENTION_LEDGERS}
        if method == "getNetwork":
            return {"passphrase": ledger.network_passphrase, "protocolVersion": PROTOCOL_VERSION}
        if method == "getLatestLedger":
            info = ledger.latest_closed()
            return {"id": info.hash(), "protocolVersion": PROTOCOL_VERSION, "sequence": info.sequence,
                    "closeTime": str(info.closed_at), "headerXdr": "", "metadataXdr": ""}
        if method == "getLedgerEntries":
            entries = []
            for key_b64 in _param(params, "keys", list):
                try:
                    key = xdr.LedgerKey.from_xdr(key_b64)
                except (ValueError, TypeError, IndexError):
                    raise RpcInvalidParams(f"cannot decode ledger key {key_b64!r}") from None
                entry = node.account_entry(key)
                if entry is not None:
                    entries.append({"key": key_b64, "xdr": entry[0], "lastModifiedLedgerSeq": entry[1]})
            return {"entries": entries, "latestLedger": latest()["latestLedger"]}
        if method == "simulateTransaction":
            return node.simulate(_param(params, "transaction", str))
        if method == "sendTransaction":
            sent = node.send(_param(params, "transaction", str))
            lt = latest()
            out: dict[str, Any] = {"status": sent.status, "hash": sent.hash, "latestLedger": lt["latestLedger"],
                                   "latestLedgerCloseTime": lt["latestLedgerCloseTime"]}
            if sent.error_result_xdr is not None:
                out["errorResultXdr"] = sent.error_result_xdr
            return out
        if method == "getTransaction":
            tx_hash = _param(params, "hash", str)
            found = node.transaction(tx_hash)
            return {**latest(), "txHash": tx_hash, **(found or {"status": "NOT_FOUND"})}
        raise LookupError(method)

    async def endpoint(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return _err(None, -32700, "parse error: the body is not JSON")
        if not isinstance(body, dict) or body.get("jsonrpc") != "2.0" or not isinstance(body.get("method"), str):
            return _err(body.get("id") if isinstance(body, dict) else None, -32600, "not a JSON-RPC 2.0 request")
        rid, method = body.get("id"), body["method"]
        params = body.get("params") or {}
        if method.startswith("_faults."):
            return _admin(rid, method, params)
        mode = faults.next(method)
        if mode == "503":
            log.info("soroban.fault", method=method, mode=mode)
            return Response("service unavailable", status_code=503)
        if mode == "try_again_later" and method == "sendTransaction":
            log.info("soroban.fault", method=method, mode=mode)
            envelope = params.get("transaction", "") if isinstance(params, dict) else ""
            return _ok(rid, {"status": "TRY_AGAIN_LATER", "hash": _hash_of(node, envelope), **latest()})
        try:
            result = await run_in_threadpool(call, method, params if isinstance(params, dict) else {})
        except LookupError:
            return _err(rid, -32601, f"method {method!r} not found")
        except RpcInvalidParams as exc:
            return _err(rid, -32602, str(exc))
        if mode in ("timeout_after", "hang_after"):
            log.info("soroban.fault", method=method, mode=mode)
            if mode == "hang_after":
                await asyncio.sleep(HANG_S)
            return Response("gateway timeout", status_code=504)
        return _ok(rid, result)

    def _admin(rid: Any, method: str, params: Any) -> JSONResponse:
        if method == "_faults.add":
            try:
                faults.add(FaultRule.from_json(params))
            except ValueError as exc:
                return _err(rid, -32602, str(exc))
        elif method == "_faults.clear":
            faults.clear()
        return _ok(rid, {"rules": len(faults.rules), "delivered": dict(faults.delivered)})

    return Starlette(routes=[Route("/", endpoint, methods=["POST"]), Route("/soroban/rpc", endpoint, methods=["POST"])])


def _param(params: dict[str, Any], name: str, kind: type) -> Any:
    value = params.get(name)
    if not isinstance(value, kind):
        raise RpcInvalidParams(f'params.{name} is required ({kind.__name__})')
    return value


def _hash_of(node: SorobanNode, envelope: str) -> str:
    try:
        return node.hash_of(envelope)
    except (RpcInvalidParams, ValueError):
        return base64.b16encode(b"\0" * 32).decode().lower()
