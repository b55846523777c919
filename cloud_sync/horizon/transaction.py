"""One transaction against the ledger: is it acceptable, and what does applying it do?

The pure heart of the local ledger, after stellar-core's TransactionFrame: ``apply_transaction``
takes a state, the open ledger and a decoded envelope, and returns the XDR result and the
changed entries. Nothing here does I/O, so every rule is tested without HTTP.

Two kinds of failure, as on the network:

* **not accepted** (validation): malformed, too early or late, fee bid too low, bad sequence,
  signatures below the source's low threshold or an operation source's threshold
  (``op_bad_auth``), unused signatures, a fee the source cannot pay. Nothing changes: no fee,
  no sequence number, no history; the same envelope may become valid later.
* **accepted but failed**: the fee is charged (base fee × operations, capped at the bid) and the
  sequence number consumed, then the operations run, each in its own overlay; if any fails, all
  their effects are dropped and the result is ``tx_failed`` with every operation's code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from stellar_sdk import StrKey, xdr

from cloud_sync.horizon import codes
from cloud_sync.horizon.codes import TX
from cloud_sync.horizon.context import LedgerContext, OpContext, needed_weight
from cloud_sync.horizon.entries import INT64_MAX, Account, Entry, Key, Signer, account_key, available_balance
from cloud_sync.horizon.envelope import FeeBumpFrame, Frame, TxFrame, muxed_ids, signer_key_str
from cloud_sync.horizon.operations import RULES
from cloud_sync.horizon.signatures import SignatureChecker
from cloud_sync.horizon.sponsorship import remove_subentry
from cloud_sync.horizon.state import EntryReader, Overlay

SOROBAN_OPS = frozenset({xdr.OperationType.INVOKE_HOST_FUNCTION, xdr.OperationType.EXTEND_FOOTPRINT_TTL,
                         xdr.OperationType.RESTORE_FOOTPRINT})


@dataclass(frozen=True, slots=True)
class TxOutcome:
    frame: Frame
    result: xdr.TransactionResult
    included: bool
    """Fee charged and sequence consumed: the transaction is in the ledger (successful or not)."""
    fee_charged: int = 0
    changes: dict[Key, Entry | None] = field(default_factory=dict)

    @property
    def successful(self) -> bool:
        return self.result.result.code in (TX.txSUCCESS, TX.txFEE_BUMP_INNER_SUCCESS)

    @property
    def hash_hex(self) -> str:
        return self.frame.hash.hex()

    @property
    def code_name(self) -> str:
        return codes.TX_NAMES[self.result.result.code]


def op_source(frame: TxFrame, op: xdr.Operation) -> str:
    return muxed_ids(op.source_account)[0] if op.source_account is not None else frame.source


def apply_transaction(state: EntryReader, ledger: LedgerContext, frame: Frame) -> TxOutcome:
    """Validate ``frame`` against ``state`` and, if acceptable, apply it in ``ledger``."""
    view = Overlay(state)
    if isinstance(frame, FeeBumpFrame):
        return _fee_bump(view, ledger, frame)
    checker = SignatureChecker(frame.hash, frame.signatures)
    refused = _check_valid(view, ledger, frame, checker, charge_fee=True)
    if refused is not None:
        return TxOutcome(frame, _tx_result(frame.fee, refused), included=False)
    source = view.account(frame.source)
    assert source is not None
    charged = min(source.balance, min(frame.fee, ledger.base_fee * len(frame.ops)))
    source.balance -= charged
    inner = _apply_inner(view, ledger, frame)
    return TxOutcome(frame, _tx_result(charged, inner), included=True, fee_charged=charged,
                     changes=view.changes())


def _fee_bump(view: Overlay, ledger: LedgerContext, frame: FeeBumpFrame) -> TxOutcome:
    inner = frame.inner
    n = len(inner.ops)
    refused: xdr.TransactionResultResult | None = None
    fee_source = view.get_entry(account_key(frame.fee_source))
    checker = SignatureChecker(frame.hash, frame.signatures)
    if frame.fee < ledger.base_fee * (n + 1) or frame.fee * max(n, 1) < inner.fee * (n + 1):
        refused = xdr.TransactionResultResult(TX.txINSUFFICIENT_FEE)
    elif fee_source is None:
        refused = xdr.TransactionResultResult(TX.txNO_ACCOUNT)
    else:
        assert isinstance(fee_source, Account)
        if not checker.check_account(fee_source, fee_source.low_threshold):
            refused = xdr.TransactionResultResult(TX.txBAD_AUTH)
        elif available_balance(fee_source, ledger.base_reserve) < frame.fee:
            refused = xdr.TransactionResultResult(TX.txINSUFFICIENT_BALANCE)
        elif not checker.all_used():
            refused = xdr.TransactionResultResult(TX.txBAD_AUTH_EXTRA)
    if refused is not None:
        return TxOutcome(frame, xdr.TransactionResult(xdr.Int64(frame.fee), refused, xdr.TransactionResultExt(0)),
                         included=False)
    inner_refused = _check_valid(view, ledger, inner, SignatureChecker(inner.hash, inner.signatures),
                                 charge_fee=False)
    if inner_refused is not None:
        return TxOutcome(frame, _fee_bump_result(frame, frame.fee, inner_refused), included=False)
    payer = view.account(frame.fee_source)
    assert payer is not None
    charged = min(payer.balance, min(frame.fee, ledger.base_fee * (n + 1)))
    payer.balance -= charged
    applied = _apply_inner(view, ledger, inner)
    return TxOutcome(frame, _fee_bump_result(frame, charged, applied), included=True, fee_charged=charged,
                     changes=view.changes())


def _check_valid(view: Overlay, ledger: LedgerContext, frame: TxFrame, checker: SignatureChecker,
                 *, charge_fee: bool) -> xdr.TransactionResultResult | None:
    """stellar-core's checkValid: None if the transaction may be included, else why not."""
    def refuse(code: xdr.TransactionResultCode) -> xdr.TransactionResultResult:
        return xdr.TransactionResultResult(code)

    n, cond = len(frame.ops), frame.cond
    if n == 0:
        return refuse(TX.txMISSING_OPERATION)
    if frame.has_soroban_data and not any(op.body.type in SOROBAN_OPS for op in frame.ops):
        return refuse(TX.txMALFORMED)
    if (cond.min_time and cond.min_time > ledger.close_time) or cond.min_ledger > ledger.seq:
        return refuse(TX.txTOO_EARLY)
    if (cond.max_time and cond.max_time < ledger.close_time) or (cond.max_ledger and cond.max_ledger <= ledger.seq):
        return refuse(TX.txTOO_LATE)
    extra = [signer_key_str(k) for k in cond.extra_signers]
    if len(set(extra)) != len(extra):
        return refuse(TX.txMALFORMED)
    if None in extra:
        return refuse(TX.txNOT_SUPPORTED)  # signed-payload signers (CAP-40) are not supported here
    if charge_fee and frame.fee < ledger.base_fee * n:
        return refuse(TX.txINSUFFICIENT_FEE)
    entry = view.get_entry(account_key(frame.source))
    if entry is None:
        return refuse(TX.txNO_ACCOUNT)
    assert isinstance(entry, Account)
    source: Account = entry
    if _bad_seq(source, frame, ledger):
        return refuse(TX.txBAD_SEQ)
    if (cond.min_seq_age and ledger.close_time - source.seq_time < cond.min_seq_age) or \
            (cond.min_seq_ledger_gap and ledger.seq - source.seq_ledger < cond.min_seq_ledger_gap):
        return refuse(TX.txBAD_MIN_SEQ_AGE_OR_GAP)
    if not checker.check_account(source, source.low_threshold):
        return refuse(TX.txBAD_AUTH)
    if extra and not checker.check([Signer(k, 1) for k in extra if k is not None], len(extra)):
        return refuse(TX.txBAD_AUTH)
    if charge_fee and available_balance(source, ledger.base_reserve) < frame.fee:
        return refuse(TX.txINSUFFICIENT_BALANCE)
    results = [_default_result(op) for op in frame.ops]
    for i, op in enumerate(frame.ops):
        code = _check_op(view, frame, op, checker)
        if code is not None:
            results[i] = codes.op_result(op.body.type, code)
            return xdr.TransactionResultResult(TX.txFAILED, results=results)
    if not checker.all_used():
        return refuse(TX.txBAD_AUTH_EXTRA)
    return None


