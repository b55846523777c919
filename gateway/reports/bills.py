"""Numbered bills with history: issue, list, show and verify bills kept in the ledger.

**Numbers.** ``BILL-<YYYYMM>-<meter>-<NNNN>``, e.g. ``BILL-202512-flat-1-0001``: YYYYMM is the local month
the billed period starts in, NNNN the meter's own issue counter (1, 2, 3, … without a gap; more digits
after 9999). Per meter rather than per site because the meter is the billed account: a customer's bills
form one series in which a missing number is a missing bill — a site-wide counter interleaves every
customer, so a gap in one customer's bills would prove nothing. The month is for people; the counter
alone makes a number unique on the box. Across a fleet a bill is named by gateway and number (the
document holds both).

**What is stored**, once, never updated or deleted (SQLite triggers refuse both; see migration 0003):
the *document* — canonical JSON of the bill as issued: number, meter and NMI, period, the tariff as used
(every rate), line items and total, issue time, the bill it replaces, and the intervals it rests on as
their count by quality plus a SHA-256 digest — and the gateway's ed25519 signature over it. The intervals
themselves stay in the ledger, which never prunes them. A copy of every interval would double the card's
billing data for nothing the digest cannot show; so a bill is verified later (:func:`verify_bill`) by

1. the signature (this gateway issued exactly this document; anyone with its ``G…`` key can check),
2. re-pricing the counted intervals under the stored tariff (the same line items and total), and
3. the digest of the intervals the ledger holds *now*: equal, or — a late reading revised an interval
   whose credit had not yet left the box — different, and the bill should be re-issued.

**Export (feed-in).** A meter whose ledger holds export intervals for the period is billed with its feed-in
(``gateway.billing.feed_in``); its document then also holds ``export_data`` — the export intervals' count by
quality and their digest by the same rule — and verification re-prices and re-digests both channels. A
bill without export intervals has exactly the document it had before channels existed (no new key).

Digest rule, so that a system holding the credits can recompute it: SHA-256 over one ASCII line per
stored interval of the period, in time order, ``"{start},{end},{wh},{quality}\\n"`` (Unix seconds).

**Re-billing.** Billing a period again issues the meter's next number with ``replaces`` naming the bill
it supersedes; that bill stays, shown as replaced. Billing exactly the period of a current bill replaces
it; a period that overlaps a current bill otherwise (a move-out that shortens a billed month) is refused
unless ``replaces`` names that bill — two current bills never cover the same day. A bill is replaced at
most once: the next re-bill replaces the newest of the chain.

**Writes** go through the ledger's single writer (``Ledger._transaction``): the period's intervals, the
pricing, the next number and the insert are one transaction, so two issuers can never take one number
and the digest is of exactly the intervals that were priced. Reads use the read-only connection.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sqlite3
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import aiosqlite

from cloud_sync.keys import Keypair, KeyPairError
from gateway.billing import BillingError, BillingPeriod, Tariff, compute_bill, format_minor
from gateway.channels import Channel
from gateway.config import GatewayConfig
from gateway.errors import LedgerError
from gateway.ledger.connection import rows
from gateway.ledger.faults import translate
from gateway.ledger.queries import series_intervals_sql, series_params
from gateway.ledger.store import Ledger, StoredInterval
from gateway.reports.service import MeterBill, ReportConfigError, meter_bill, tariff_for
from gateway.reports.source import ReadOnlyLedger

DOCUMENT_VERSION = 1
SIGNING_DOMAIN = b"meter-gateway/bill/v1\n"
"""Prefixed to the document before signing, so a bill signature can never pass for a credit's (or back)."""
NUMBER_RE = re.compile(r"^BILL-(\d{6})-([A-Za-z0-9][A-Za-z0-9_.\-]*)-(\d{4,})$")
DIGEST_RULE = "sha256 of 'start,end,wh,quality\\n' per stored interval, in time order, Unix seconds"

BillSource = Ledger | ReadOnlyLedger
"""Where bills are read from: the daemon's ledger (its read connection) or a read-only one beside it."""


