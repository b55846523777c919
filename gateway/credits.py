"""Turning closed intervals into signed, chained credits (pure)."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii

from cloud_sync.credit import DOMAIN, GENESIS_HASH, VERSION, CreditBody, SignedCredit, credit_hash, sign
from cloud_sync.ed25519 import ed25519_sign
from cloud_sync.keys import Keypair
from gateway.intervals import Interval


@dataclass(frozen=True, slots=True)
class Tip:
    """The last credit issued for a (meter, channel): where the next one of that chain links on."""

    seq: int = 0
    hash: str = GENESIS_HASH


def credit_for_interval(
    interval: Interval, tip: Tip, *, gateway_id: str, keypair: Keypair, created_ms: int,
    corrects: int | None = None, wh: int | None = None, public_key: str | None = None,
) -> tuple[SignedCredit, Tip]:
    """The next credit of the chain of ``interval``'s (meter, channel) for ``interval``.

    Written in the current encoding (v2), which signs the channel: an export credit can never be
    taken for consumption. ``tip`` is the last credit of the same (meter, channel), whatever its
    version (an import chain goes on from its last v1 credit).

    With ``corrects``, a correction credit: ``wh`` is the signed change to the
    corrected credit's energy, the register fields carry the interval's new values.
    ``public_key`` spares re-encoding the key for every credit.
    """
    body = CreditBody(
        gateway=gateway_id,
        gateway_key=public_key or keypair.public_key,
        meter=interval.meter,
        seq=tip.seq + 1,
        start=interval.start,
        end=interval.end,
        wh=interval.wh if wh is None else wh,
        quality=interval.quality.value,
        register_start_wh=interval.register_start_wh,
        register_end_wh=interval.register_end_wh,
        prev_hash=tip.hash,
        created_ms=created_ms,
        kind="interval" if corrects is None else "correction",
        corrects=corrects,
        channel=interval.channel.value,
    )
    signed = sign(body, keypair)
    return signed, Tip(body.seq, signed.hash)


class IntervalSigner:
    """Signs the interval credits of one batch: :func:`credit_for_interval`'s bytes, at less cost.

    The ledger signs a credit for every closed interval, so what surrounds the ed25519 signature
    shows: building a :class:`CreditBody` (sixteen frozen fields) and a :class:`SignedCredit` for a
    credit whose only use is its hash and its wire text. Here the canonical bytes come straight
    from the interval through the v2 template (the gateway id and key encoded once), and the result
    is the (hash, wire JSON, tip) the ledger stores. ``tests/test_credit.py`` holds the bytes
    equal to :func:`credit_for_interval`'s; anything the template cannot encode exactly (a value that
    is not an exact ``int``) takes that function instead.
    """

    def __init__(self, *, gateway_id: str, keypair: Keypair, public_key: str | None = None) -> None:
        self._gateway_id = gateway_id
        self._keypair = keypair
        self._public_key = public_key or keypair.public_key
        self._gateway = encode_basestring_ascii(gateway_id)
        self._key = encode_basestring_ascii(self._public_key)
        self._secret: bytes | None = None

    def sign(self, interval: Interval, tip: Tip, created_ms: int) -> tuple[str, str, Tip]:
        """The next credit of ``interval``'s chain: (hash, wire JSON, new tip)."""
        seq = tip.seq + 1
        start, end, wh = interval.start, interval.end, interval.wh
        reg_start, reg_end = interval.register_start_wh, interval.register_end_wh
        if not (type(start) is int and type(end) is int and type(wh) is int and type(reg_start) is int
                and type(reg_end) is int and type(seq) is int and type(created_ms) is int):
            signed, new_tip = credit_for_interval(interval, tip, gateway_id=self._gateway_id, keypair=self._keypair,
                                                  created_ms=created_ms, public_key=self._public_key)
            return signed.hash, signed.wire_json(), new_tip
        e = encode_basestring_ascii
        canonical = (f'{{"channel":{e(interval.channel.value)},"corrects":null,"created_ms":{created_ms},'
                     f'"end":{end},"gateway":{self._gateway},"gateway_key":{self._key},"kind":"interval",'
                     f'"meter":{e(interval.meter)},"prev_hash":{e(tip.hash)},"quality":{e(interval.quality.value)},'
                     f'"register_end_wh":{reg_end},"register_start_wh":{reg_start},"seq":{seq},"start":{start},'
                     f'"v":{VERSION},"wh":{wh}}}')
        raw = canonical.encode("ascii")
        if self._secret is None:
            self._secret = self._keypair.raw_secret_key() + self._keypair.raw_public_key()
        signature = base64.b64encode(ed25519_sign(self._secret, DOMAIN + raw)).decode("ascii")
        digest = credit_hash(raw)
        return digest, f'{{"credit":{canonical},"hash":"{digest}","signature":"{signature}"}}', Tip(seq, digest)
