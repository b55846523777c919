"""What the reference receiver decides about a request, apart from how it stores anything (pure).

``POST /v1/batches`` goes through two stages here:

1. the request as a whole (:func:`check_content_type`, :func:`check_idempotency_key`,
   :func:`decode_body`, :func:`parse_batch`): anything wrong with it is refused
   with one documented 4xx (:class:`BatchRefused`) and nothing is stored;
2. each credit on its own (:func:`examine_batch`): a credit that is malformed,
   forged or out of its domain is *rejected in its result* while the others are
   examined as usual. So one junk item (an integer of 5000 digits, a NaN, a
   ``seq`` beyond 64 bits, a wrong type) never costs the batch, and never a 500.

Storage is reached only through :class:`CreditView`, which a store implements
inside its transaction (SQLite: ``cloud_sync.receiver.store_sqlite``, query by
query; PostgreSQL: ``cloud_sync.receiver.snapshot`` over rows fetched up front),
so the verdicts are the same whatever the store.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cloud_sync.credit import (
    CHANNELS,
    DEFAULT_CHANNEL,
    ChainTip,
    Credited,
    CreditRejected,
    Rejection,
    authenticate,
    channel_of,
    check_chain,
    check_domain,
    check_history,
    is_id,
    is_int64,
    parse_wire,
    shown,
)
from cloud_sync.fast_json import loads_fast

MAX_BODY_BYTES = 16 * 1024 * 1024
"""Largest request body read: 5000 credits of about 700 bytes each fit four times over."""
MAX_CREDITS = 5000
"""Most credits in one batch (the contract's ``maxItems``; the gateway's ``batch_size`` is capped to it)."""
MAX_KEY_CHARS = 200
KEY_PATTERN = r"^[\x21-\x7e]{1,200}$"
"""Idempotency-Key: 1-200 visible ASCII characters (the gateway's keys are ``gateway:uplink:first-last``)."""
_KEY = re.compile(KEY_PATTERN)
_BATCH_KEYS = frozenset(("gateway", "batch", "credits"))
_MAX_INT_DIGITS = 20
"""Any integer literal longer than this is outside signed 64-bit range (19 digits and a sign)."""


class BatchRefused(Exception):
    """The request as a whole is refused: nothing of it was stored."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class IdempotencyConflict(BatchRefused):
    """An Idempotency-Key already answered for other bytes: the stored answer stands."""

    def __init__(self, key: str) -> None:
        super().__init__(422, f"Idempotency-Key {key!r} was already used for a different body; a gateway resends "
                              "a batch with the same key only with the same bytes, so this is a different batch "
                              "and needs a key of its own")


class _OversizedInteger:
    """Stands in for an integer literal too long to be any credit's field (see :func:`decode_body`)."""

    __slots__ = ("digits",)

    def __init__(self, digits: int) -> None:
        self.digits = digits

    def __repr__(self) -> str:
        return f"<integer of {self.digits} digits>"


def _bounded_int(literal: str) -> int | _OversizedInteger:
    return int(literal) if len(literal) <= _MAX_INT_DIGITS else _OversizedInteger(len(literal.lstrip("-")))


def check_content_type(value: str | None) -> None:
    media = (value or "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        raise BatchRefused(415, f"Content-Type must be application/json, got {shown(value or '(none)')}")


def check_idempotency_key(value: str | None) -> str:
    if not value:
        raise BatchRefused(400, "the Idempotency-Key header is required")
    if len(value) > MAX_KEY_CHARS:
        raise BatchRefused(400, f"Idempotency-Key is {len(value)} characters long; the limit is {MAX_KEY_CHARS}")
    if not _KEY.fullmatch(value):
        raise BatchRefused(400, "Idempotency-Key must be visible ASCII characters, without spaces")
    return value


def decode_body(raw: bytes) -> Any:
    """The body as JSON (RFC 8259: UTF-8), or :class:`BatchRefused` (400) when it is not JSON.

    Integer literals too long for Python to convert (over 4300 digits) do not
    refuse the body: it is decoded again with such literals replaced by a
    stand-in that fails the type check of whichever credit holds it. NaN and
    Infinity decode to floats, which no field accepts either. orjson decodes the common body
    (:func:`cloud_sync.fast_json.loads_fast`, the same result); the stdlib decides the rest.
    """
    fast = loads_fast(raw)
    if fast is not None:
        return fast
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BatchRefused(400, f"body is not UTF-8 (invalid byte at offset {exc.start}); JSON must be UTF-8") \
            from None
    for parse_int in (None, _bounded_int):
        try:
            return json.loads(text, parse_int=parse_int)
        except json.JSONDecodeError as exc:
            raise BatchRefused(400, f"body is not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") \
                from None
        except RecursionError:
            raise BatchRefused(400, "body is not usable JSON: nested too deeply") from None
        except ValueError:
            continue  # an integer literal beyond Python's conversion limit: decode again, bounded
    raise BatchRefused(400, "body is not usable JSON")  # not reached: the bounded decode raises no ValueError


@dataclass(frozen=True, slots=True)
class Batch:
    gateway: str
    key: str
    credits: list[Any]


def parse_batch(doc: Any, key: str) -> Batch:
    """The batch envelope ``{gateway, batch, credits}``; its credits are examined one by one later."""
    if type(doc) is not dict:
        raise BatchRefused(400, "body must be a JSON object {gateway, batch, credits}")
    if doc.keys() != _BATCH_KEYS:
        missing, extra = sorted(_BATCH_KEYS - doc.keys()), sorted(shown(k) for k in doc.keys() - _BATCH_KEYS)
        parts = [f"missing {missing}" if missing else "",
                 f"unknown properties {', '.join(extra[:5])}" if extra else ""]
        raise BatchRefused(400, "batch must have exactly gateway, batch and credits: "
                                + "; ".join(p for p in parts if p))
    gateway, batch, credits = doc["gateway"], doc["batch"], doc["credits"]
    if not is_id(gateway):
        raise BatchRefused(400, f"gateway must be a gateway id (1-64 of A-Z a-z 0-9 _ . -), got {shown(gateway)}")
    if batch != key:
        raise BatchRefused(400, "the body's batch must equal the Idempotency-Key header")
    if type(credits) is not list:
        raise BatchRefused(400, "credits must be an array")
    if len(credits) > MAX_CREDITS:
        raise BatchRefused(400, f"batch of {len(credits)} credits; the limit is {MAX_CREDITS} (lower the "
                                "gateway's batch_size)")
    return Batch(gateway, key, credits)


class CreditView(Protocol):
    """One gateway's accepted credits, as a store sees them inside the batch's transaction.

    Every question is about one (meter, channel): each is a chain of its own (a v1 credit is
    import). A credit passed to :meth:`add` must be visible to the following calls: later
    credits of the same batch link onto it.
    """

    def stored(self, meter: str, channel: str, seq: int) -> dict[str, Any] | None:
        """The wire credit accepted under (meter, channel, seq), if any."""

    def tip(self, meter: str, channel: str) -> ChainTip | None:
        """The last accepted credit of the meter's channel."""

    def credited(self, meter: str, channel: str, start: int) -> Sequence[Credited]:
        """The accepted credits of the meter's channel for the interval starting at ``start``."""

    def add(self, body: dict[str, Any], digest: str, item: dict[str, Any]) -> None:
        """Store a verified credit."""


def echoed_channel(body: Any) -> str | None:
    """The channel a credit body names, for lookups and results: a v1 body's is import; None when not well-formed."""
    if type(body) is not dict:
        return None
    channel = body.get("channel", DEFAULT_CHANNEL)
    return channel if type(channel) is str and channel in CHANNELS else None


def _echo(item: Any) -> dict[str, Any]:
    """meter, channel and seq of an item for its result: only when they are well-formed, else null."""
    body = item.get("credit") if type(item) is dict else None
    meter = body.get("meter") if type(body) is dict else None
    seq = body.get("seq") if type(body) is dict else None
    return {"meter": meter if is_id(meter) else None, "channel": echoed_channel(body),
            "seq": seq if is_int64(seq) else None}


def examine(item: Any, *, gateway: str, expected_key: str | None, view: CreditView,
            verified: bool = False) -> dict[str, Any]:
    """The result for one credit of ``gateway``'s batch; an accepted one is added to ``view``.

    ``verified``: this very item passed ``authenticate`` against ``expected_key`` already
    (:func:`cloud_sync.receiver.verify.preverify`, several at once), so it is not verified twice.

    A credit stored before under the same (meter, channel, seq) is a ``duplicate`` only
    when it equals the stored one field for field, signature and hash included,
    and names the gateway's enrolled key: then its signature is the one verified
    by that key when it was stored. Otherwise it is rejected (``bad_signature``
    and the like for a tampered copy, ``replay`` for other content the gateway signed).
    """
    try:
        body, digest, signature = parse_wire(item)
        if body["gateway"] != gateway:
            raise CreditRejected(Rejection.MALFORMED, f"credit names gateway {body['gateway']!r}, its batch "
                                                      f"{gateway!r}")
        meter, channel, seq = body["meter"], channel_of(body), body["seq"]
        stored = view.stored(meter, channel, seq)
        if stored is not None and stored == item and body["gateway_key"] == expected_key:
            # Byte for byte the credit stored, whose signature was verified by this key when it was
            # stored: verifying it again would prove nothing more (and cost ~60 µs per resent credit).
            return {"meter": meter, "channel": channel, "seq": seq, "status": "duplicate"}
        if not verified:
            authenticate(body, digest, signature, expected_key)
        if stored is not None:
            raise CreditRejected(Rejection.REPLAY, f"seq {seq} was already accepted with different content")
        check_domain(body)
        check_chain(body, view.tip(meter, channel))
        check_history(body, view.credited(meter, channel, body["start"]))
    except CreditRejected as exc:
        return {**_echo(item), "status": "rejected", "reason": exc.reason.value, "detail": exc.detail}
    view.add(body, digest, item)
    return {"meter": meter, "channel": channel, "seq": seq, "status": "accepted"}


def batch_result(key: str, results: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``BatchResult`` of a batch's per-credit results (in order): the results and the counts."""
    counts = {s: sum(1 for r in results if r["status"] == s) for s in ("accepted", "duplicate", "rejected")}
    return {"batch": key, "results": results, **counts}


def examine_batch(batch: Batch, expected_key: str | None, view: CreditView,
                  verified: Sequence[bool] | None = None) -> dict[str, Any]:
    """The ``BatchResult`` of a batch: one result per credit, in order, and the counts.

    ``verified``: per credit, whether it passed ``authenticate`` already (see :func:`examine`).
    """
    flags = verified if verified is not None else [False] * len(batch.credits)
    return batch_result(batch.key, [examine(item, gateway=batch.gateway, expected_key=expected_key, view=view,
                                            verified=ok)
                                    for item, ok in zip(batch.credits, flags, strict=True)])
