"""Consumption credits: canonical encoding, signing and verification.

This module is the one definition of what a credit *is* on the wire. The
gateway uses it to produce credits; a central billing system (and the
reference receiver in :mod:`cloud_sync.receiver`) uses it to verify them.
It depends on nothing from the gateway, and does no I/O: a receiver hands it
what it has stored (the meter's chain tip, the credits of one interval) and
gets a verdict back, whatever its storage.

Canonical encoding (version 2; version 1 still verifies)
--------------------------------------------------------
A credit is a JSON object whose values are only strings, integers and null
(no floats anywhere, so every language reproduces the same bytes). Its
canonical bytes are the UTF-8 JSON text with keys sorted, no whitespace and
non-ASCII escaped — ``json.dumps(body, sort_keys=True, separators=(",", ":"),
ensure_ascii=True)``. Fields:

========================  =========================================================
``v``                     encoding version: ``2`` (``1`` from a gateway before channels)
``gateway``               gateway id (as configured)
``gateway_key``           the gateway's ed25519 public key, Stellar ``G...`` form
``meter``                 meter id
``channel``               v2 only: ``"import"`` (energy from the grid) or ``"export"`` (fed in)
``seq``                   per-(meter, channel) sequence number: 1, 2, 3 … without gaps
``kind``                  ``"interval"`` or ``"correction"``
``corrects``              for a correction, the ``seq`` it corrects; else null
``start`` / ``end``       interval bounds, Unix seconds UTC (``end - start == 900``)
``wh``                    energy in the interval, whole Wh (a correction: the signed delta)
``quality``               NEM12 quality letter: ``A``, ``E``, ``S``, ``F``, ``N``
``register_start_wh``     interpolated register value at ``start``, whole Wh
``register_end_wh``       … at ``end``
``prev_hash``             ``hash`` of the previous credit of this (meter, channel); 64 zeros for seq 1
``created_ms``            creation time on the gateway, Unix milliseconds
========================  =========================================================

``hash`` = lowercase hex SHA-256 of the canonical bytes. ``signature`` =
base64 ed25519 signature, by the gateway key, of ``DOMAIN + canonical bytes``
where ``DOMAIN = b"meter-gateway/credit/v1\\n"`` (the prefix keeps a credit
signature from ever being valid for any other message signed by the key). The
prefix is the same for both encoding versions: it names the message (a credit),
while the version is signed inside the body (``v``), so a v1 and a v2 body never
have the same bytes and no signature is valid for both.

**Channels.** A meter has an import channel and, when it measures feed-in, an
export channel; each (gateway, meter, channel) is a chain of its own: its own
``seq`` from 1, its own ``prev_hash`` links, its own interval history (rule 5).
Version 2 signs ``channel``, so an export credit can never be passed off as
consumption. A version-1 credit (fifteen fields, no ``channel``) is import, and
an import chain goes on across the versions: the first v2 import credit of a
meter has the ``seq`` after its last v1 credit and links its ``hash``. An export
chain starts at seq 1 with the 64-zero ``prev_hash``.

What a valid credit is
----------------------
A signature proves who wrote a credit, not that it makes sense, so a verifier
checks every field's domain as well. The rules, in the order they are applied,
each with the reason a credit failing it is rejected with:

1. **Shape** (``malformed``, checked before anything else, so junk never reaches
   storage or cryptography): the wire item is an object with exactly ``credit``,
   ``hash`` and ``signature``; ``v`` is 1 or 2 (an integer); a v2 ``credit``
   has exactly the sixteen fields above and a v1 ``credit`` the fifteen other
   than ``channel``, with those types (a JSON ``true`` is not an integer). Every integer lies in
   signed 64-bit range, -2^63 … 2^63-1 (SQLite's INTEGER, PostgreSQL's BIGINT:
   whatever a receiver stores it in can hold it). ``gateway`` and ``meter`` are
   1-64 characters of ``A-Z a-z 0-9 _ . -``, starting with a letter or digit —
   exactly what the gateway's configuration accepts, and safe in a URL path;
   ``gateway_key`` is a ``G`` and 55 base-32 characters; ``hash`` and
   ``prev_hash`` are 64 lowercase hex digits; ``signature`` is standard padded
   base64 of 64 bytes (88 characters). A v2 ``channel`` is ``import`` or
   ``export`` (checked here, not with the domain: a receiver keys its stored
   credits by channel, and looks up a duplicate before rule 2).
2. **Authenticity**: ``gateway_key`` is the enrolled key of the gateway
   (``unknown_gateway``, ``wrong_key``), the signature verifies
   (``bad_signature``), ``hash`` is the hash of the canonical bytes
   (``hash_mismatch``).
3. **Domain** (``invalid``: signed by the gateway, so a bug there, never a
   transmission error):

   * ``seq`` ≥ 1;
   * ``kind`` is ``interval`` or ``correction``; an interval has ``corrects``
     null, a correction has 1 ≤ ``corrects`` < ``seq`` (it corrects an earlier
     credit of the same meter and channel);
   * ``start`` ≥ 0 and a multiple of 900 (quarter-hours aligned to UTC), and
     ``end == start + 900``;
   * ``register_start_wh`` ≥ 0 and ``register_end_wh`` ≥ ``register_start_wh``:
     the gateway's virtual register never decreases (register resets and
     rollovers are counted through, not passed on);
   * an interval's ``wh`` is exactly ``register_end_wh - register_start_wh``
     (hence ≥ 0). A correction's ``wh`` is the signed change to the energy
     credited for its interval, and its register fields carry the interval's new
     values; any sign is valid here, see rule 5;
   * ``quality`` is one of ``A``, ``E``, ``S``, ``F``, ``N`` (upper case);
   * ``created_ms`` ≥ 0.
4. **Chain** (against the last accepted credit of the meter's channel, a v1
   credit counting as import): ``seq`` is one
   more than its ``seq`` (``replay`` when not more, ``gap`` when further) and
   ``prev_hash`` is its ``hash`` (``chain_break``); 64 zeros before seq 1.
5. **Interval history** (``invalid``; against the credits already accepted for
   the same meter, channel and ``start``), so energy is credited once and corrections
   add up: an interval credit is the first interval credit of its quarter-hour;
   a correction's ``corrects`` is the ``seq`` of that interval credit, and its
   ``wh`` equals the interval's new energy (``register_end_wh -
   register_start_wh``) less the net energy credited for it so far (the
   interval credit plus earlier corrections). This is exactly how the gateway
   makes corrections (``gateway/ledger/ingest.py``), so the credits of a
   quarter-hour always net to its final energy.

A receiver that wants idempotent retries compares a credit with the one it
stored under the same (gateway, meter, channel, seq) *before* rules 3-5; it answers
``duplicate`` only when rule 2 passes and the two are equal field for field.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from enum import StrEnum
from functools import lru_cache
from json.encoder import encode_basestring_ascii
from typing import Any

from cloud_sync.ed25519 import ed25519_sign, ed25519_verify
from cloud_sync.fast_json import canonical_fast
from cloud_sync.keys import BadSignatureError, Keypair

VERSION = 2
"""The encoding this module writes; :data:`VERSIONS` are those it verifies."""
VERSIONS = (1, 2)
DOMAIN = b"meter-gateway/credit/v1\n"
"""The signature's domain prefix, for every encoding version: it names the message type (a credit),
and the version is signed inside the body (``v``), so no v1 signature is ever valid for a v2 body."""
GENESIS_HASH = "0" * 64
INTERVAL_S = 900
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
KINDS = ("interval", "correction")
CHANNELS = ("import", "export")
"""Energy channels (``gateway/channels.py`` has the same names): import from the grid, export to it."""
DEFAULT_CHANNEL = "import"
"""The channel of a v1 credit, which has no ``channel`` field."""
QUALITIES = ("A", "E", "S", "F", "N")
"""NEM12 quality letters: actual, estimated, substituted, final substitute, null."""

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
"""Gateway and meter ids: as the gateway's configuration accepts them (``gateway/config/model.py``)."""
KEY_PATTERN = r"^G[A-Z2-7]{55}$"
HASH_PATTERN = r"^[0-9a-f]{64}$"
SIGNATURE_PATTERN = r"^[A-Za-z0-9+/]{86}==$"
"""Standard padded base64 of a 64-byte ed25519 signature."""

