"""What a failed or refused Stellar transaction means, in a sentence that says what to do.

Pure: from the result codes and the envelope's own operations (which say who paid whom), so
the alarm on the status page names the account to fund, the trustline to fix, the meter.
"""

from __future__ import annotations

from dataclasses import dataclass

from stellar_sdk import TransactionEnvelope
from stellar_sdk.operation import ChangeTrust, CreateAccount, ManageData, Payment, SetOptions

from cloud_sync.stellar.store import APPLIED, VOID, StoredTx
from cloud_sync.stellar.submitter import Resolution


@dataclass(frozen=True, slots=True)
class Parties:
    gateway: str
    asset_code: str
    meters_by_account: dict[str, str]

    def name(self, account: str) -> str:
        if account == self.gateway:
            return f"the gateway account {account}"
        meter = self.meters_by_account.get(account)
        return f"meter {meter}'s account {account}" if meter else f"account {account}"


def _tx_advice(code: str, p: Parties) -> str | None:
    return {
        "tx_insufficient_balance": f"{p.name(p.gateway)} has too little XLM for fees: the utility must send it XLM",
        "tx_no_source_account": f"{p.name(p.gateway)} does not exist on the network: the utility must create and "
                                "fund it with XLM and an allowance of the asset (meter-gateway stellar onboard)",
        "tx_bad_auth": f"the gateway's key cannot sign for {p.name(p.gateway)}: its signers were changed; restore "
                       "the gateway key as its signer",
        "tx_bad_auth_extra": "the envelope carries a signature no operation needs (a bug: report it)",
        "tx_insufficient_fee": "the network's fees rose above the bid; the next transaction bids the new base fee",
        "tx_malformed": "the network refused the envelope as malformed (a bug: report it)",
        "transaction_malformed": "the network refused the envelope as malformed (a bug: report it)",
    }.get(code)


def _op_advice(op: object, code: str, p: Parties, starting_balance: str) -> str:
    asset = p.asset_code
    if isinstance(op, Payment):
        src = op.source.account_id if op.source is not None else p.gateway
        dst = op.destination.account_id
        if code == "op_underfunded" and src == p.gateway:
            return (f"the gateway account's allowance of {asset} is exhausted: top up the gateway account's "
                    f"allowance (the utility pays {asset} to {p.gateway}; raise its trustline limit first if full)")
        if code == "op_underfunded":
            return (f"{p.name(src)} holds less {asset} than a negative correction takes back (an invoice moved its "
                    "balance): the platform must return the difference to it")
        if code in ("op_no_trust", "op_src_no_trust"):
            who = dst if code == "op_no_trust" else src
            return (f"{p.name(who)} has no trustline to {asset}: restore it (for the gateway: meter-gateway "
                    "stellar onboard)")
        if code == "op_line_full":
            return f"{p.name(dst)}'s {asset} trustline limit is reached: raise the limit"
        if code in ("op_not_authorized", "op_src_not_authorized"):
            who = dst if code == "op_not_authorized" else src
            return f"the issuer has not authorised {p.name(who)} to hold {asset}: the utility must authorise it"
        if code == "op_no_destination":
            return f"{p.name(dst)} no longer exists on the network: the platform must restore the meter's account"
        if code == "op_no_issuer":
            return f"the issuer of {asset} does not exist: check [stellar] asset_issuer"
        if code == "op_bad_auth":
            return (f"the gateway is no longer a signer of {p.name(src)}: a negative correction cannot be paid back; "
                    "the platform must add the gateway's key again or settle the correction itself")
    if isinstance(op, CreateAccount):
        if code == "op_underfunded":
            return (f"the gateway account has too little XLM to create a meter account ({starting_balance} XLM "
                    "each): the utility must send it XLM")
        if code == "op_low_reserve":
            return f"starting_balance {starting_balance} XLM is below the network's minimum: raise it in [stellar]"
    if isinstance(op, ChangeTrust) and code == "op_no_issuer":
        return f"the issuer of {asset} does not exist: check [stellar] asset_code and asset_issuer"
    if isinstance(op, SetOptions | ManageData) and code == "op_low_reserve":
        return f"starting_balance {starting_balance} XLM is below the network's minimum: raise it in [stellar]"
    return f"operation {type(op).__name__} failed with {code}"


def explain(tx: StoredTx, resolution: Resolution, parties: Parties, *, passphrase: str,
            starting_balance: str) -> str | None:
    """The operator's sentence for a resolution that needs one; None when nothing is wrong."""
    if resolution.state == APPLIED or (resolution.state == VOID and not resolution.terminal):
        return None
    what = f"batch {tx.ref}" if tx.purpose == "credit" else f"meter {tx.ref}'s account"
    advice = _tx_advice(resolution.tx_code, parties)
    if advice is None:
        ops = TransactionEnvelope.from_xdr(tx.envelope, passphrase).transaction.operations
        for i, code in enumerate(resolution.op_codes):
            if code != "op_success" and i < len(ops):
                advice = _op_advice(ops[i], code, parties, starting_balance)
                break
    advice = advice or f"{resolution.tx_code} {resolution.op_codes}"
    done = "was not paid" if tx.purpose == "credit" else "could not be created"
    return f"Stellar: {what} {done}: {advice}. It is retried at the slowest pace."
