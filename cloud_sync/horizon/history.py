"""What Horizon remembers of an included transaction: its record, its operations, who took part.

Records are built once, when the transaction is applied, as plain JSON-ready dicts with
Horizon's field names (links are added when they are served, since they depend on the URL
the client used). Ids are Horizon's TOIDs: ledger << 32 | application order << 12 | operation
index, so paging by id is paging in ledger order.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from stellar_sdk import xdr

from cloud_sync.horizon.entries import (
    AUTH_CLAWBACK_ENABLED,
    AUTH_IMMUTABLE,
    AUTH_REQUIRED,
    AUTH_REVOCABLE,
    TL_AUTHORIZED,
    TL_AUTHORIZED_TO_MAINTAIN_LIABILITIES,
    TL_CLAWBACK_ENABLED,
    Asset,
    format_amount,
)
from cloud_sync.horizon.envelope import (
    FeeBumpFrame,
    Preconditions,
    TxFrame,
    account_id_str,
    asset_of,
    muxed_id,
    muxed_ids,
    signer_key_str,
)
from cloud_sync.horizon.ops_trust import allow_trust_asset
from cloud_sync.horizon.transaction import TxOutcome, op_source

T = xdr.OperationType
PAYMENT_TYPES = frozenset({T.CREATE_ACCOUNT, T.PAYMENT, T.PATH_PAYMENT_STRICT_RECEIVE,
                           T.PATH_PAYMENT_STRICT_SEND, T.ACCOUNT_MERGE})
ACCOUNT_FLAG_NAMES = ((AUTH_REQUIRED, "auth_required_flag"), (AUTH_REVOCABLE, "auth_revocable_flag"),
                      (AUTH_IMMUTABLE, "auth_immutable_flag"), (AUTH_CLAWBACK_ENABLED, "auth_clawback_enabled_flag"))
TRUSTLINE_FLAG_NAMES = ((TL_AUTHORIZED, "authorized"),
                        (TL_AUTHORIZED_TO_MAINTAIN_LIABILITIES, "authorized_to_maintain_liabilities"),
                        (TL_CLAWBACK_ENABLED, "clawback_enabled"))


def toid(ledger: int, order: int = 0, index: int = 0) -> int:
    return (ledger << 32) | (order << 12) | index


def iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class OpRecord:
    id: int
    tx_hash: str
    is_payment: bool
    successful: bool
    participants: frozenset[str]
    record: dict[str, Any]


@dataclass(frozen=True, slots=True)
class TxRecord:
    id: int
    hash: str
    inner_hash: str | None
    ledger: int
    successful: bool
    participants: frozenset[str]
    record: dict[str, Any]
    operations: tuple[OpRecord, ...]


def build_records(outcome: TxOutcome, envelope_xdr: str, ledger: int, order: int, close_time: int) -> TxRecord:
    frame = outcome.frame
    inner = frame.inner if isinstance(frame, FeeBumpFrame) else frame
    tx_id = toid(ledger, order)
    rec: dict[str, Any] = {
        "id": outcome.hash_hex, "paging_token": str(tx_id), "successful": outcome.successful,
        "hash": outcome.hash_hex, "ledger": ledger, "created_at": iso(close_time),
        "source_account": inner.source, "source_account_sequence": str(inner.seq_num),
        "fee_account": inner.source, "fee_charged": str(outcome.fee_charged), "max_fee": str(inner.fee),
        "operation_count": len(inner.ops), "envelope_xdr": envelope_xdr,
        "result_xdr": outcome.result.to_xdr(), **_memo(inner.tx.memo),
        "signatures": _signatures(inner.signatures), **_bounds(inner.cond),
    }
    _muxed(rec, "source_account", inner.tx.source_account)
    participants = {inner.source}
    if isinstance(frame, FeeBumpFrame):
        rec.update(fee_account=frame.fee_source, max_fee=str(frame.fee), signatures=_signatures(frame.signatures),
                   fee_bump_transaction={"hash": outcome.hash_hex, "signatures": _signatures(frame.signatures)},
                   inner_transaction={"hash": inner.hash.hex(), "signatures": _signatures(inner.signatures),
                                      "max_fee": str(inner.fee)})
        participants.add(frame.fee_source)
    ops = tuple(_op_record(inner, i, op, tx_id, outcome, close_time) for i, op in enumerate(inner.ops))
    for op in ops:
        participants |= op.participants
    return TxRecord(tx_id, outcome.hash_hex, inner.hash.hex() if isinstance(frame, FeeBumpFrame) else None,
                    ledger, outcome.successful, frozenset(participants), rec, ops)


def _signatures(sigs: tuple[xdr.DecoratedSignature, ...]) -> list[str]:
    return [base64.b64encode(s.signature.signature).decode() for s in sigs]


def _memo(memo: xdr.Memo) -> dict[str, Any]:
    t = memo.type
    if t == xdr.MemoType.MEMO_TEXT:
        assert memo.text is not None
        return {"memo_type": "text", "memo": memo.text.decode("utf-8", errors="replace"),
                "memo_bytes": base64.b64encode(memo.text).decode()}
    if t == xdr.MemoType.MEMO_ID:
        assert memo.id is not None
        return {"memo_type": "id", "memo": str(memo.id.uint64)}
    if t == xdr.MemoType.MEMO_HASH:
        assert memo.hash is not None
        return {"memo_type": "hash", "memo": base64.b64encode(memo.hash.hash).decode()}
    if t == xdr.MemoType.MEMO_RETURN:
        assert memo.ret_hash is not None
        return {"memo_type": "return", "memo": base64.b64encode(memo.ret_hash.hash).decode()}
    return {"memo_type": "none"}


def _bounds(cond: Preconditions) -> dict[str, Any]:
    pre: dict[str, Any] = {}
    out: dict[str, Any] = {}
    if cond.has_time_bounds:
        pre["timebounds"] = {"min_time": str(cond.min_time)}
        out["valid_after"] = iso(cond.min_time)
        if cond.max_time:
            pre["timebounds"]["max_time"] = str(cond.max_time)
            out["valid_before"] = iso(cond.max_time)
    if cond.has_ledger_bounds:
        pre["ledgerbounds"] = {"min_ledger": cond.min_ledger}
        if cond.max_ledger:
            pre["ledgerbounds"]["max_ledger"] = cond.max_ledger
    if cond.min_seq_num is not None:
        pre["min_account_sequence"] = str(cond.min_seq_num)
    if cond.min_seq_age:
        pre["min_account_sequence_age"] = str(cond.min_seq_age)
    if cond.min_seq_ledger_gap:
        pre["min_account_sequence_ledger_gap"] = cond.min_seq_ledger_gap
    if cond.extra_signers:
        pre["extra_signers"] = [signer_key_str(k) for k in cond.extra_signers]
    if pre:
        out["preconditions"] = pre
    return out


def _muxed(rec: dict[str, Any], field: str, account: xdr.MuxedAccount) -> None:
    _, m = muxed_ids(account)
    if m is not None:
        rec[f"{field}_muxed"] = m
        rec[f"{field}_muxed_id"] = str(muxed_id(account))


def _asset_fields(asset: Asset | None) -> dict[str, str]:
    if asset is None:
        return {"asset_type": "native"}
    return {"asset_type": asset.asset_type, "asset_code": asset.code, "asset_issuer": asset.issuer}


def _flags(value: int, names: tuple[tuple[int, str], ...], field: str) -> dict[str, Any]:
    bits = [(bit, name) for bit, name in names if value & bit]
    return {field: [b for b, _ in bits], f"{field}_s": [n for _, n in bits]} if bits else {}


def _op_record(frame: TxFrame, index: int, op: xdr.Operation, tx_id: int, outcome: TxOutcome,
               close_time: int) -> OpRecord:
    source = op_source(frame, op)
    op_id = tx_id | (index + 1)
    body = op.body
    rec: dict[str, Any] = {
        "id": str(op_id), "paging_token": str(op_id), "transaction_successful": outcome.successful,
        "source_account": source, "type": body.type.name.lower(), "type_i": body.type.value,
        "created_at": iso(close_time), "transaction_hash": outcome.hash_hex,
    }
    if op.source_account is not None:
        _muxed(rec, "source_account", op.source_account)
    others = _details(frame, index, body, source, rec)
    return OpRecord(op_id, outcome.hash_hex, body.type in PAYMENT_TYPES, outcome.successful,
                    frozenset({source, *others}), rec)


def _details(frame: TxFrame, index: int, body: xdr.OperationBody, source: str, rec: dict[str, Any]) -> set[str]:
    """Fill in Horizon's per-type fields; return the other accounts the operation involves."""
    t = body.type
    if t == T.CREATE_ACCOUNT and (ca := body.create_account_op) is not None:
        dest = account_id_str(ca.destination)
        rec.update(starting_balance=format_amount(ca.starting_balance.int64), funder=source, account=dest)
        return {dest}
    if t == T.PAYMENT and (p := body.payment_op) is not None:
        dest, _ = muxed_ids(p.destination)
        asset, _ = asset_of(p.asset)
        rec.update(**_asset_fields(asset), **{"from": source, "to": dest, "amount": format_amount(p.amount.int64)})
        _muxed(rec, "to", p.destination)
        return {dest}
    if t == T.CHANGE_TRUST and (ct := body.change_trust_op) is not None:
        line, _ = asset_of(ct.line)
        rec.update(**_asset_fields(line), limit=format_amount(ct.limit.int64), trustor=source)
        if line is not None:
            rec["trustee"] = line.issuer
        return set()
    if t == T.SET_OPTIONS and (so := body.set_options_op) is not None:
        for name, value in (("master_key_weight", so.master_weight), ("low_threshold", so.low_threshold),
                            ("med_threshold", so.med_threshold), ("high_threshold", so.high_threshold)):
            if value is not None:
                rec[name] = value.uint32
        if so.home_domain is not None:
            rec["home_domain"] = so.home_domain.string32.decode("ascii", errors="replace")
        if so.inflation_dest is not None:
            rec["inflation_dest"] = account_id_str(so.inflation_dest)
        if so.signer is not None:
            rec.update(signer_key=signer_key_str(so.signer.key), signer_weight=so.signer.weight.uint32)
        rec.update(_flags(so.set_flags.uint32 if so.set_flags else 0, ACCOUNT_FLAG_NAMES, "set_flags"))
        rec.update(_flags(so.clear_flags.uint32 if so.clear_flags else 0, ACCOUNT_FLAG_NAMES, "clear_flags"))
        return set()
    if t == T.MANAGE_DATA and (md := body.manage_data_op) is not None:
        rec.update(name=md.data_name.string64.decode("ascii", errors="replace"),
                   value=base64.b64encode(md.data_value.data_value).decode() if md.data_value else "")
        return set()
    if t == T.BUMP_SEQUENCE and (bs := body.bump_sequence_op) is not None:
        rec["bump_to"] = str(bs.bump_to.sequence_number.int64)
        return set()
    if t == T.BEGIN_SPONSORING_FUTURE_RESERVES and (b := body.begin_sponsoring_future_reserves_op) is not None:
        rec["sponsored_id"] = account_id_str(b.sponsored_id)
        return {rec["sponsored_id"]}
    if t == T.END_SPONSORING_FUTURE_RESERVES:
        rec["begin_sponsor"] = _begin_sponsor(frame, index, source)
        return set()
    if t == T.ALLOW_TRUST and (at := body.allow_trust_op) is not None:
        trustor = account_id_str(at.trustor)
        asset, _ = allow_trust_asset(at, source)
        rec.update(**_asset_fields(asset), trustee=source, trustor=trustor,
                   authorize=bool(at.authorize.uint32 & TL_AUTHORIZED),
                   authorize_to_maintain_liabilities=bool(at.authorize.uint32 & TL_AUTHORIZED_TO_MAINTAIN_LIABILITIES))
        return {trustor}
    if t == T.SET_TRUST_LINE_FLAGS and (sf := body.set_trust_line_flags_op) is not None:
        trustor = account_id_str(sf.trustor)
        asset, _ = asset_of(sf.asset)
        rec.update(**_asset_fields(asset), trustor=trustor)
        rec.update(_flags(sf.set_flags.uint32, TRUSTLINE_FLAG_NAMES, "set_flags"))
        rec.update(_flags(sf.clear_flags.uint32, TRUSTLINE_FLAG_NAMES, "clear_flags"))
        return {trustor}
    return set()


def _begin_sponsor(frame: TxFrame, index: int, sponsored: str) -> str | None:
    """Who opened the sponsorship this operation closes (always earlier in the same transaction)."""
    for op in reversed(frame.ops[:index]):
        b = op.body.begin_sponsoring_future_reserves_op
        if op.body.type == T.BEGIN_SPONSORING_FUTURE_RESERVES and b and account_id_str(b.sponsored_id) == sponsored:
            return op_source(frame, op)
    return None