_ID = re.compile(ID_PATTERN)
_KEY = re.compile(KEY_PATTERN)
_HASH = re.compile(HASH_PATTERN)
_SIGNATURE = re.compile(SIGNATURE_PATTERN)

_INT_FIELDS = ("v", "seq", "start", "end", "wh", "register_start_wh", "register_end_wh", "created_ms")
_STR_FIELDS: dict[str, re.Pattern[str] | None] = {
    "gateway": _ID, "meter": _ID, "gateway_key": _KEY, "prev_hash": _HASH, "kind": None, "quality": None,
}
_FIELDS_V1 = frozenset((*_INT_FIELDS, *_STR_FIELDS, "corrects"))
_FIELDS = frozenset((*_FIELDS_V1, "channel"))
"""The fields of a v2 body (the v1 fields and ``channel``)."""
_FIELDS_OF = {1: _FIELDS_V1, 2: _FIELDS}
_WIRE_KEYS = frozenset(("credit", "hash", "signature"))


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
    channel: str = DEFAULT_CHANNEL

    def as_dict(self) -> dict[str, Any]:
        """The fields as a plain dict, keys in canonical (sorted) order.

        A v1 body (re-signed by the ledger when a late reading revises an unsent v1 credit) has
        no ``channel``: it is import. Built field by field: ``dataclasses.asdict`` deep-copies
        every value, which cost more than the ed25519 signature itself (every field is a str, int or None).
        """
        names = _SORTED_FIELDS if self.v != 1 else _SORTED_FIELDS_V1
        return {name: getattr(self, name) for name in names}

    def canonical(self) -> bytes:
        fast = _canonical_v2(self) if self.v == VERSION else None
        return fast if fast is not None else canonical_bytes(self.as_dict())


