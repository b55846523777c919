"""Continue every meter's credit chains from the billing system, when the gateway's ledger is lost.

``meter-gateway recover-chains --config FILE`` asks the billing API for each configured meter's
credits (``GET /v1/gateways/{gateway}/meters/{meter}/credits``), takes the last accepted one,
checks it (shape, hash, and signature when this key signed it) and creates a new ledger in which,
for each of the meter's channels (import, export: each has a chain of its own, and a v1 credit is
import):

* the channel's chain goes on from that credit: the next one has ``seq + 1`` and links its hash,
  so the billing system accepts it as the next of the chain;
* the channel's interval engine goes on from that credit's end boundary and register value, so
  the energy since then (the credits the lost ledger had not delivered, and the time the gateway
  was down) is counted from the register at the next reading: nothing is lost, nothing counted
  twice. That span is filled and flagged by the usual gap rules (``S`` for a long one).

What it cannot recover: credits the lost ledger held but never delivered are issued again under
new sequence numbers (with the same energy, from the register); raw readings and the local
history (bills, exports for past periods) are gone with the file. A (meter, channel) the billing
system has no credit for starts at seq 1. A meter whose register went through an epoch change (reset or
replaced) is continued from its virtual register: its first readings are then held as suspect
and confirmed as a new epoch, with zero energy assumed across the span, never more.

The ledger is built aside and moved into place only when complete, so an interrupted recovery
leaves no half-made ledger behind; the lineage record is written first (see
:mod:`gateway.ledger.lineage`), so a start after an interrupted recovery still refuses.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from cloud_sync.credit import ChainTip, CreditRejected, canonical_bytes, channel_of, credit_hash, parse_wire, verify
from cloud_sync.keys import Keypair
from gateway.channels import Channel
from gateway.credits import Tip
from gateway.errors import ConfigError, LedgerError
from gateway.intervals import MeterState
from gateway.intervals.engine import ACTUAL, ESTIMATED_GAP, SUBSTITUTED_GAP, Grade
from gateway.ledger import integrity, lineage
from gateway.ledger.lineage import DB_FILE
from gateway.ledger.store import ChainSeed, Ledger

RECOVERY_TIMEOUT_S = 60.0
"""Per request: a meter's whole credit history comes in one answer (a year is some 35 000 credits)."""
WORK_DIR = ".recovering"


class RecoveryError(LedgerError):
    """The chains could not be recovered; nothing was changed."""


@dataclass(frozen=True, slots=True)
class RecoveredTip:
    meter: str
    seq: int
    hash: str
    end: int
    """End of the newest interval the billing system holds a credit for (Unix seconds)."""
    register_end_wh: int
    quality: str
    signed_by_this_key: bool
    channel: Channel = Channel.IMPORT


def _grade(quality: str) -> Grade:
    return {"A": ACTUAL, "E": ESTIMATED_GAP}.get(quality, SUBSTITUTED_GAP)


def tip_from_credits(meter: str, gateway_id: str, public_key: str, items: Sequence[Any], *,
                     channel: Channel = Channel.IMPORT) -> RecoveredTip | None:
    """The tip of ``channel``'s chain to continue from, out of a meter's credits as the billing API lists them.

    Credits of the meter's other channel are checked like the rest and otherwise passed over.
    """
    best: tuple[int, dict[str, Any], str] | None = None
    newest: tuple[int, int, dict[str, Any]] | None = None
    for item in items:
        try:
            body, digest, _ = parse_wire(item)
        except CreditRejected as exc:
            raise RecoveryError(f"meter {meter}: the billing API returned a malformed credit ({exc})") from None
        if body["gateway"] != gateway_id or body["meter"] != meter:
            raise RecoveryError(f"meter {meter}: the billing API returned a credit of {body['gateway']}/"
                                f"{body['meter']}; check [uplinks.billing_api] url")
        if credit_hash(canonical_bytes(body)) != digest:
            raise RecoveryError(f"meter {meter}: credit seq {body['seq']} does not match its hash")
        if channel_of(body) != channel.value:
            continue
        if best is None or body["seq"] > best[0]:
            best = (body["seq"], item, digest)
        # The energy goes on from the newest boundary; of credits for it, the last issued is the latest value.
        if newest is None or (body["end"], body["seq"]) > (newest[0], newest[1]):
            newest = (body["end"], body["seq"], body)
    if best is None or newest is None:
        return None
    seq, item, digest = best
    signed_here = item["credit"]["gateway_key"] == public_key
    if signed_here:
        try:
            verify(item, expected_key=public_key, tip=ChainTip(seq - 1, item["credit"]["prev_hash"]))
        except CreditRejected as exc:
            raise RecoveryError(f"meter {meter}: the last credit (seq {seq}) does not verify ({exc})") from None
    body = newest[2]
    return RecoveredTip(meter, seq, digest, int(body["end"]), int(body["register_end_wh"]), str(body["quality"]),
                        signed_here, channel)


