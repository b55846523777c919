"""ed25519 signing and verification straight into libsodium (which PyNaCl, stellar-sdk's crypto, bundles).

A receiver verifies every credit, so the layers above libsodium show in its CPU: stellar-sdk's
``Keypair.verify`` goes through PyNaCl's ``VerifyKey``, which allocates a buffer for the opened
message and copies it out, for a check whose only answer is yes or no. Here ``crypto_sign_open``
is called with no output buffer (libsodium then only verifies). The same library, the same check
(``tests/receiver/test_credit_fast.py`` holds it to stellar-sdk's verdicts); PyNaCl's public
binding is the fallback should its compiled module ever be laid out differently.

The gateway signs every credit: :func:`ed25519_sign` calls ``crypto_sign`` without PyNaCl's
``SigningKey`` / ``SignedMessage`` layers (about a tenth of a credit's signing time). ed25519 is
deterministic, so it gives exactly the signature those layers give (``tests/test_credit_encoding.py``).
"""

from __future__ import annotations

import importlib
from typing import Any

import nacl.bindings
import nacl.exceptions

SIGNATURE_BYTES = 64
PUBLIC_KEY_BYTES = 32
SECRET_KEY_BYTES = 64
"""libsodium's ed25519 secret key: the 32-byte seed followed by the public key."""

def _sodium() -> tuple[Any, Any] | None:
    """PyNaCl's compiled libsodium binding (ffi, lib), or None if it is not where it has always been."""
    try:
        module = importlib.import_module("nacl._sodium")
    except ImportError:  # pragma: no cover - every PyNaCl release since 1.0 has it
        return None
    ffi, lib = getattr(module, "ffi", None), getattr(module, "lib", None)
    return (ffi, lib) if ffi is not None and hasattr(lib, "crypto_sign_open") else None


_SODIUM = _sodium()

def ed25519_verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is the key's ed25519 signature of ``message``."""
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False  # libsodium reads exactly these sizes: never hand it shorter buffers
    signed = signature + message
    if _SODIUM is not None:
        ffi, lib = _SODIUM
        return bool(lib.crypto_sign_open(ffi.NULL, ffi.NULL, signed, len(signed), public_key) == 0)
    try:
        nacl.bindings.crypto_sign_open(signed, public_key)
    except nacl.exceptions.BadSignatureError:
        return False
    return True


def ed25519_sign(secret_key: bytes, message: bytes) -> bytes:
    """The 64-byte ed25519 signature of ``message`` by ``secret_key`` (seed + public key, 64 bytes)."""
    if len(secret_key) != SECRET_KEY_BYTES:
        raise ValueError(f"an ed25519 secret key is {SECRET_KEY_BYTES} bytes (seed + public key), "
                         f"not {len(secret_key)}")
    if _SODIUM is not None:
        ffi, lib = _SODIUM
        signed = ffi.new("unsigned char[]", SIGNATURE_BYTES + len(message))
        if lib.crypto_sign(signed, ffi.NULL, message, len(message), secret_key) != 0:  # pragma: no cover
            raise ValueError("libsodium could not sign")
        return bytes(ffi.buffer(signed, SIGNATURE_BYTES))
    return bytes(nacl.bindings.crypto_sign(message, secret_key)[:SIGNATURE_BYTES])