@dataclass(frozen=True, slots=True)
class SignedCredit:
    body: CreditBody
    hash: str
    signature: str
    canonical: bytes
    """The canonical bytes, encoded once: signed, hashed, and spliced into :meth:`wire_json`."""

    @property
    def fields(self) -> dict[str, Any]:
        """The body as a dict (keys sorted); built when asked (the ledger only needs :meth:`wire_json`)."""
        return self.body.as_dict()

    def to_wire(self) -> dict[str, Any]:
        return {"credit": self.fields, "hash": self.hash, "signature": self.signature}

    def wire_json(self) -> str:
        """The wire form as compact JSON: what the outbox stores and uplinks send byte for byte.

        The canonical bytes are compact JSON already (sorted keys, ASCII), and the hash (hex) and
        signature (base64) need no escaping, so this is exactly ``json.dumps(self.to_wire(),
        separators=(",", ":"))`` without encoding the body a second time.
        """
        return f'{{"credit":{self.canonical.decode("ascii")},"hash":"{self.hash}","signature":"{self.signature}"}}'


_SORTED_FIELDS = tuple(sorted(f.name for f in dataclass_fields(CreditBody)))
_SORTED_FIELDS_V1 = tuple(name for name in _SORTED_FIELDS if name != "channel")


def channel_of(body: dict[str, Any]) -> str:
    """The channel of a parsed credit body: its ``channel``, or import for a v1 body."""
    return str(body.get("channel", DEFAULT_CHANNEL))


