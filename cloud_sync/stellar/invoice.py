"""Seed 000's CreateInvoice: one unsigned envelope that settles a meter's debt in two steps.

Operation 1 moves ``amount`` of the utility's asset from the meter's custodial account to the
platform's master account (the consumption is recognised); operation 2 pays the management
company from the payer's account (the payment). The payer is the transaction's source (its
sequence number, its fee); the payer and the platform sign, in any order, in their own wallets.
Either both transfers happen or neither does.

Everything that would make the envelope fail is checked first, with a message that says who
must do what: accounts that do not exist, trustlines missing on either side, an amount above
the meter's balance or the payer's, muxed (``M…``) accounts (the platform does not support
them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from stellar_sdk import Account, Asset, TransactionBuilder

from cloud_sync.stellar.amounts import AmountError, format_amount, to_stroops
from cloud_sync.stellar.horizon import HorizonClient, balance_of
from gateway.config import StellarConfig
from gateway.config.stellar import is_account_id, parse_asset, strkey_version
from gateway.errors import GatewayError

DEFAULT_VALID_S: Final = 3600
"""How long a payer has to sign and submit (from the network's latest ledger)."""
OPS: Final = 2


class InvoiceRefused(GatewayError):
    """The invoice would fail on the network; the message says what to fix."""


@dataclass(frozen=True, slots=True)
class Invoice:
    envelope: str
    """Base64 XDR, unsigned: the payer and the platform sign it."""
    hash: str
    meter: str
    meter_account: str
    platform_account: str
    payer: str
    company: str
    amount: str
    payment_asset: str
    payment_amount: str
    valid_until: int


def check_account_id(value: str, what: str) -> str:
    if is_account_id(value):
        return value
    version = strkey_version(value)
    if version == 12 << 3:
        raise InvoiceRefused(f"{what} {value} is a muxed account (M…): muxed accounts are not supported; "
                             "use the underlying G… account")
    if version == 18 << 3:
        raise InvoiceRefused(f"{what} is a SECRET key: never pass it anywhere; give the public G… address")
    raise InvoiceRefused(f"{what} {value!r} is not a Stellar account address (G…, 56 characters)")


def _asset_label(asset: Asset) -> str:
    return "XLM" if asset.is_native() else f"{asset.code}:{asset.issuer}"


async def _account(horizon: HorizonClient, account_id: str, who: str) -> dict[str, Any]:
    record = await horizon.account(account_id)
    if record is None:
        raise InvoiceRefused(f"{who} {account_id} does not exist on the network")
    return record


def _holding(record: dict[str, Any], asset: Asset, who: str) -> int:
    """Stroops of ``asset`` the account holds; refuses without a trustline (the issuer holds any amount)."""
    if asset.is_native():
        return balance_of(record, None, None) or 0
    if record["account_id"] == asset.issuer:
        return 2**63 - 1
    held = balance_of(record, asset.code, asset.issuer)
    if held is None:
        raise InvoiceRefused(f"{who} {record['account_id']} has no trustline to {_asset_label(asset)}: it must add "
                             "one (a change_trust operation) before it can take part")
    return held


async def create_invoice(horizon: HorizonClient, cfg: StellarConfig, *, meter: str, meter_account: str,
                         payer: str, amount: str, payment_amount: str | None = None,
                         valid_s: int = DEFAULT_VALID_S) -> Invoice:
    payer = check_account_id(payer.strip(), "payer")
    meter_account = check_account_id(meter_account, f"meter {meter}'s account")
    if cfg.company_account is None:
        raise InvoiceRefused("no company account to pay: set [stellar] company_account to the management company's "
                             "G… account")
    try:
        debt = to_stroops(amount)
        paid = to_stroops(payment_amount) if payment_amount is not None else debt
    except AmountError as exc:
        raise InvoiceRefused(f"amount: {exc}") from None
    if debt <= 0 or paid <= 0:
        raise InvoiceRefused("amounts must be positive")
    energy = Asset(cfg.asset_code, cfg.asset_issuer)
    pay_asset = _payment_asset(cfg.payment_asset)
    if payer == meter_account:
        raise InvoiceRefused("the payer cannot be the meter's own account")

    meter_record = await _account(horizon, meter_account, f"meter {meter}'s account")
    owed = _holding(meter_record, energy, f"meter {meter}'s account")
    if debt > owed:
        raise InvoiceRefused(f"amount {format_amount(debt)} is above meter {meter}'s balance of "
                             f"{format_amount(owed)} {cfg.asset_code}")
    platform = await _account(horizon, cfg.platform_signer, "the platform's master account")
    _holding(platform, energy, "the platform's master account")
    payer_record = await _account(horizon, payer, "payer")
    available = _holding(payer_record, pay_asset, "payer")
    view = await horizon.latest()
    if pay_asset.is_native():
        reserve = (2 + int(payer_record.get("subentry_count", 0))) * view.base_reserve
        available -= reserve + view.base_fee * OPS
    if paid > available:
        raise InvoiceRefused(f"payer {payer} has {format_amount(max(available, 0))} {_asset_label(pay_asset)} to "
                             f"spend, less than the {format_amount(paid)} this invoice asks")
    company = await _account(horizon, cfg.company_account, "the company account")
    _holding(company, pay_asset, "the company account")

    valid_until = view.closed_at + valid_s
    tx = (TransactionBuilder(Account(payer, int(payer_record["sequence"])), cfg.network_passphrase,
                             base_fee=view.base_fee)
          .add_time_bounds(0, valid_until)
          .add_text_memo(f"invoice {meter}"[:28])
          .append_payment_op(cfg.platform_signer, energy, format_amount(debt), source=meter_account)
          .append_payment_op(cfg.company_account, pay_asset, format_amount(paid))
          .build())
    return Invoice(tx.to_xdr(), tx.hash_hex(), meter, meter_account, cfg.platform_signer, payer, cfg.company_account,
                   format_amount(debt), _asset_label(pay_asset), format_amount(paid), valid_until)


def _payment_asset(text: str) -> Asset:
    parsed = parse_asset(text)
    return Asset.native() if parsed is None else Asset(*parsed)
