"""Gateway enrolment: who may send credits, with which key, authenticated by which token (pure).

A gateway is enrolled with its id (``gateway_id`` in its config) and its public key (``G…``,
what ``meter-gateway identity`` prints). Enrolment issues it a bearer token of its own: 256 random
bits, shown once and stored only as its SHA-256.

Why a plain SHA-256 and not a password hash (argon2, bcrypt): those are slow on purpose, to make
guessing a *low-entropy* secret expensive after a database leak. A token of 256 random bits cannot
be guessed however fast the hash is, so a slow hash would only cost every request tens of
milliseconds and buy nothing. Stored hashed, a leaked ``gateways`` table gives no one a usable token;
looked up by its hash, a token is found with one index probe whatever the size of the fleet.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from cloud_sync.credit import KEY_PATTERN, is_id
from cloud_sync.keys import Keypair

TOKEN_BYTES = 32
"""256 bits of randomness per token (``secrets.token_urlsafe``: 43 URL-safe characters)."""


class EnrolmentError(Exception):
    """An enrolment request that cannot be carried out; the message says what to do."""


@dataclass(frozen=True, slots=True)
class Enrolment:
    """A gateway as the store knows it."""

    gateway: str
    public_key: str
    enrolled_ms: int
    revoked_ms: int | None
    has_token: bool
    """False for a gateway enrolled with ``--enroll`` only: it can send with the shared token alone."""

    @property
    def active(self) -> bool:
        return self.revoked_ms is None


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request authenticates as.

    ``gateway`` set: that gateway's own token; it may send and read only its own credits.
    ``gateway`` None: the operator (the shared ``--token-file`` token, or no authentication in tests),
    which may send for any enrolled gateway and read everything.
    """

    gateway: str | None
    revoked: bool = False


OPERATOR = Principal(None)


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_digest(token: str) -> str:
    """What the store keeps of a token: lowercase hex SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def check_gateway_id(gateway: str) -> str:
    if not is_id(gateway):
        raise EnrolmentError(f"{gateway!r} is not a gateway id: 1-64 of A-Z a-z 0-9 _ . -, starting with a letter "
                             "or digit (the gateway_id in the gateway's config)")
    return gateway


def check_public_key(key: str) -> str:
    try:
        if not re.fullmatch(KEY_PATTERN, key):
            raise ValueError(key)
        Keypair.from_public_key(key)
    except ValueError:
        raise EnrolmentError(f"{key!r} is not a gateway public key; use what `meter-gateway identity` prints on the "
                             "box (G... , 56 characters)") from None
    return key


def parse_enroll_option(entry: str) -> tuple[str, str]:
    """``--enroll GATEWAY=GKEY`` (the command-line enrolment kept for the demo and tests)."""
    gateway, sep, key = entry.partition("=")
    if not sep:
        raise EnrolmentError(f"--enroll {entry!r}: expected GATEWAY=GKEY, GATEWAY being the gateway_id "
                             "(1-64 of A-Z a-z 0-9 _ . -)")
    try:
        return check_gateway_id(gateway), check_public_key(key)
    except EnrolmentError as exc:
        raise EnrolmentError(f"--enroll {entry!r}: {exc}") from None


def refused_revoked(gateway: str) -> str:
    return (f"gateway {gateway!r} was revoked at this receiver: its batches are refused. If that is a mistake, "
            "the operator enrols it again (python -m cloud_sync.receiver enrol) and gives the box the new token")


def refused_unknown(gateway: str) -> str:
    return (f"gateway {gateway!r} is not enrolled at this receiver; the operator enrols it with the key "
            "`meter-gateway identity` prints (python -m cloud_sync.receiver enrol GATEWAY GKEY)")


def refused_other_gateway(token_gateway: str, batch_gateway: str) -> str:
    return (f"this token is gateway {token_gateway!r}'s; it may send only that gateway's credits, not "
            f"{batch_gateway!r}'s")