def canonical_bytes(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def credit_hash(canonical: bytes) -> str:
    return hashlib.sha256(canonical).hexdigest()


def _canonical_v2(body: CreditBody) -> bytes | None:
    """A v2 body's canonical bytes from a template, or None where only the stdlib encoder can say.

    Exactly ``canonical_bytes(body.as_dict())`` (the test holds them equal, by hypothesis): the keys
    in sorted order, integers as ``int.__repr__`` writes them (only for exact ``int``: a bool or an
    int subclass goes to the stdlib), strings through the stdlib's own ASCII string encoder. About a
    third of what building the dict and encoding it with ``json.dumps(sort_keys=True)`` costs, for
    every credit the gateway signs.
    """
    b = body
    corrects = b.corrects
    if not (type(b.seq) is int and type(b.start) is int and type(b.end) is int and type(b.wh) is int
            and type(b.register_start_wh) is int and type(b.register_end_wh) is int
            and type(b.created_ms) is int and type(b.v) is int and (corrects is None or type(corrects) is int)
            and isinstance(b.channel, str) and isinstance(b.gateway, str) and isinstance(b.gateway_key, str)
            and isinstance(b.kind, str) and isinstance(b.meter, str) and isinstance(b.prev_hash, str)
            and isinstance(b.quality, str)):
        return None
    e = _encode_str
    return (f'{{"channel":{e(b.channel)},"corrects":{"null" if corrects is None else corrects},'
            f'"created_ms":{b.created_ms},"end":{b.end},"gateway":{e(b.gateway)},'
            f'"gateway_key":{e(b.gateway_key)},"kind":{e(b.kind)},"meter":{e(b.meter)},'
            f'"prev_hash":{e(b.prev_hash)},"quality":{e(b.quality)},"register_end_wh":{b.register_end_wh},'
            f'"register_start_wh":{b.register_start_wh},"seq":{b.seq},"start":{b.start},"v":{b.v},'
            f'"wh":{b.wh}}}').encode("ascii")


_encode_str: Any = encode_basestring_ascii  # what json.dumps(ensure_ascii=True) writes a str with
_TEMPLATE_KEYS = ("channel", "corrects", "created_ms", "end", "gateway", "gateway_key", "kind", "meter", "prev_hash",
                  "quality", "register_end_wh", "register_start_wh", "seq", "start", "v", "wh")
if _TEMPLATE_KEYS != _SORTED_FIELDS:  # pragma: no cover - a field added to CreditBody must be added there too
    raise RuntimeError("the v2 canonical template must list CreditBody's fields in sorted order")


def sign(body: CreditBody, keypair: Keypair) -> SignedCredit:
    """Sign ``body``: canonical bytes encoded once, signed by libsodium directly (:func:`ed25519_sign`).

    The secret key goes to libsodium as it takes it (seed + public key); the signature is the one
    ``keypair.sign`` gives (ed25519 is deterministic). A key without its secret raises as
    ``keypair.sign`` would.
    """
    canonical = body.canonical()
    secret = keypair.raw_secret_key() + keypair.raw_public_key()
    signature = base64.b64encode(ed25519_sign(secret, DOMAIN + canonical)).decode("ascii")
    return SignedCredit(body, credit_hash(canonical), signature, canonical)


class Rejection(StrEnum):
    """Why a credit was refused; stable strings for APIs and logs."""

    MALFORMED = "malformed"
    INVALID = "invalid"
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


@dataclass(frozen=True, slots=True)
class Credited:
    """A credit already accepted for the same meter and interval start (rule 5)."""

    seq: int
    kind: str
    wh: int


def shown(value: Any, limit: int = 40) -> str:
    """A value from untrusted input, safe to put in a message: ASCII, bounded."""
    text = ascii(value)
    return text if len(text) <= limit else text[:limit] + "..."


def is_int64(value: Any) -> bool:
    return type(value) is int and INT64_MIN <= value <= INT64_MAX


def is_id(value: Any) -> bool:
    return type(value) is str and _ID.fullmatch(value) is not None


def _malformed(detail: str) -> CreditRejected:
    return CreditRejected(Rejection.MALFORMED, detail)


def parse_wire(item: Any) -> tuple[dict[str, Any], str, str]:
    """Check the shape of one wire credit (rule 1); return (body, hash, signature)."""
    if type(item) is not dict:
        raise _malformed("a credit must be a JSON object")
    if item.keys() != _WIRE_KEYS:
        extra = sorted(shown(k) for k in item.keys() - _WIRE_KEYS)
        raise _malformed("expected exactly the keys 'credit', 'hash' and 'signature'"
                         + (f"; unknown keys {', '.join(extra[:5])}" if extra else ""))
    body, digest, signature = item["credit"], item["hash"], item["signature"]
    if type(body) is not dict:
        raise _malformed("'credit' must be an object")
    if type(digest) is not str or not _HASH.fullmatch(digest):
        raise _malformed("'hash' must be 64 lowercase hex digits")
    if type(signature) is not str or not _SIGNATURE.fullmatch(signature):
        raise _malformed("'signature' must be the base64 of a 64-byte ed25519 signature")
    version = body.get("v")
    if type(version) is not int or version not in VERSIONS:
        raise _malformed(f"unsupported encoding version {shown(version)} (this verifier knows "
                         f"{', '.join(str(v) for v in VERSIONS)})")
    expected = _FIELDS_OF[version]
    if body.keys() != expected:
        missing, extra = sorted(expected - body.keys()), sorted(shown(k) for k in body.keys() - expected)
        raise _malformed("credit fields: " + "; ".join(
            part for part in (f"missing {missing}" if missing else "",
                              f"unknown {', '.join(extra[:5])}" if extra else "") if part))
    for name in _INT_FIELDS:
        if not is_int64(body[name]):
            raise _malformed(f"field {name!r} must be an integer in signed 64-bit range, got {shown(body[name])}")
    corrects = body["corrects"]
    if corrects is not None and not is_int64(corrects):
        raise _malformed(f"field 'corrects' must be null or an integer in signed 64-bit range, got {shown(corrects)}")
    for name, pattern in _STR_FIELDS.items():
        value = body[name]
        if type(value) is not str:
            raise _malformed(f"field {name!r} must be a string, got {shown(value)}")
        if pattern is not None and not pattern.fullmatch(value):
            raise _malformed(f"field {name!r} does not match {pattern.pattern}: {shown(value)}")
    if version == 2 and body["channel"] not in CHANNELS:
        raise _malformed(f"field 'channel' must be one of {', '.join(CHANNELS)}, got {shown(body['channel'])}")
    return body, digest, signature


@lru_cache(maxsize=4096)
def _raw_key(public_key: str) -> bytes:
    """The key decoded once (decoding a ``G...`` key costs about half as much as verifying a signature)."""
    return Keypair.from_public_key(public_key).raw_public_key()


def authenticate(body: dict[str, Any], digest: str, signature: str, expected_key: str | None) -> None:
    """Rule 2: signed by the enrolled key, and ``digest`` is the hash of exactly this content."""
    if expected_key is None:
        raise CreditRejected(Rejection.UNKNOWN_GATEWAY, f"gateway {body['gateway']!r} is not enrolled")
    if body["gateway_key"] != expected_key:
        raise CreditRejected(Rejection.WRONG_KEY, "credit names a key that is not the gateway's enrolled key")
    canonical = canonical_fast(body) or canonical_bytes(body)
    try:
        raw_sig = base64.b64decode(signature, validate=True)
        if not ed25519_verify(_raw_key(expected_key), DOMAIN + canonical, raw_sig):
            raise BadSignatureError("signature does not verify")
    except (BadSignatureError, ValueError, binascii.Error) as exc:
        raise CreditRejected(Rejection.BAD_SIGNATURE, "signature does not verify (forged or tampered)") from exc
    if credit_hash(canonical) != digest:
        raise CreditRejected(Rejection.HASH_MISMATCH, "hash does not match the signed content")


def _invalid(detail: str) -> CreditRejected:
    return CreditRejected(Rejection.INVALID, detail)


def check_domain(body: dict[str, Any]) -> None:
    """Rule 3: every field within its domain (``body`` has passed :func:`parse_wire`)."""
    seq, kind, corrects = body["seq"], body["kind"], body["corrects"]
    if seq < 1:
        raise _invalid(f"seq {seq} is below 1")
    if kind not in KINDS:
        raise _invalid(f"kind {shown(kind)} is neither 'interval' nor 'correction'")
    if kind == "interval" and corrects is not None:
        raise _invalid("an interval credit has corrects = null")
    if kind == "correction" and (corrects is None or not 1 <= corrects < seq):
        raise _invalid(f"a correction corrects an earlier seq (1..{seq - 1}), got corrects = {corrects}")
    start, end = body["start"], body["end"]
    if start < 0 or start % INTERVAL_S:
        raise _invalid(f"start {start} is not a quarter-hour (a non-negative multiple of {INTERVAL_S} s)")
    if end != start + INTERVAL_S:
        raise _invalid(f"end {end} is not start + {INTERVAL_S} ({start + INTERVAL_S})")
    reg_start, reg_end, wh = body["register_start_wh"], body["register_end_wh"], body["wh"]
    if kind == "interval" and wh < 0:
        raise _invalid(f"an interval's wh is never negative, got {wh}")
    if reg_start < 0:
        raise _invalid(f"register_start_wh {reg_start} is negative")
    if reg_end < reg_start:
        raise _invalid(f"register_end_wh {reg_end} is below register_start_wh {reg_start}")
    if kind == "interval" and wh != reg_end - reg_start:
        raise _invalid(f"wh {wh} is not register_end_wh - register_start_wh ({reg_end - reg_start})")
    if body["quality"] not in QUALITIES:
        raise _invalid(f"quality {shown(body['quality'])} is not one of {', '.join(QUALITIES)}")
    if body["created_ms"] < 0:
        raise _invalid(f"created_ms {body['created_ms']} is before 1970")


def check_chain(body: dict[str, Any], tip: ChainTip | None) -> None:
    """Rule 4: the credit is the next link of its meter's chain."""
    seq = body["seq"]
    last_seq = tip.seq if tip else 0
    if seq <= last_seq:
        raise CreditRejected(Rejection.REPLAY, f"seq {seq} already accepted (last is {last_seq})")
    if seq != last_seq + 1:
        raise CreditRejected(Rejection.GAP, f"seq {seq} follows {last_seq}: credits {last_seq + 1}..{seq - 1} missing")
    expected_prev = tip.hash if tip else GENESIS_HASH
    if body["prev_hash"] != expected_prev:
        raise CreditRejected(Rejection.CHAIN_BREAK, "prev_hash does not link to the previous credit")


def check_history(body: dict[str, Any], credited: Sequence[Credited]) -> None:
    """Rule 5: ``credited`` holds the meter's accepted credits with the same ``start``."""
    start = body["start"]
    interval = next((c for c in credited if c.kind == "interval"), None)
    if body["kind"] == "interval":
        if interval is not None:
            raise _invalid(f"the interval at start {start} was already credited by seq {interval.seq}")
        return
    if interval is None or interval.seq != body["corrects"]:
        found = f"seq {interval.seq}" if interval else "no interval credit"
        raise _invalid(f"corrects = {body['corrects']}, but the interval at start {start} was credited by {found}")
    net = sum(c.wh for c in credited)
    new = body["register_end_wh"] - body["register_start_wh"]
    if body["wh"] != new - net:
        raise _invalid(f"a correction's wh is the change from the {net} Wh credited so far to the interval's new "
                       f"{new} Wh ({new - net}), got {body['wh']}")


def verify(item: Any, *, expected_key: str | None, tip: ChainTip | None,
           credited: Sequence[Credited] | None = None) -> tuple[dict[str, Any], str]:
    """Verify one wire credit: rules 1-4, and rule 5 when ``credited`` is given.

    Returns (body, hash) when the credit is the valid next link. ``tip`` is the
    last credit already accepted for this meter (None if none); ``credited``
    the accepted credits of the same meter and ``start``. A credit equal to one
    already accepted is reported as ``REPLAY``; receivers that want idempotent
    retries check for an identical stored credit *before* calling this.
    """
    body, digest, signature = parse_wire(item)
    authenticate(body, digest, signature, expected_key)
    check_domain(body)
    check_chain(body, tip)
    if credited is not None:
        check_history(body, credited)
    return body, digest