class BillRefused(ReportConfigError):
    """The bill cannot be issued as asked (a period not over yet, an overlap, a bad ``replaces``)."""


class UnknownBill(ReportConfigError):
    """No bill with that number."""


# ---- pure: numbers, digests, documents -------------------------------------------------------------


def bill_number(month: str, meter: str, seq: int) -> str:
    return f"BILL-{month}-{meter}-{seq:04d}"


def period_month(period: BillingPeriod) -> str:
    return f"{period.start.year:04d}{period.start.month:02d}"


def intervals_digest(intervals: Sequence[StoredInterval]) -> str:
    """The digest rule of the module docstring."""
    h = hashlib.sha256()
    for iv in intervals:
        h.update(f"{iv.start},{iv.end},{iv.wh},{iv.quality}\n".encode("ascii"))
    return h.hexdigest()


def canonical(doc: dict[str, Any]) -> str:
    """Sorted keys, no spaces, ASCII: one text per document, so its hash and signature are stable."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def tariff_fingerprint(cfg: GatewayConfig, meter: str) -> str:
    """The meter's tariff, exactly (SHA-256 of its canonical JSON): what the CLI and the daemon compare, so a
    bill is never issued under a tariff other than the one the operator's config file gives."""
    return hashlib.sha256(canonical(tariff_for(cfg, meter).model_dump(mode="json")).encode("ascii")).hexdigest()


def sign_document(text: str, keypair: Keypair) -> str:
    return base64.b64encode(keypair.sign(SIGNING_DOMAIN + text.encode("ascii"))).decode("ascii")


def signature_valid(text: str, signature: str, public_key: str) -> bool:
    try:
        Keypair.from_public_key(public_key).verify(SIGNING_DOMAIN + text.encode("ascii"),
                                                   base64.b64decode(signature, validate=True))
    except (KeyPairError, ValueError):
        return False
    return True


def _iso_z(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _data_summary(intervals: Sequence[StoredInterval]) -> dict[str, Any]:
    return {
        "intervals": len(intervals),
        "qualities": dict(sorted(Counter(iv.quality for iv in intervals).items())),
        "sha256": intervals_digest(intervals),
        "digest_rule": DIGEST_RULE,
    }


def bill_document(*, number: str, seq: int, gateway_id: str, gateway_key: str, meter: str, nmi: str | None,
                  priced: MeterBill, tariff: Tariff, intervals: Sequence[StoredInterval], issued: datetime,
                  replaces: str | None, export_intervals: Sequence[StoredInterval] = ()) -> dict[str, Any]:
    """The bill as issued, as plain JSON values (see the module docstring for what each part is for)."""
    bill = priced.bill
    extra: dict[str, Any] = {}
    if priced.export_data is not None:
        extra["export_data"] = {**_data_summary(export_intervals), "intervals_expected": priced.export_data.expected,
                                "intervals_priced": priced.export_data.present}
    return {
        "v": DOCUMENT_VERSION,
        "kind": "bill",
        "number": number,
        "seq": seq,
        "gateway": gateway_id,
        "gateway_key": gateway_key,
        "meter": meter,
        "nmi": nmi,
        "issued_at": _iso_z(issued),
        "replaces": replaces,
        "tariff_as_used": tariff.model_dump(mode="json"),
        **bill.to_dict(),
        "total": bill.total,
        "data": {
            "intervals": len(intervals),
            "intervals_expected": priced.data.expected,
            "intervals_priced": priced.data.present,
            "qualities": dict(sorted(Counter(iv.quality for iv in intervals).items())),
            "sha256": intervals_digest(intervals),
            "digest_rule": DIGEST_RULE,
        },
        **extra,
    }


# ---- what callers get -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IssuedBillSummary:
    """One line of a meter's bill history."""

    number: str
    meter: str
    period_from: date
    """First local day billed."""
    period_to: date
    """First local day *not* billed (as ``BillingPeriod.end``); :attr:`last_day` is the last one billed."""
    total: str
    """In major units, as printed ("115.06"); :attr:`total_minor` for sums."""
    total_minor: int
    currency: str
    issued_at: datetime
    replaces: str | None
    replaced_by: str | None

    @property
    def last_day(self) -> date:
        return date.fromordinal(self.period_to.toordinal() - 1)

    @property
    def current(self) -> bool:
        return self.replaced_by is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "meter": self.meter,
            "period": {"start": self.period_from.isoformat(), "end": self.period_to.isoformat(),
                       "last_day": self.last_day.isoformat()},
            "currency": self.currency,
            "total": self.total,
            "total_minor": self.total_minor,
            "issued_at": _iso_z(self.issued_at),
            "replaces": self.replaces,
            "replaced_by": self.replaced_by,
            "status": "current" if self.current else "replaced",
        }


