"""Scripted Horizon faults, for tests of clients that must survive them.

A :class:`FaultPlan` holds rules; a rule names a path (exact, or a prefix ending in ``*``), an
optional method, and the faults its matching requests get, in order (``repeat`` cycles them;
otherwise requests after the script are served normally). Modes:

* ``503`` — answer 503 ``server_over_capacity`` *without* applying anything;
* ``429`` — answer 429 ``rate_limit_exceeded`` with ``Retry-After``, without applying;
* ``504_after`` — apply the request, then answer 504 ``timeout`` (the answer is lost);
* ``reset_after`` — apply the request, then reset the TCP connection (RST, no answer at all);
* ``reset_before`` — reset the connection without applying;
* ``ok`` — serve normally (a gap in a script).

Every request is counted per path, and every fault delivered per path and mode, so a test can
check it met the faults it scripted. Configure with the constructor, ``serve_ledger(faults=…)``,
``--faults FILE`` (a JSON list of rules), or at run time: ``POST /_ledger/faults`` (a rule as
JSON), ``DELETE /_ledger/faults``, ``GET /_ledger/faults`` (rules and counters).
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

import structlog

from cloud_sync.horizon import responses

log = structlog.get_logger("cloud_sync.horizon.faults")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ADMIN_PREFIX = "/_ledger/"


class FaultMode(StrEnum):
    OK = "ok"
    UNAVAILABLE_503 = "503"
    RATE_LIMITED_429 = "429"
    TIMEOUT_504_AFTER = "504_after"
    RESET_AFTER = "reset_after"
    RESET_BEFORE = "reset_before"


@dataclass(frozen=True, slots=True)
class FaultRule:
    path: str
    modes: tuple[FaultMode, ...]
    method: str | None = None
    repeat: bool = False
    retry_after_s: int = 1

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method.upper() != method:
            return False
        return path.startswith(self.path[:-1]) if self.path.endswith("*") else path == self.path

    @classmethod
    def from_json(cls, doc: Any) -> FaultRule:
        """Build a rule from ``{"path": …, "modes": [...], "method"?, "repeat"?, "retry_after_s"?}``."""
        if not isinstance(doc, dict) or not isinstance(doc.get("path"), str) or not doc["path"].startswith("/"):
            raise ValueError('a fault rule needs "path" (starting with /) and "modes"')
        modes = doc.get("modes", [doc["mode"]] if "mode" in doc else None)
        if not isinstance(modes, list) or not modes:
            raise ValueError('"modes" must be a non-empty list, e.g. ["504_after", "ok"]')
        try:
            parsed = tuple(FaultMode(m) for m in modes)
        except ValueError:
            raise ValueError(f"unknown fault mode in {modes}; use {[m.value for m in FaultMode]}") from None
        retry = doc.get("retry_after_s", 1)
        if not isinstance(retry, int) or retry < 0:
            raise ValueError('"retry_after_s" must be a whole number of seconds')
        method = doc.get("method")
        return cls(doc["path"], parsed, method.upper() if isinstance(method, str) else None,
                   bool(doc.get("repeat", False)), retry)


@dataclass
class _Script:
    rule: FaultRule
    position: int = 0


class FaultPlan:
    """Rules plus counters; safe to use from the server's threads and the test's."""

    def __init__(self, rules: Iterable[FaultRule] = ()) -> None:
        self._lock = threading.Lock()
        self.rules = list(rules)
        self._scripts = [_Script(r) for r in self.rules]
        self.seen: Counter[str] = Counter()
        self.delivered: defaultdict[str, Counter[str]] = defaultdict(Counter)

    def add(self, rule: FaultRule) -> None:
        with self._lock:
            self.rules.append(rule)
            self._scripts.append(_Script(rule))

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()
            self._scripts.clear()

    def next_fault(self, method: str, path: str) -> tuple[FaultMode, FaultRule | None]:
        with self._lock:
            self.seen[path] += 1
            for script in self._scripts:
                if not script.rule.matches(method, path):
                    continue
                modes = script.rule.modes
                if script.position >= len(modes) and not script.rule.repeat:
                    continue
                mode = modes[script.position % len(modes)]
                script.position += 1
                if mode is not FaultMode.OK:
                    self.delivered[path][mode.value] += 1
                return mode, script.rule
            return FaultMode.OK, None

    def count(self, path: str, mode: FaultMode | str) -> int:
        with self._lock:
            return self.delivered[path][FaultMode(mode).value]

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"rules": [{**asdict(r), "modes": [m.value for m in r.modes]} for r in self.rules],
                    "seen": dict(self.seen), "delivered": {p: dict(c) for p, c in self.delivered.items()}}


async def _discard(message: Message) -> None:
    return None


def _reset(send: Send) -> None:
    """Abort the request's TCP connection with a RST (SO_LINGER 0), as a crashed proxy would."""
    owner = getattr(send, "__self__", None)
    transport = getattr(owner, "transport", None)
    if not isinstance(transport, asyncio.Transport):
        raise RuntimeError("connection-reset faults need the ledger to run under uvicorn (its h11 or httptools "
                           "protocol); this server does not expose the connection")
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class FaultInjector:
    """ASGI wrapper that applies the plan to every request except the admin paths."""

    def __init__(self, app: ASGIApp, plan: FaultPlan) -> None:
        self.app = app
        self.plan = plan

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(ADMIN_PREFIX):
            await self.app(scope, receive, send)
            return
        mode, rule = self.plan.next_fault(scope["method"], scope["path"])
        if mode is FaultMode.OK:
            await self.app(scope, receive, send)
            return
        log.info("horizon.fault", path=scope["path"], method=scope["method"], mode=mode.value)
        if mode is FaultMode.UNAVAILABLE_503:
            await responses.server_over_capacity()(scope, receive, send)
        elif mode is FaultMode.RATE_LIMITED_429:
            assert rule is not None
            await responses.rate_limit_exceeded(rule.retry_after_s)(scope, receive, send)
        elif mode is FaultMode.TIMEOUT_504_AFTER:
            await self.app(scope, receive, _discard)
            await responses.timeout()(scope, receive, send)
        elif mode is FaultMode.RESET_AFTER:
            await self.app(scope, receive, _discard)
            _reset(send)
            await asyncio.sleep(0)  # let uvicorn see the connection lost before the app returns
        else:
            _reset(send)
            await asyncio.sleep(0)
