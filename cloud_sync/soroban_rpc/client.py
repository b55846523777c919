"""One contract invocation the way a stellar-sdk client does it (used by the admin CLI and the tests' driver).

load_account → append_invoke_contract_function_op → simulateTransaction → authorize_entry for each
address entry (offline, by the key that signs for that address) → prepare_transaction → sign →
sendTransaction → getTransaction, the return value read from the result meta.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stellar_sdk import Keypair, SorobanServer, TransactionBuilder, scval, xdr
from stellar_sdk.auth import authorize_entry
from stellar_sdk.soroban_rpc import GetTransactionStatus, SendTransactionStatus

AUTH_TTL_LEDGERS = 100
"""Signed auth entries stay valid this many ledgers (about 8 minutes of 5-second ledgers)."""


class InvokeFailed(Exception):
    def __init__(self, stage: str, detail: Any) -> None:
        super().__init__(f"{stage}: {detail}")
        self.stage, self.detail = stage, detail


def build(server: SorobanServer, passphrase: str, contract_id: str, source: Keypair, function: str,
          args: list[xdr.SCVal], signers: Mapping[str, Keypair] | None = None) -> Any:
    """A signed, prepared envelope (simulated, auth entries signed offline by ``signers``)."""
    account = server.load_account(source.public_key)
    tx = (TransactionBuilder(account, passphrase, base_fee=100)
          .append_invoke_contract_function_op(contract_id, function, args).set_timeout(300).build())
    sim = server.simulate_transaction(tx)
    if sim.error:
        raise InvokeFailed("simulate", sim.error)
    assert sim.results is not None
    until = server.get_latest_ledger().sequence + AUTH_TTL_LEDGERS
    signed = []
    for raw in sim.results[0].auth or []:
        entry = xdr.SorobanAuthorizationEntry.from_xdr(raw)
        if entry.credentials.type == xdr.SorobanCredentialsType.SOROBAN_CREDENTIALS_ADDRESS:
            assert entry.credentials.address is not None
            address = scval.from_address(
                xdr.SCVal(xdr.SCValType.SCV_ADDRESS, address=entry.credentials.address.address)).address
            signer = (signers or {}).get(address)
            if signer is None:
                raise InvokeFailed("authorize", f"{function} needs {address}'s authorisation: give its signing key")
            entry = authorize_entry(entry, signer, until, passphrase)
        signed.append(entry)
    account = server.load_account(source.public_key)  # build() consumed the first sequence number
    tx = (TransactionBuilder(account, passphrase, base_fee=100)
          .append_invoke_contract_function_op(contract_id, function, args, auth=signed).set_timeout(300).build())
    tx = server.prepare_transaction(tx, sim)
    tx.sign(source)
    return tx


def invoke(server: SorobanServer, passphrase: str, contract_id: str, source: Keypair, function: str,
           args: list[xdr.SCVal], signers: Mapping[str, Keypair] | None = None) -> xdr.SCVal:
    """The full flow; returns the contract's return value or raises InvokeFailed."""
    envelope = build(server, passphrase, contract_id, source, function, args, signers)
    sent = server.send_transaction(envelope)
    if sent.status != SendTransactionStatus.PENDING:
        raise InvokeFailed("send", sent)
    got = server.get_transaction(sent.hash)
    if got.status != GetTransactionStatus.SUCCESS:
        raise InvokeFailed("get", got)
    assert got.result_meta_xdr is not None
    meta = xdr.TransactionMeta.from_xdr(got.result_meta_xdr)
    assert meta.v3 is not None
    assert meta.v3.soroban_meta is not None
    return meta.v3.soroban_meta.return_value