@dataclass(frozen=True, slots=True)
class IssuedBill:
    summary: IssuedBillSummary
    document: str
    """The canonical JSON exactly as stored and signed."""
    document_sha256: str
    signature: str

    @property
    def number(self) -> str:
        return self.summary.number

    @property
    def content(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.document)
        return parsed

    def to_dict(self) -> dict[str, Any]:
        return {**self.content, "status": "current" if self.summary.current else "replaced",
                "replaced_by": self.summary.replaced_by, "document_sha256": self.document_sha256,
                "signature": self.signature}


@dataclass(frozen=True, slots=True)
class Verification:
    signature_ok: bool
    repriced_ok: bool
    """Re-pricing the stored intervals under the stored tariff gives the stored line items and total."""
    intervals_unchanged: bool
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.signature_ok and self.repriced_ok and self.intervals_unchanged

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "signature": self.signature_ok, "repriced": self.repriced_ok,
                "intervals_unchanged": self.intervals_unchanged, "problems": list(self.problems)}


# ---- the ledger -------------------------------------------------------------------------------------

_COLUMNS = ("number, meter, period_from, period_to, total_minor, minor_units, currency, issued_ms, replaces, "
            "(SELECT r.number FROM bills r WHERE r.replaces = b.number)")
_MISSING = ("this ledger holds no bills table yet (its schema predates numbered bills): start the daemon once "
            "with this gateway version so it migrates the ledger")


def _summary(row: Sequence[Any]) -> IssuedBillSummary:
    number, meter, p_from, p_to, total_minor, minor_units, currency, issued_ms, replaces, replaced_by = row
    return IssuedBillSummary(str(number), str(meter), date.fromisoformat(p_from), date.fromisoformat(p_to),
                             format_minor(int(total_minor), int(minor_units)), int(total_minor), str(currency),
                             datetime.fromtimestamp(int(issued_ms) / 1000, UTC), replaces, replaced_by)