def _bad_seq(source: Account, frame: TxFrame, ledger: LedgerContext) -> bool:
    if frame.seq_num == ledger.seq << 32:
        return True
    if frame.cond.min_seq_num is not None:
        return source.seq_num < frame.cond.min_seq_num or source.seq_num >= frame.seq_num
    return source.seq_num == INT64_MAX or source.seq_num + 1 != frame.seq_num


def _check_op(view: Overlay, frame: TxFrame, op: xdr.Operation, checker: SignatureChecker) -> IntEnum | None:
    rule = RULES.get(op.body.type)
    if rule is None:
        return xdr.OperationResultCode.opNOT_SUPPORTED
    source_id = op_source(frame, op)
    account = view.get_entry(account_key(source_id))
    if account is not None:
        assert isinstance(account, Account)
        if not checker.check_account(account, needed_weight(account, rule.threshold(op.body))):
            return xdr.OperationResultCode.opBAD_AUTH
    elif not checker.check_no_account(source_id):
        # An operation may name a source that an earlier operation creates; its key must sign.
        return xdr.OperationResultCode.opBAD_AUTH
    return rule.check(op.body, source_id)


def _default_result(op: xdr.Operation) -> xdr.OperationResult:
    if codes.supported(op.body.type):
        return codes.op_result(op.body.type, codes.success_code(op.body.type))
    return xdr.OperationResult(xdr.OperationResultCode.opNOT_SUPPORTED)


