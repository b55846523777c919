"""Is a Soroban envelope acceptable? Horizon's rules for the envelope, plus the Soroban shape.

Pure: a decoded frame, the source account, the open ledger → None (acceptable) or the
transaction result code it is refused with (nothing changes, as on the network: no fee, no
sequence number). Signatures are weighed with the Horizon stand-in's :class:`SignatureChecker`
at the source's **medium** threshold (InvokeHostFunction is a medium operation).
"""

from __future__ import annotations

from dataclasses import dataclass

from stellar_sdk import xdr

from cloud_sync.horizon.context import LedgerContext
from cloud_sync.horizon.entries import Account
from cloud_sync.horizon.envelope import Frame, TxFrame, muxed_ids
from cloud_sync.horizon.signatures import SignatureChecker

TX = xdr.TransactionResultCode


@dataclass(frozen=True, slots=True)
class Invocation:
    contract: bytes
    function: str
    args: xdr.InvokeContractArgs
    auth: list[xdr.SorobanAuthorizationEntry]
    resource_fee: int


class NotAnInvocation(ValueError):
    """The envelope is not one InvokeHostFunction calling a contract (answered txMALFORMED)."""


def invocation_of(frame: Frame) -> Invocation:
    if not isinstance(frame, TxFrame):
        raise NotAnInvocation("fee-bump envelopes are not supported by the stand-in; send the inner transaction")
    if len(frame.ops) != 1 or frame.ops[0].body.type != xdr.OperationType.INVOKE_HOST_FUNCTION:
        raise NotAnInvocation("a Soroban transaction holds exactly one InvokeHostFunction operation")
    op = frame.ops[0].body.invoke_host_function_op
    assert op is not None
    fn = op.host_function
    if fn.type != xdr.HostFunctionType.HOST_FUNCTION_TYPE_INVOKE_CONTRACT or fn.invoke_contract is None:
        raise NotAnInvocation("only contract invocations are supported (no uploads or deployments)")
    args = fn.invoke_contract
    if args.contract_address.type != xdr.SCAddressType.SC_ADDRESS_TYPE_CONTRACT:
        raise NotAnInvocation("the invoked address is not a contract (C…)")
    assert args.contract_address.contract_id is not None
    sd = frame.tx.ext.soroban_data
    return Invocation(args.contract_address.contract_id.contract_id.hash, args.function_name.sc_symbol.decode(),
                      args, list(op.auth), sd.resource_fee.int64 if sd is not None else 0)


def refusal(frame: TxFrame, inv: Invocation, source: Account | None, ledger: LedgerContext,
            min_resource_fee: int) -> xdr.TransactionResultCode | None:
    if source is None:
        return TX.txNO_ACCOUNT
    c = frame.cond
    if c.min_time and ledger.close_time < c.min_time:
        return TX.txTOO_EARLY
    if c.max_time and ledger.close_time > c.max_time:
        return TX.txTOO_LATE
    if c.min_ledger and ledger.seq < c.min_ledger:
        return TX.txTOO_EARLY
    if c.max_ledger and ledger.seq >= c.max_ledger:
        return TX.txTOO_LATE
    if not frame.has_soroban_data or inv.resource_fee < min_resource_fee:
        return TX.txSOROBAN_INVALID
    if frame.fee - inv.resource_fee < ledger.base_fee:
        return TX.txINSUFFICIENT_FEE
    if frame.seq_num != source.seq_num + 1:
        return TX.txBAD_SEQ
    checker = SignatureChecker(frame.hash, frame.signatures)
    if not checker.check_account(source, max(source.med_threshold, 1)):
        return TX.txBAD_AUTH
    op_src = frame.ops[0].source_account
    if op_src is not None and muxed_ids(op_src)[0] != frame.source:
        return TX.txBAD_AUTH  # the stand-in's invocations run as the transaction's source
    if not checker.all_used():
        return TX.txBAD_AUTH_EXTRA
    if source.balance < fee_charged(frame, inv, ledger):
        return TX.txINSUFFICIENT_BALANCE
    return None


def fee_charged(frame: TxFrame, inv: Invocation, ledger: LedgerContext) -> int:
    """Inclusion fee at the base fee, plus the declared resource fee (the stand-in refunds nothing)."""
    return min(frame.fee, ledger.base_fee + inv.resource_fee)
