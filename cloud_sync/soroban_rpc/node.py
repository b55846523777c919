"""The contract deployed on the local network: simulate, send, look up — what Soroban RPC serves.

One local network serves Horizon and Soroban RPC: the node runs on the Horizon stand-in's
:class:`LocalLedger` — its clock-driven ledgers, its accounts (sequence numbers, signers,
thresholds, XLM balances) — so the custodial accounts provisioned over Horizon are the ones that
sign and pay for invocations, and a sequence number used on one API is used on the other.
The contract's own state (agreements, transactions, token balances, used nonces) and the RPC's
transaction records live in ``soroban.sqlite3`` next to ``ledger.sqlite3``.

An accepted envelope is applied at once into the open ledger (like the Horizon stand-in), its
record committed first (SQLite, ``synchronous=FULL``), then the fee and sequence number on the
Horizon store; ``getTransaction`` answers SUCCESS or FAILED as soon as ``sendTransaction`` has
answered PENDING. A resend of a known hash answers DUPLICATE and applies nothing.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

import structlog
from stellar_sdk import Address, SignerKey, StrKey, scval, xdr

from cloud_sync.horizon.entries import Account, account_key
from cloud_sync.horizon.envelope import MalformedEnvelope, TxFrame, account_id_str, decode_envelope, frame_of
from cloud_sync.horizon.ledger import LocalLedger
from cloud_sync.soroban_rpc import scval as sv
from cloud_sync.soroban_rpc.auth import AuthFailure, check_entry
from cloud_sync.soroban_rpc.contract import READ_ONLY, Call, ContractError, ContractState, EnergySharing
from cloud_sync.soroban_rpc.txcheck import Invocation, NotAnInvocation, fee_charged, invocation_of, refusal

log = structlog.get_logger("cloud_sync.soroban_rpc")

DB_FILE: Final = "soroban.sqlite3"
MIN_RESOURCE_FEE: Final = 50_000
"""Stroops the stand-in's simulation asks for (and sendTransaction requires) per invocation."""
INSTRUCTIONS: Final = 2_000_000
CONTRACT_SALT: Final = b"seed-001 p2p energy sharing"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS txs (hash TEXT PRIMARY KEY, status TEXT NOT NULL, ledger INTEGER NOT NULL,
    created_at INTEGER NOT NULL, application_order INTEGER NOT NULL, envelope_xdr TEXT NOT NULL,
    result_xdr TEXT NOT NULL, result_meta_xdr TEXT NOT NULL, diagnostic_events TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS nonces (address TEXT NOT NULL, nonce INTEGER NOT NULL, PRIMARY KEY (address, nonce));
"""


class RpcInvalidParams(ValueError):
    """The request cannot be read (JSON-RPC -32602)."""


@dataclass(frozen=True, slots=True)
class Sent:
    status: str
    """PENDING, DUPLICATE, ERROR (TRY_AGAIN_LATER comes from faults only)."""
    hash: str
    error_result_xdr: str | None = None


def contract_id_for(network_id: bytes) -> bytes:
    return hashlib.sha256(network_id + CONTRACT_SALT).digest()


def error_event(contract: bytes, code: int, name: str, detail: str) -> xdr.DiagnosticEvent:
    """A diagnostic event as the host emits for a contract error: topics [error, Error(Contract, #n)]."""
    err = xdr.SCVal(xdr.SCValType.SCV_ERROR, error=xdr.SCError(xdr.SCErrorType.SCE_CONTRACT,
                                                                contract_code=xdr.Uint32(code)))
    return _event(contract, [scval.to_symbol("error"), err], scval.to_string(f"{name}: {detail}"))


def auth_event(contract: bytes, detail: str) -> xdr.DiagnosticEvent:
    err = xdr.SCVal(xdr.SCValType.SCV_ERROR, error=xdr.SCError(xdr.SCErrorType.SCE_AUTH,
                                                                code=xdr.SCErrorCode.SCEC_INVALID_ACTION))
    return _event(contract, [scval.to_symbol("error"), err], scval.to_string(detail))


def _event(contract: bytes, topics: list[xdr.SCVal], data: xdr.SCVal) -> xdr.DiagnosticEvent:
    body = xdr.ContractEventBody(0, xdr.ContractEventV0(topics, data))
    return xdr.DiagnosticEvent(False, xdr.ContractEvent(xdr.ExtensionPoint(0), xdr.ContractID(xdr.Hash(contract)),
                                                        xdr.ContractEventType.DIAGNOSTIC, body))


class SorobanNode:
    def __init__(self, ledger: LocalLedger, data_dir: Path) -> None:
        self.ledger = ledger
        self.contract_id = contract_id_for(ledger.network_id)
        self.contract_address = StrKey.encode_contract(self.contract_id)
        self._lock = threading.RLock()
        path = data_dir / DB_FILE
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT value FROM meta WHERE key='contract'").fetchone()
        self.contract = EnergySharing(ContractState.from_json(json.loads(row[0])) if row else None)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- helpers ---------------------------------------------------------------------------
    def _account(self, address: str) -> Account | None:
        entry = self.ledger.store.get_entry(account_key(address))
        assert entry is None or isinstance(entry, Account)
        return entry

    def _nonce_used(self, address: str, nonce: int) -> bool:
        return self._db.execute("SELECT 1 FROM nonces WHERE address=? AND nonce=?", (address, nonce)).fetchone() \
            is not None

    def _next_nonce(self) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key='nonce_counter'").fetchone()
        counter = int(row[0]) + 1 if row else 1
        self._db.execute("INSERT OR REPLACE INTO meta VALUES ('nonce_counter', ?)", (str(counter),))
        digest = hashlib.sha256(self.contract_id + counter.to_bytes(8, "big")).digest()
        return int.from_bytes(digest[:8], "big", signed=True)

    def _decode(self, envelope_b64: str) -> tuple[TxFrame, Invocation]:
        try:
            frame = frame_of(decode_envelope(envelope_b64.strip()), self.ledger.network_id)
            inv = invocation_of(frame)
        except (MalformedEnvelope, NotAnInvocation) as exc:
            raise RpcInvalidParams(f"transaction cannot be read: {exc}") from None
        assert isinstance(frame, TxFrame)
        if inv.contract != self.contract_id:
            raise RpcInvalidParams(f"no contract {StrKey.encode_contract(inv.contract)} on this network; "
                                   f"the energy-sharing contract is {self.contract_address}")
        return frame, inv

    def hash_of(self, envelope_b64: str) -> str:
        return self._decode(envelope_b64)[0].hash.hex()

    def transaction_data(self, resource_fee: int = MIN_RESOURCE_FEE) -> xdr.SorobanTransactionData:
        instance = xdr.LedgerKey(xdr.LedgerEntryType.CONTRACT_DATA, contract_data=xdr.LedgerKeyContractData(
            xdr.SCAddress(xdr.SCAddressType.SC_ADDRESS_TYPE_CONTRACT,
                          contract_id=xdr.ContractID(xdr.Hash(self.contract_id))),
            xdr.SCVal(xdr.SCValType.SCV_LEDGER_KEY_CONTRACT_INSTANCE), xdr.ContractDataDurability.PERSISTENT))
        resources = xdr.SorobanResources(xdr.LedgerFootprint([], [instance]), xdr.Uint32(INSTRUCTIONS),
                                         xdr.Uint32(4096), xdr.Uint32(4096))
        return xdr.SorobanTransactionData(xdr.SorobanTransactionDataExt(0), resources, xdr.Int64(resource_fee))

    # -- simulateTransaction -------------------------------------------------------------------
    def simulate(self, envelope_b64: str) -> dict[str, Any]:
        frame, inv = self._decode(envelope_b64)
        with self._lock:
            ctx = self.ledger.open_ledger()
            latest = ctx.seq - 1
            call = Call(ctx.close_time, enforce_auth=False)
            try:
                args = sv.decode_args(inv.function, list(inv.args.args))
                value = EnergySharing(self.contract.state).invoke(inv.function, args, call)
            except sv.BadArguments as exc:
                return {"error": f"HostError: Error(Value, InvalidInput) {exc}", "latestLedger": latest}
            except ContractError as exc:
                return {"error": f"HostError: Error(Contract, #{int(exc.code)}) {exc.code.name}: {exc}",
                        "events": [error_event(self.contract_id, int(exc.code), exc.code.name, str(exc)).to_xdr()],
                        "latestLedger": latest}
            auth = []
            invocation = xdr.SorobanAuthorizedInvocation(
                xdr.SorobanAuthorizedFunction(
                    xdr.SorobanAuthorizedFunctionType.SOROBAN_AUTHORIZED_FUNCTION_TYPE_CONTRACT_FN,
                    contract_fn=inv.args), [])
            for address in call.required:
                if address == frame.source:
                    creds = xdr.SorobanCredentials(xdr.SorobanCredentialsType.SOROBAN_CREDENTIALS_SOURCE_ACCOUNT)
                else:
                    creds = xdr.SorobanCredentials(
                        xdr.SorobanCredentialsType.SOROBAN_CREDENTIALS_ADDRESS,
                        address=xdr.SorobanAddressCredentials(
                            Address(address).to_xdr_sc_address(), xdr.Int64(self._next_nonce()), xdr.Uint32(0),
                            scval.to_void()))
                auth.append(xdr.SorobanAuthorizationEntry(creds, invocation).to_xdr())
        return {"transactionData": self.transaction_data().to_xdr(), "minResourceFee": str(MIN_RESOURCE_FEE),
                "results": [{"auth": auth, "xdr": sv.encode(value).to_xdr()}],
                "cost": {"cpuInsns": str(INSTRUCTIONS // 2), "memBytes": "65536"}, "latestLedger": latest}

    # -- sendTransaction -----------------------------------------------------------------------
    def send(self, envelope_b64: str) -> Sent:
        frame, inv = self._decode(envelope_b64)
        tx_hash = frame.hash.hex()
        with self._lock, self.ledger._lock:
            if self._db.execute("SELECT 1 FROM txs WHERE hash=?", (tx_hash,)).fetchone():
                return Sent("DUPLICATE", tx_hash)
            ctx = self.ledger.open_ledger()
            source = self._account(frame.source)
            code = refusal(frame, inv, source, ctx, MIN_RESOURCE_FEE)
            if code is not None:
                result = xdr.TransactionResult(xdr.Int64(0), xdr.TransactionResultResult(code),
                                               xdr.TransactionResultExt(0))
                log.info("soroban.refused", hash=tx_hash, code=code.name)
                return Sent("ERROR", tx_hash, result.to_xdr())
            assert source is not None
            fee = fee_charged(frame, inv, ctx)
            outcome = self._apply(frame, inv, ctx.seq, ctx.close_time)
            self._commit(tx_hash, envelope_b64.strip(), frame, fee, ctx.seq, ctx.close_time, source, *outcome)
            return Sent("PENDING", tx_hash)

    def _apply(self, frame: TxFrame, inv: Invocation, seq: int,
               now: int) -> tuple[bool, xdr.SCVal | None, list[xdr.DiagnosticEvent], list[tuple[str, int]]]:
        authorized: set[str] = set()
        nonces: list[tuple[str, int]] = []
        try:
            for entry in inv.auth:
                checked = check_entry(entry, inv.args, tx_source=frame.source, network_id=self.ledger.network_id,
                                      ledger_seq=seq, account_of=self._account, nonce_used=self._nonce_used)
                if checked.nonce is not None:
                    if (checked.address, checked.nonce) in nonces:
                        raise AuthFailure(f"nonce {checked.nonce} used twice in one transaction")
                    nonces.append((checked.address, checked.nonce))
                authorized.add(checked.address)
        except AuthFailure as exc:
            log.info("soroban.auth_refused", hash=frame.hash.hex(), reason=str(exc))
            return False, None, [auth_event(self.contract_id, str(exc))], []
        try:
            args = sv.decode_args(inv.function, list(inv.args.args))
            value = self.contract.invoke(inv.function, args, Call(now, frozenset(authorized)))
        except sv.BadArguments as exc:
            return False, None, [auth_event(self.contract_id, str(exc))], []
        except ContractError as exc:
            if exc.code.name == "AuthMissing":
                return False, None, [auth_event(self.contract_id, str(exc))], []
            log.info("soroban.contract_error", hash=frame.hash.hex(), error=exc.code.name)
            return False, None, [error_event(self.contract_id, int(exc.code), exc.code.name, str(exc))], []
        return True, sv.encode(value), [], nonces

    def _commit(self, tx_hash: str, envelope: str, frame: TxFrame, fee: int, seq: int, now: int, source: Account,
                ok: bool, value: xdr.SCVal | None, events: list[xdr.DiagnosticEvent],
                nonces: list[tuple[str, int]]) -> None:
        if ok:
            op_code = xdr.InvokeHostFunctionResultCode.INVOKE_HOST_FUNCTION_SUCCESS
            assert value is not None
            op_res = xdr.InvokeHostFunctionResult(op_code, success=xdr.Hash(hashlib.sha256(value.to_xdr_bytes())
                                                                            .digest()))
        else:
            op_res = xdr.InvokeHostFunctionResult(xdr.InvokeHostFunctionResultCode.INVOKE_HOST_FUNCTION_TRAPPED)
        tr = xdr.OperationResultTr(xdr.OperationType.INVOKE_HOST_FUNCTION, invoke_host_function_result=op_res)
        op_result = xdr.OperationResult(xdr.OperationResultCode.opINNER, tr=tr)
        code = xdr.TransactionResultCode.txSUCCESS if ok else xdr.TransactionResultCode.txFAILED
        result = xdr.TransactionResult(xdr.Int64(fee), xdr.TransactionResultResult(code, results=[op_result]),
                                       xdr.TransactionResultExt(0))
        soroban_meta = xdr.SorobanTransactionMeta(xdr.SorobanTransactionMetaExt(0), [],
                                                  value if value is not None else scval.to_void(), events)
        meta = xdr.TransactionMeta(3, v3=xdr.TransactionMetaV3(xdr.ExtensionPoint(0), xdr.LedgerEntryChanges([]),
                                                               [xdr.OperationMeta(xdr.LedgerEntryChanges([]))],
                                                               xdr.LedgerEntryChanges([]), soroban_meta))
        order = self._db.execute("SELECT COUNT(*) FROM txs WHERE ledger=?", (seq,)).fetchone()[0] + 1
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("INSERT INTO txs VALUES (?,?,?,?,?,?,?,?,?)",
                             (tx_hash, "SUCCESS" if ok else "FAILED", seq, now, order, envelope, result.to_xdr(),
                              meta.to_xdr(), json.dumps([e.to_xdr() for e in events])))
            self._db.executemany("INSERT INTO nonces VALUES (?,?)", nonces)
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('contract', ?)",
                             (json.dumps(self.contract.state.to_json()),))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        charged = source.copy()
        charged.seq_num, charged.balance = frame.seq_num, source.balance - fee
        charged.seq_ledger, charged.seq_time = seq, now
        row = self.ledger.store.latest_row(seq).carried_to(seq)
        row = replace(row, fee_pool=row.fee_pool + fee, successful_tx=row.successful_tx + ok,
                      failed_tx=row.failed_tx + (not ok), tx_set_operation_count=row.tx_set_operation_count + 1,
                      operation_count=row.operation_count + ok)
        self.ledger.store.commit({account_key(source.account_id): charged}, seq, None, row)
        log.info("soroban.applied", hash=tx_hash, ledger=seq, status="SUCCESS" if ok else "FAILED")

    # -- getTransaction, getLedgerEntries, the ledger --------------------------------------------
    def transaction(self, tx_hash: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT status, ledger, created_at, application_order, envelope_xdr, result_xdr, "
                                   "result_meta_xdr, diagnostic_events FROM txs WHERE hash=?",
                                   (tx_hash.lower(),)).fetchone()
        if row is None:
            return None
        status, ledger, created, order, env, res, meta, diag = row
        return {"status": status, "ledger": ledger, "createdAt": str(created), "applicationOrder": order,
                "feeBump": False, "envelopeXdr": env, "resultXdr": res, "resultMetaXdr": meta,
                "diagnosticEventsXdr": json.loads(diag) or None}

    def account_entry(self, key: xdr.LedgerKey) -> tuple[str, int] | None:
        """A ledger entry's data XDR and last-modified ledger (accounts only: what load_account asks)."""
        if key.type != xdr.LedgerEntryType.ACCOUNT or key.account is None:
            return None
        address = account_id_str(key.account.account_id)
        a = self._account(address)
        if a is None:
            return None
        signers = [xdr.Signer(SignerKey.ed25519_public_key(s.key).to_xdr_object(), xdr.Uint32(s.weight))
                   for s in a.signers if s.key.startswith("G")]
        entry = xdr.AccountEntry(
            key.account.account_id, xdr.Int64(a.balance), xdr.SequenceNumber(xdr.Int64(a.seq_num)),
            xdr.Uint32(a.num_sub_entries), None, xdr.Uint32(a.flags), xdr.String32(a.home_domain.encode()),
            xdr.Thresholds(bytes([a.master_weight, a.low_threshold, a.med_threshold, a.high_threshold])),
            signers, xdr.AccountEntryExt(0))
        return xdr.LedgerEntryData(xdr.LedgerEntryType.ACCOUNT, account=entry).to_xdr(), a.last_modified_ledger

    def read(self, function: str, args: list[Any]) -> Any:
        """Run a read-only contract function directly (for the CLI and tests' inspection)."""
        if function not in READ_ONLY:
            raise ValueError(f"{function} is not a read-only function")
        with self._lock:
            return EnergySharing(self.contract.state).invoke(function, args, Call(self.ledger.open_ledger().close_time))