async def _query(source: BillSource, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    reader = source.query if isinstance(source, ReadOnlyLedger) else (lambda s, p: rows(source._r, s, p))
    try:
        if not await reader("SELECT 1 FROM sqlite_master WHERE type='table' AND name='bills'", ()):
            raise LedgerError(f"{source.path}: {_MISSING}")
        return await reader(sql, params)
    except sqlite3.Error as exc:
        raise translate(exc, source.path, "read the bills") from None


async def list_bills(ledger: BillSource, meter: str) -> list[IssuedBillSummary]:
    """Every bill of ``meter``, oldest number first, replaced ones included (marked by ``replaced_by``)."""
    found = await _query(ledger, f"SELECT {_COLUMNS} FROM bills b WHERE meter=? ORDER BY seq", (meter,))
    return [_summary(row) for row in found]


async def get_bill(ledger: BillSource, number: str) -> IssuedBill:
    """The bill with this number; :class:`UnknownBill` if there is none."""
    found = await _query(ledger, f"SELECT {_COLUMNS}, document, document_sha256, signature FROM bills b "
                                 "WHERE number=?", (number,))
    if not found:
        hint = "" if NUMBER_RE.match(number) else " (numbers look like BILL-202512-flat-1-0001)"
        raise UnknownBill(f"no bill {number!r} in {ledger.path}{hint}")
    row = found[0]
    return IssuedBill(_summary(row[:10]), str(row[10]), str(row[11]), str(row[12]))


class _Intervals:
    """The period's intervals read on the write connection, inside the issuing transaction."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        self.fetched: dict[Channel, list[StoredInterval]] = {}

    async def stored_intervals(self, meter: str, start: int, end: int, *,
                               channel: Channel = Channel.IMPORT) -> list[StoredInterval]:
        found = await rows(self._db, series_intervals_sql('meter, start, "end", wh, quality, method, reason'),
                           series_params(meter, channel, start, end))
        self.fetched[channel] = [StoredInterval(str(m), int(a), int(b), int(w), str(q), mt, rs, channel)
                                 for m, a, b, w, q, mt, rs in found]
        return self.fetched[channel]


async def _choose_replaced(db: aiosqlite.Connection, meter: str, period: BillingPeriod,
                           replaces: str | None) -> str | None:
    """The bill the new one replaces (module docstring, "Re-billing"); BillRefused for a conflict."""
    overlapping = await rows(db,
        "SELECT number, period_from, period_to FROM bills b WHERE meter=? AND period_from < ? AND period_to > ? "
        "AND NOT EXISTS (SELECT 1 FROM bills r WHERE r.replaces = b.number) ORDER BY seq",
        (meter, period.end.isoformat(), period.start.isoformat()))
    if replaces is not None:
        named = await rows(db, "SELECT meter, (SELECT r.number FROM bills r WHERE r.replaces = b.number) "
                               "FROM bills b WHERE number=?", (replaces,))
        if not named or named[0][0] != meter:
            raise BillRefused(f"meter {meter!r} has no bill {replaces!r} to replace")
        if named[0][1] is not None:
            raise BillRefused(f"{replaces} was already replaced by {named[0][1]}: replace the newest bill of the "
                              "chain instead")
    same = [number for number, p_from, p_to in overlapping
            if (p_from, p_to) == (period.start.isoformat(), period.end.isoformat())]
    chosen = replaces if replaces is not None else (same[0] if same else None)
    others = [f"{number} ({p_from} to {p_to}, end exclusive)" for number, p_from, p_to in overlapping
              if number != chosen]
    if others:
        raise BillRefused(
            f"the period {period.start} to {period.end} (end exclusive) overlaps {', '.join(others)}; bill exactly "
            "that period to re-bill it, or name the bill this one takes the place of with --replaces NUMBER")
    return chosen


async def issue_bill(ledger: Ledger, cfg: GatewayConfig, meter: str, period: BillingPeriod, *, keypair: Keypair,
                     now: datetime, replaces: str | None = None) -> IssuedBill:
    """Price ``period`` from the stored intervals and store it as the meter's next numbered bill.

    Refused (:class:`BillRefused`) for a period that has not ended by ``now``: its bill would lack the
    intervals still to come, and an issued bill cannot be completed later, only replaced.
    """
    tariff = tariff_for(cfg, meter)
    if period.end_utc > now:
        raise BillRefused(f"the period {period.start} to {period.end} (end exclusive) is not over until "
                          f"{_iso_z(period.end_utc)}; issue its bill after that (or bill without --issue to see "
                          "it so far)")
    entry = cfg.meter(meter)
    month = period_month(period)
    try:
        async with ledger._transaction() as db:
            if not await rows(db, "SELECT 1 FROM sqlite_master WHERE type='table' AND name='bills'"):
                raise LedgerError(f"{ledger.path}: {_MISSING}")
            source = _Intervals(db)
            try:
                priced = await meter_bill(source, cfg, meter, period)
            except BillingError as exc:
                raise BillRefused(f"meter {meter!r}: {exc}") from None
            imported = source.fetched.get(Channel.IMPORT, [])
            replaced = await _choose_replaced(db, meter, period, replaces)
            (last,) = (await rows(db, "SELECT COALESCE(MAX(seq), 0) FROM bills WHERE meter=?", (meter,)))[0]
            seq = int(last) + 1
            number = bill_number(month, meter, seq)
            doc = bill_document(number=number, seq=seq, gateway_id=cfg.gateway_id, gateway_key=keypair.public_key,
                                meter=meter, nmi=entry.nmi if entry is not None else None, priced=priced,
                                tariff=tariff, intervals=imported, issued=now, replaces=replaced,
                                export_intervals=source.fetched.get(Channel.EXPORT, []))
            text = canonical(doc)
            digest = hashlib.sha256(text.encode("ascii")).hexdigest()
            signature = sign_document(text, keypair)
            bill = priced.bill
            await db.execute(
                "INSERT INTO bills (number, meter, seq, month, period_from, period_to, issued_ms, replaces, currency, "
                "minor_units, total_minor, intervals, intervals_sha256, document, document_sha256, signature) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (number, meter, seq, month, period.start.isoformat(), period.end.isoformat(),
                 int(now.timestamp() * 1000), replaced, bill.currency, bill.minor_units, bill.total_minor,
                 len(imported), doc["data"]["sha256"], text, digest, signature))
    except sqlite3.Error as exc:
        raise translate(exc, ledger.path, f"issue a bill for {meter}") from None
    summary = IssuedBillSummary(number, meter, period.start, period.end, bill.total, bill.total_minor,
                                bill.currency, datetime.fromtimestamp(int(now.timestamp() * 1000) / 1000, UTC),
                                replaced, None)
    return IssuedBill(summary, text, digest, signature)


async def verify_bill(source: BillSource, bill: IssuedBill) -> Verification:
    """Check an issued bill against its signature, its own tariff and the intervals the ledger holds now."""
    doc = bill.content
    problems: list[str] = []
    signature_ok = signature_valid(bill.document, bill.signature, str(doc.get("gateway_key", "")))
    if not signature_ok:
        problems.append("the signature does not match the document: it is not the bill this gateway issued")
    if hashlib.sha256(bill.document.encode("ascii")).hexdigest() != bill.document_sha256:
        signature_ok = False
        problems.append("the document's SHA-256 is not the one recorded at issue")
    period = BillingPeriod(date.fromisoformat(doc["period"]["start"]), date.fromisoformat(doc["period"]["end"]),
                           doc["period"]["tz"])
    start, end = int(period.start_utc.timestamp()), int(period.end_utc.timestamp())
    now = await source.stored_intervals(doc["meter"], start, end)
    intervals_unchanged = intervals_digest(now) == doc["data"]["sha256"]
    if not intervals_unchanged:
        problems.append(f"the ledger's intervals for this period changed since the bill was issued (a late reading "
                        f"revised them; {len(now)} intervals now, {doc['data']['intervals']} then): re-bill the "
                        "period to issue a bill on the current data")
    export_now: list[StoredInterval] | None = None
    if "export_data" in doc:
        export_now = await source.stored_intervals(doc["meter"], start, end, channel=Channel.EXPORT)
        if intervals_digest(export_now) != doc["export_data"]["sha256"]:
            intervals_unchanged = False
            problems.append(f"the ledger's export intervals for this period changed since the bill was issued "
                            f"({len(export_now)} intervals now, {doc['export_data']['intervals']} then): re-bill "
                            "the period to issue a bill on the current data")

    def usage(found: Sequence[StoredInterval]) -> list[tuple[datetime, int]]:
        return [(datetime.fromtimestamp(iv.start, UTC), iv.wh) for iv in found if iv.quality != "N"]

    try:
        repriced = compute_bill(Tariff.model_validate(doc["tariff_as_used"]), usage(now), period,
                                export=None if export_now is None else usage(export_now)).to_dict()
        repriced_ok = intervals_unchanged and all(repriced[k] == doc[k] for k in ("line_items", "total_minor"))
    except (BillingError, ValueError) as exc:
        repriced_ok = False
        problems.append(f"the stored tariff no longer prices these intervals: {exc}")
    else:
        if intervals_unchanged and not repriced_ok:
            problems.append("re-pricing the intervals under the stored tariff gives other line items")
    return Verification(signature_ok, repriced_ok, intervals_unchanged, tuple(problems))
