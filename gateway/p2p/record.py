"""A delivery record: what the gateway attests for one agreement, in canonical JSON, signed.

Same encoding rules as a credit (:mod:`cloud_sync.credit`: integers and strings only, keys
sorted, no whitespace, ASCII), with its own signature domain so that a record's signature can
never pass for a credit's or the other way round::

    signature = ed25519(gateway key, DOMAIN + canonical bytes),  DOMAIN = b"meter-gateway/p2p-delivery/v1\\n"
    hash      = sha256(canonical bytes), lowercase hex

Fields: ``v`` (1), ``kind`` ("p2p_delivery"), ``gateway``, ``gateway_key``, ``agreement_id``,
``provider`` (the contract address), ``provider_meter``, ``channel`` ("export"),
``energy_delivered_kwh`` (whole kWh, what ``deliver_energy`` is sent), ``meter_reading`` (the
export register at delivery, whole Wh: the ``meter_reading`` argument), ``covered_wh``,
``carry_in_wh``, ``carry_out_wh`` (the Wh remainder handed to the meter's next agreement,
see :mod:`.planner`), ``intervals`` (how many), ``first_seq`` / ``last_seq`` (the covered credits
(meter, "export", seq) range; 0 / 0 when none), ``covers`` (sha256 of the covered credits' hashes
joined by ``,`` in time order: the exact credits, not only their range), ``window_start``,
``window_end`` (the deadline), ``reason`` ("quantity" or "deadline"), ``decided_at`` (Unix s).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any, Final

from cloud_sync.credit import canonical_bytes
from cloud_sync.keys import Keypair
from gateway.p2p.planner import Decision, Terms

DOMAIN: Final = b"meter-gateway/p2p-delivery/v1\n"
VERSION: Final = 1
KIND: Final = "p2p_delivery"
CHANNEL: Final = "export"


@dataclass(frozen=True, slots=True)
class SignedRecord:
    body: dict[str, Any]
    canonical: bytes
    hash: str
    signature: str


def covers_digest(credit_hashes: list[str]) -> str:
    return hashlib.sha256(",".join(credit_hashes).encode("ascii")).hexdigest()


def body_of(decision: Decision, terms: Terms, *, gateway: str, gateway_key: str, provider: str,
            provider_meter: str, decided_at: int) -> dict[str, Any]:
    covered = decision.covered
    return {
        "v": VERSION, "kind": KIND, "gateway": gateway, "gateway_key": gateway_key,
        "agreement_id": decision.agreement_id, "provider": provider, "provider_meter": provider_meter,
        "channel": CHANNEL, "energy_delivered_kwh": decision.kwh, "meter_reading": decision.meter_reading_wh,
        "covered_wh": decision.covered_wh, "carry_in_wh": decision.carry_in_wh,
        "carry_out_wh": decision.carry_out_wh, "intervals": len(covered),
        "first_seq": covered[0].seq if covered else 0, "last_seq": covered[-1].seq if covered else 0,
        "covers": covers_digest([i.credit_hash for i in covered]), "window_start": terms.start,
        "window_end": terms.deadline, "reason": decision.reason, "decided_at": decided_at,
    }


def sign(body: dict[str, Any], keypair: Keypair) -> SignedRecord:
    canonical = canonical_bytes(body)
    signature = base64.b64encode(keypair.sign(DOMAIN + canonical)).decode("ascii")
    return SignedRecord(body, canonical, hashlib.sha256(canonical).hexdigest(), signature)


def verify(canonical: bytes, signature: str, public_key: str) -> bool:
    """Whether ``signature`` is this gateway key's over the record (for a receiver, and tests)."""
    try:
        Keypair.from_public_key(public_key).verify(DOMAIN + canonical, base64.b64decode(signature))
    except ValueError:
        return False
    return True
