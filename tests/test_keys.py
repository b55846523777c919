"""cloud_sync.keys against stellar-sdk: the same keys, texts and signatures, the same refusals."""

from __future__ import annotations

import base64
import binascii
import os
import re

import pytest
import stellar_sdk
from hypothesis import given
from hypothesis import strategies as st
from stellar_sdk.exceptions import BadSignatureError as SdkBadSignature

from cloud_sync import keys
from cloud_sync.keys import BadSignatureError, InvalidPublicKey, InvalidSecret, Keypair, MissingSecret


@given(seed=st.binary(min_size=32, max_size=32), message=st.binary(max_size=300))
def test_keys_and_signatures_are_stellar_sdks(seed: bytes, message: bytes) -> None:
    ours, sdk = Keypair.from_raw_ed25519_seed(seed), stellar_sdk.Keypair.from_raw_ed25519_seed(seed)
    assert ours.public_key == sdk.public_key
    assert ours.secret == sdk.secret
    assert ours.raw_public_key() == sdk.raw_public_key()
    signature = ours.sign(message)
    assert signature == sdk.sign(message)
    sdk.verify(message, signature)  # each verifies the other's
    Keypair.from_public_key(sdk.public_key).verify(message, sdk.sign(message))
    assert Keypair.from_secret(sdk.secret).public_key == sdk.public_key
    assert stellar_sdk.Keypair.from_secret(ours.secret).public_key == ours.public_key


def test_a_random_key_round_trips_through_its_secret() -> None:
    key = Keypair.random()
    assert re.fullmatch(r"G[A-Z2-7]{55}", key.public_key)
    assert re.fullmatch(r"S[A-Z2-7]{55}", key.secret)
    assert Keypair.from_secret(key.secret) == key
    assert Keypair.random() != key


def _flip(text: str, at: int) -> str:
    return text[:at] + ("A" if text[at] != "A" else "B") + text[at + 1:]


def _corruptions(valid: str) -> list[str]:
    raw = base64.b32decode(valid)
    muxed = base64.b32encode(bytes((12 << 3,)) + raw[1:-2] + b"\0" * 8).decode()
    return [
        "", valid[:-1], valid + "A", valid.lower(), _flip(valid, 10), _flip(valid, 55), valid[:-4] + "====",
        valid.replace(valid[5], "1", 1), "É" + valid[1:], muxed,
        base64.b32encode(raw[:-2] + (int.from_bytes(raw[-2:], "little") ^ 1).to_bytes(2, "little")).decode(),
    ]


@pytest.mark.parametrize("which", ["public", "secret"])
def test_malformed_keys_are_refused_like_stellar_sdk_refuses_them(which: str) -> None:
    key = Keypair.random()
    valid, other = (key.public_key, key.secret) if which == "public" else (key.secret, key.public_key)
    ours = Keypair.from_public_key if which == "public" else Keypair.from_secret
    sdks = stellar_sdk.Keypair.from_public_key if which == "public" else stellar_sdk.Keypair.from_secret
    error = InvalidPublicKey if which == "public" else InvalidSecret
    for text in [*_corruptions(valid), other]:
        with pytest.raises(ValueError, match=r"."):  # what callers of stellar-sdk's Keypair catch
            sdks(text)
        with pytest.raises(error) as caught:
            ours(text)
        assert isinstance(caught.value, ValueError)
        if which == "secret":
            assert text not in str(caught.value) or not text  # never echoes a secret


def test_a_bad_signature_raises_a_typed_error() -> None:
    key = Keypair.random()
    signature = key.sign(b"credit")
    public = Keypair.from_public_key(key.public_key)
    public.verify(b"credit", signature)
    for data, sig in [(b"credit!", signature), (b"credit", bytes(64)), (b"credit", signature[:-1]),
                      (b"credit", signature + b"\0"), (b"credit", Keypair.random().sign(b"credit"))]:
        with pytest.raises(BadSignatureError):
            public.verify(data, sig)
        with pytest.raises((SdkBadSignature, ValueError)):
            stellar_sdk.Keypair.from_public_key(key.public_key).verify(data, sig)


def test_a_public_key_alone_cannot_sign() -> None:
    public = Keypair.from_public_key(Keypair.random().public_key)
    assert not public.can_sign()
    with pytest.raises(MissingSecret):
        public.sign(b"x")
    with pytest.raises(MissingSecret):
        _ = public.secret


def test_the_strkey_checksum_is_crc16_xmodem_little_endian() -> None:
    # The standard check value of CRC-16/XMODEM for "123456789" is 0x31C3.
    assert binascii.crc_hqx(b"123456789", 0) == 0x31C3
    payload = bytes((keys.VERSION_PUBLIC,)) + os.urandom(32)
    text = keys.encode(keys.VERSION_PUBLIC, payload[1:])
    assert base64.b32decode(text)[-2:] == binascii.crc_hqx(payload, 0).to_bytes(2, "little")


def test_the_sdk_view_signs_stellar_envelopes_with_the_same_key() -> None:
    key = Keypair.random()
    sdk = key.to_sdk()
    assert isinstance(sdk, stellar_sdk.Keypair)
    assert (sdk.public_key, sdk.secret) == (key.public_key, key.secret)
    # stellar-sdk's TransactionEnvelope.sign takes this key as it is (it asks it for sign_decorated).
    envelopes = []
    for signer in (key, sdk):
        tx = (stellar_sdk.TransactionBuilder(stellar_sdk.Account(key.public_key, 1),
                                             stellar_sdk.Network.TESTNET_NETWORK_PASSPHRASE, base_fee=100)
              .append_bump_sequence_op(2).add_time_bounds(0, 1_900_000_000).build())
        tx.sign(signer)
        envelopes.append(tx.to_xdr())
    assert envelopes[0] == envelopes[1]
