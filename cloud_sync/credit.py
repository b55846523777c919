"""Consumption credits: canonical encoding, signing and verification.

This module is the one definition of what a credit *is* on the wire. The
gateway uses it to produce credits; a central billing system (and the
reference receiver in :mod:`cloud_sync.receiver`) uses it to verify them.
It depends on nothing from the gateway.

Canonical encoding (version 1)
------------------------------
A credit is a JSON object whose values are only strings, integers and null
(no floats anywhere, so every language reproduces the same bytes). Its
canonical bytes are the UTF-8 JSON text with keys sorted, no whitespace and
non-ASCII escaped — ``json.dumps(body, sort_keys=True, separators=(",", ":"),
ensure_ascii=True)``. Fields:

========================  =========================================================
``v``                     encoding version, ``1``
``gateway``               gateway id (as configured)
``gateway_key``           the gateway's ed25519 public key, Stellar ``G...`` form
``meter``                 meter id
``seq``                   per-meter sequence number: 1, 2, 3 … without gaps
``kind``                  ``"interval"`` or ``"correction"``
``corrects``              for a correction, the ``seq`` it corrects; else null
``start`` / ``end``       interval bounds, Unix seconds UTC (``end - start == 900``)
``wh``                    energy in the interval, whole Wh (a correction: the signed delta)
``quality``               NEM12 quality letter: ``A``, ``E``, ``S``, ``F``, ``N``
``register_start_wh``     interpolated register value at ``start``, whole Wh
``register_end_wh``       … at ``end``
``prev_hash``             ``hash`` of this meter's previous credit; 64 zeros for seq 1
``created_ms``            creation time on the gateway, Unix milliseconds
========================  =========================================================

``hash`` = lowercase hex SHA-256 of the canonical bytes. ``signature`` =
base64 ed25519 signature, by the gateway key, of ``DOMAIN + canonical bytes``
where ``DOMAIN = b"meter-gateway/credit/v1\\n"`` (the prefix keeps a credit
signature from ever being valid for any other message signed by the key).
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from stellar_sdk import Keypair
from stellar_sdk.exceptions import BadSignatureError

VERSION = 1
DOMAIN = b"meter-gateway/credit/v1\n"
GENESIS_HASH = "0" * 64

_FIELDS = {
    "v": int, "gateway": str, "gateway_key": str, "meter": str, "seq": int, "kind": str,
    "start": int, "end": int, "wh": int, "quality": str, "register_start_wh": int,
    "register_end_wh": int, "prev_hash": str, "created_ms": int,
}


@dataclass(frozen=True, slots=True)
class CreditBody:
    """The signed content of a credit."""

    gateway: str
    gateway_key: str
    meter: str
    seq: int
    start: int
    end: int
    wh: int
    quality: str
    register_start_wh: int
    register_end_wh: int
    prev_hash: str
    created_ms: int
    kind: str = "interval"
    corrects: int | None = None
    v: int = VERSION

    def canonical(self) -> bytes:
        return canonical_bytes(asdict(self))


@dataclass(frozen=True, slots=True)
class SignedCredit:
    body: CreditBody
    hash: str
    signature: str
    fields: dict[str, Any]
    """The body as a dict, built once (it is both signed and sent)."""

    def to_wire(self) -> dict[str, Any]:
        return {"credit": self.fields, "hash": self.hash, "signature": self.signature}

    def wire_json(self) -> str:
        """The wire form as compact JSON: what the outbox stores and uplinks send byte for byte."""
        return json.dumps(self.to_wire(), separators=(",", ":"))


def canonical_bytes(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def credit_hash(canonical: bytes) -> str:
    return hashlib.sha256(canonical).hexdigest()


def sign(body: CreditBody, keypair: Keypair) -> SignedCredit:
    fields = asdict(body)
    canonical = canonical_bytes(fields)
    signature = base64.b64encode(keypair.sign(DOMAIN + canonical)).decode("ascii")
    return SignedCredit(body, credit_hash(canonical), signature, fields)


class Rejection(StrEnum):
    """Why a credit was refused; stable strings for APIs and logs."""

    MALFORMED = "malformed"
    UNKNOWN_GATEWAY = "unknown_gateway"
    WRONG_KEY = "wrong_key"
    BAD_SIGNATURE = "bad_signature"
    HASH_MISMATCH = "hash_mismatch"
    REPLAY = "replay"
    GAP = "gap"
    CHAIN_BREAK = "chain_break"


class CreditRejected(Exception):
    def __init__(self, reason: Rejection, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class ChainTip:
    """The last verified credit of a meter, as the verifier remembers it."""

    seq: int
    hash: str


def parse_wire(item: Any) -> tuple[dict[str, Any], str, str]:
    """Check the shape of one wire credit; return (body, hash, signature)."""
    if not isinstance(item, dict):
        raise CreditRejected(Rejection.MALFORMED, "a credit must be a JSON object")
    body, digest, signature = item.get("credit"), item.get("hash"), item.get("signature")
    if not isinstance(body, dict) or not isinstance(digest, str) or not isinstance(signature, str):
        raise CreditRejected(Rejection.MALFORMED, "expected keys 'credit' (object), 'hash' and 'signature'")
    for name, kind in _FIELDS.items():
        value = body.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise CreditRejected(Rejection.MALFORMED, f"field {name!r} must be {kind.__name__}")
    if body.get("corrects") is not None and not isinstance(body.get("corrects"), int):
        raise CreditRejected(Rejection.MALFORMED, "field 'corrects' must be an integer or null")
    extra = set(body) - set(_FIELDS) - {"corrects"}
    if extra:
        raise CreditRejected(Rejection.MALFORMED, f"unknown fields {sorted(extra)}")
    if body["v"] != VERSION:
        raise CreditRejected(Rejection.MALFORMED, f"unsupported encoding version {body['v']}")
    return body, digest, signature


def verify(item: Any, *, expected_key: str | None, tip: ChainTip | None) -> tuple[dict[str, Any], str]:
    """Verify one wire credit against the gateway's enrolled key and the meter's chain tip.

    Returns (body, hash) when the credit is the valid next link. ``tip`` is the
    last credit already accepted for this meter (None if none). A credit equal
    to one already accepted is reported as ``REPLAY``; receivers that want
    idempotent retries check for an identical stored credit *before* calling this.
    """
    body, digest, signature = parse_wire(item)
    if expected_key is None:
        raise CreditRejected(Rejection.UNKNOWN_GATEWAY, f"gateway {body['gateway']!r} is not enrolled")
    if body["gateway_key"] != expected_key:
        raise CreditRejected(Rejection.WRONG_KEY, "credit names a key that is not the gateway's enrolled key")
    canonical = canonical_bytes(body)
    try:
        raw_sig = base64.b64decode(signature, validate=True)
        Keypair.from_public_key(expected_key).verify(DOMAIN + canonical, raw_sig)
    except (BadSignatureError, ValueError) as exc:
        raise CreditRejected(Rejection.BAD_SIGNATURE, "signature does not verify (forged or tampered)") from exc
    if credit_hash(canonical) != digest:
        raise CreditRejected(Rejection.HASH_MISMATCH, "hash does not match the signed content")
    seq = body["seq"]
    last_seq = tip.seq if tip else 0
    if seq <= last_seq:
        raise CreditRejected(Rejection.REPLAY, f"seq {seq} already accepted (last is {last_seq})")
    if seq != last_seq + 1:
        raise CreditRejected(Rejection.GAP, f"seq {seq} follows {last_seq}: credits {last_seq + 1}..{seq - 1} missing")
    expected_prev = tip.hash if tip else GENESIS_HASH
    if body["prev_hash"] != expected_prev:
        raise CreditRejected(Rejection.CHAIN_BREAK, "prev_hash does not link to the previous credit")
    return body, digest
