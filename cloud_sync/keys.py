"""Ed25519 keys in Stellar's text form (``G...`` public, ``S...`` secret), without stellar-sdk.

The gateway signs credits and the receiver verifies them with plain ed25519; neither needs
Stellar's transaction machinery. Importing stellar-sdk for its ``Keypair`` loads its whole XDR
stack, about 42 MB of a box's memory, so keys are handled here with PyNaCl (libsodium), which
stellar-sdk itself signs with: the same keys, the same deterministic signatures, about 2 MB.
stellar-sdk is imported only by :meth:`Keypair.to_sdk`, for a configuration that talks to Stellar.

The text form is Stellar's "strkey" (SEP-23): base32 (RFC 4648, upper case, no padding) of one
version byte, the 32-byte key and a CRC16-XModem checksum of both, little-endian. Version bytes:
6 << 3 for an account (public key, ``G``), 18 << 3 for a secret seed (``S``). 35 bytes are exactly
56 base32 characters, so every valid key has one spelling only.
"""

from __future__ import annotations

import base64
import binascii
import os
from typing import Any

from nacl.exceptions import BadSignatureError as _NaclBadSignature
from nacl.exceptions import CryptoError
from nacl.signing import SigningKey, VerifyKey

VERSION_PUBLIC = 6 << 3
VERSION_SECRET = 18 << 3
KEY_BYTES = 32
SIGNATURE_BYTES = 64
TEXT_LENGTH = 56
"""Characters of a ``G...`` or ``S...`` key: base32 of 1 + 32 + 2 bytes."""


class KeyPairError(ValueError):
    """Base of the errors below; a ValueError, as callers of stellar-sdk's Keypair expect."""


class InvalidPublicKey(KeyPairError):
    """Not a Stellar account public key (``G...``, 56 characters, checksum intact)."""


class InvalidSecret(KeyPairError):
    """Not a Stellar secret seed (``S...``, 56 characters, checksum intact)."""


class BadSignatureError(KeyPairError):
    """The signature does not verify with this key (forged, tampered, or not 64 bytes)."""


class MissingSecret(KeyPairError):
    """A key made from a public key alone cannot sign."""


def _crc16_xmodem(data: bytes) -> bytes:
    # binascii.crc_hqx is CRC-CCITT (polynomial 0x1021); started from 0 it is the XModem variant.
    return binascii.crc_hqx(data, 0).to_bytes(2, "little")


def encode(version: int, key: bytes) -> str:
    payload = bytes((version,)) + key
    return base64.b32encode(payload + _crc16_xmodem(payload)).decode("ascii")


def decode(version: int, text: str) -> bytes:
    """The 32 key bytes of ``text``; ValueError unless it is a well-formed key of this version."""
    if not isinstance(text, str) or len(text) != TEXT_LENGTH:
        raise ValueError("wrong length")
    try:
        raw = base64.b32decode(text.encode("ascii"))
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError("not base32") from None
    if raw[0] != version:
        raise ValueError("wrong version byte")
    if _crc16_xmodem(raw[:-2]) != raw[-2:]:
        raise ValueError("checksum mismatch")
    return raw[1:-2]


def is_public_key(text: str) -> bool:
    try:
        decode(VERSION_PUBLIC, text)
    except ValueError:
        return False
    return True


class Keypair:
    """An ed25519 key pair (or a public key alone), used like stellar-sdk's ``Keypair``."""

    __slots__ = ("_sdk", "_signing", "_verify", "public_key")

    def __init__(self, verify_key: VerifyKey, signing_key: SigningKey | None = None) -> None:
        self._verify = verify_key
        self._signing = signing_key
        self._sdk: Any = None
        self.public_key: str = encode(VERSION_PUBLIC, bytes(verify_key))
        """The ``G...`` form."""

    @classmethod
    def random(cls) -> Keypair:
        return cls.from_raw_ed25519_seed(os.urandom(KEY_BYTES))

    @classmethod
    def from_raw_ed25519_seed(cls, seed: bytes) -> Keypair:
        if len(seed) != KEY_BYTES:
            raise InvalidSecret(f"an ed25519 seed is {KEY_BYTES} bytes, not {len(seed)}")
        signing = SigningKey(bytes(seed))
        return cls(signing.verify_key, signing)

    @classmethod
    def from_secret(cls, secret: str) -> Keypair:
        """From an ``S...`` seed. The error never repeats the secret."""
        try:
            seed = decode(VERSION_SECRET, secret)
        except ValueError as exc:
            raise InvalidSecret(f"not a Stellar secret seed (S..., {TEXT_LENGTH} characters): {exc}") from None
        return cls.from_raw_ed25519_seed(seed)

    @classmethod
    def from_public_key(cls, public_key: str) -> Keypair:
        try:
            raw = decode(VERSION_PUBLIC, public_key)
        except ValueError as exc:
            raise InvalidPublicKey(f"not a Stellar public key (G..., {TEXT_LENGTH} characters): {exc}") from None
        return cls(VerifyKey(raw))

    @property
    def secret(self) -> str:
        """The ``S...`` form; raises :class:`MissingSecret` for a public key alone."""
        return encode(VERSION_SECRET, self.raw_secret_key())

    def raw_public_key(self) -> bytes:
        return bytes(self._verify)

    def raw_secret_key(self) -> bytes:
        if self._signing is None:
            raise MissingSecret("this key was made from a public key and cannot sign")
        return bytes(self._signing)

    def can_sign(self) -> bool:
        return self._signing is not None

    def sign(self, data: bytes) -> bytes:
        """The raw 64-byte ed25519 signature of ``data`` (deterministic)."""
        if self._signing is None:
            raise MissingSecret("this key was made from a public key and cannot sign")
        return bytes(self._signing.sign(data).signature)

    def verify(self, data: bytes, signature: bytes) -> None:
        """Return if ``signature`` is this key's signature of ``data``; else raise :class:`BadSignatureError`."""
        if len(signature) != SIGNATURE_BYTES:
            raise BadSignatureError(f"an ed25519 signature is {SIGNATURE_BYTES} bytes, not {len(signature)}")
        try:
            self._verify.verify(data, signature)
        except (_NaclBadSignature, CryptoError, ValueError):
            raise BadSignatureError("signature does not verify") from None

    def to_sdk(self) -> Any:
        """The same key as a stellar-sdk ``Keypair`` (imports stellar-sdk: only where Stellar is configured)."""
        if self._sdk is None:
            from stellar_sdk import Keypair as SdkKeypair

            self._sdk = (SdkKeypair.from_raw_ed25519_seed(bytes(self._signing)) if self._signing is not None
                         else SdkKeypair.from_public_key(self.public_key))
        return self._sdk

    def sign_decorated(self, data: bytes) -> Any:
        """What stellar-sdk's ``TransactionEnvelope.sign`` asks of a signer, so this key can sign envelopes."""
        return self.to_sdk().sign_decorated(data)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Keypair):
            return NotImplemented
        return self.public_key == other.public_key and self.can_sign() == other.can_sign()

    def __hash__(self) -> int:
        return hash(self.public_key)

    def __repr__(self) -> str:
        return f"Keypair({self.public_key}{'' if self.can_sign() else ', public only'})"