def _apply_inner(view: Overlay, ledger: LedgerContext, frame: TxFrame) -> xdr.TransactionResultResult:
    """Consume the sequence number, drop the one-time signer, run the operations."""
    source = view.account(frame.source)
    assert source is not None
    source.seq_num = frame.seq_num
    source.seq_ledger, source.seq_time = ledger.seq, ledger.close_time
    _remove_one_time_signer(view, frame)
    tx_view = view.child()
    results: list[xdr.OperationResult] = []
    success = True
    for op in frame.ops:
        op_view = tx_view.child()
        code = _apply_op(op_view, ledger, frame, op)
        results.append(codes.op_result(op.body.type, code))
        if codes.is_success(code):
            op_view.commit()
        else:
            success = False
    if success and tx_view.has_sponsorships():
        return xdr.TransactionResultResult(TX.txBAD_SPONSORSHIP)
    if not success:
        return xdr.TransactionResultResult(TX.txFAILED, results=results)
    tx_view.commit()
    return xdr.TransactionResultResult(TX.txSUCCESS, results=results)


def _apply_op(view: Overlay, ledger: LedgerContext, frame: TxFrame, op: xdr.Operation) -> IntEnum:
    rule = RULES[op.body.type]
    source_id = op_source(frame, op)
    if not view.exists(account_key(source_id)):
        return xdr.OperationResultCode.opNO_ACCOUNT
    code = rule.check(op.body, source_id)
    if code is not None:
        return code
    return rule.apply(op.body, OpContext(view, ledger, source_id))


def _remove_one_time_signer(view: Overlay, frame: TxFrame) -> None:
    """A pre-authorised-transaction signer for this transaction is spent once it is applied."""
    key = StrKey.encode_pre_auth_tx(frame.hash)
    for account_id in dict.fromkeys([frame.source, *(op_source(frame, op) for op in frame.ops)]):
        account = view.account(account_id)
        signer = account.signer(key) if account is not None else None
        if account is not None and signer is not None:
            remove_subentry(view, account, signer.sponsor)
            account.signers.remove(signer)


def _tx_result(fee: int, result: xdr.TransactionResultResult) -> xdr.TransactionResult:
    return xdr.TransactionResult(xdr.Int64(fee), result, xdr.TransactionResultExt(0))


def _fee_bump_result(frame: FeeBumpFrame, fee: int, inner: xdr.TransactionResultResult) -> xdr.TransactionResult:
    inner_result = xdr.InnerTransactionResult(
        xdr.Int64(0), xdr.InnerTransactionResultResult(inner.code, inner.results),
        xdr.InnerTransactionResultExt(0))
    code = TX.txFEE_BUMP_INNER_SUCCESS if inner.code == TX.txSUCCESS else TX.txFEE_BUMP_INNER_FAILED
    pair = xdr.InnerTransactionResultPair(xdr.Hash(frame.inner.hash), inner_result)
    return xdr.TransactionResult(xdr.Int64(fee), xdr.TransactionResultResult(code, inner_result_pair=pair),
                                 xdr.TransactionResultExt(0))