def seed_for(tip: RecoveredTip) -> ChainSeed:
    end_ms = tip.end * 1000
    state = MeterState(tip.meter, last_t_ms=end_ms, last_wh=tip.register_end_wh, anchor_s=tip.end,
                       anchor_wh=tip.register_end_wh, anchor_grade=_grade(tip.quality), offset_wh=0,
                       last_raw_wh=tip.register_end_wh, channel=tip.channel)
    return ChainSeed(Tip(tip.seq, tip.hash), state)


async def fetch_tips(url: str, token: str | None, gateway_id: str, meters: Sequence[str], public_key: str, *,
                     transport: httpx.AsyncBaseTransport | None = None) -> dict[str, list[RecoveredTip]]:
    """Each meter's last accepted credit per channel at the billing API (none: the meter has no credit).

    One request per meter, for all its channels (a receiver from before channels lists its v1
    credits, which are import).
    """
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    out: dict[str, list[RecoveredTip]] = {}
    async with httpx.AsyncClient(base_url=url.rstrip("/"), headers=headers, timeout=RECOVERY_TIMEOUT_S,
                                 transport=transport) as http:
        for meter in meters:
            path = f"/v1/gateways/{quote(gateway_id, safe='')}/meters/{quote(meter, safe='')}/credits"
            try:
                response = await http.get(path)
            except httpx.HTTPError as exc:
                raise RecoveryError(f"cannot reach the billing API at {url} ({exc.__class__.__name__}: {exc}); "
                                    "recovery needs it: check the network and [uplinks.billing_api] url") from None
            if response.status_code in (401, 403):
                raise RecoveryError(f"the billing API refused the token ({response.status_code}); check "
                                    "[uplinks.billing_api] token_file")
            if response.status_code != 200:
                raise RecoveryError(f"the billing API answered {response.status_code} for meter {meter} at {path}")
            try:
                items = response.json()["credits"]
            except (ValueError, KeyError, TypeError):
                raise RecoveryError(f"the billing API's answer for meter {meter} is not a credit list") from None
            if not isinstance(items, list):
                raise RecoveryError(f"the billing API's answer for meter {meter} is not a credit list")
            found = (tip_from_credits(meter, gateway_id, public_key, items, channel=channel) for channel in Channel)
            out[meter] = [tip for tip in found if tip is not None]
    return out


async def create_recovered_ledger(data_dir: Path, gateway_id: str, keypair: Keypair,
                                  tips: dict[str, list[RecoveredTip]], *, now_ms: int) -> Path:
    """Build the new ledger aside, then move it into place; returns its path."""
    target = data_dir / DB_FILE
    if lineage.has_ledger(target):
        raise RecoveryError(f"{target} exists: recovery only replaces a lost ledger. If it is damaged, move it "
                            "(with ledger.db-wal and ledger.db-shm) aside first")
    work = data_dir / WORK_DIR
    shutil.rmtree(work, ignore_errors=True)  # an interrupted earlier attempt
    work.mkdir(mode=0o700)
    try:
        ledger = await Ledger.open(work, gateway_id=gateway_id, keypair=keypair)
        try:
            await ledger.start_chains([seed_for(t) for found in tips.values() for t in found], now_ms=now_ms)
        finally:
            await ledger.close()
        built = work / DB_FILE
        wal = built.with_name(DB_FILE + "-wal")
        if wal.exists() and wal.stat().st_size:
            raise RecoveryError(f"the recovered ledger in {work} was not checkpointed; run the command again")
        # Lineage first: if we stop between the two, the next start still refuses (and recovery can rerun).
        lineage.record(data_dir, lineage.Lineage(gateway_id, keypair.public_key))
        for stale in (DB_FILE + "-wal", DB_FILE + "-shm"):
            with contextlib.suppress(FileNotFoundError):
                (data_dir / stale).unlink()
        os.replace(built, target)
        with contextlib.suppress(FileNotFoundError):
            (data_dir / integrity.DAMAGED_MARKER).unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def describe(tips: Sequence[RecoveredTip], meter: str) -> str:
    """One line per channel the billing system holds credits of (one line when it has none)."""
    if not tips:
        return f"{meter}: no credit at the billing system; its chains start at seq 1"
    lines = []
    for tip in tips:
        key = "" if tip.signed_by_this_key else " (signed by an earlier key)"
        series = meter if tip.channel is Channel.IMPORT else f"{meter} {tip.channel}"
        lines.append(f"{series}: continues after seq {tip.seq} ({tip.hash[:12]}...){key}, counting "
                     f"energy from {tip.register_end_wh} Wh at {tip.end}")
    return "\n".join(lines)


def api_settings(cfg_url: str | None, token_file: os.PathLike[str] | None) -> tuple[str, str | None]:
    if cfg_url is None:
        raise ConfigError("recovery needs the billing API: [uplinks.billing_api] url is not configured. Without "
                          "it, enrol a new key instead: 'meter-gateway identity --new-key'")
    token = None
    if token_file is not None:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read {token_file}: {exc.strerror}") from None
    return cfg_url, token
