"""Turning closed intervals into signed, chained credits (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from cloud_sync.credit import GENESIS_HASH, CreditBody, SignedCredit, sign
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
