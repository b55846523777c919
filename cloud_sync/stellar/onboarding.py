"""Tenant onboarding as the gateway sees it (seed 000's AddTenant / addAsset), checked step by step.

The utility's part is done with its own keys, elsewhere: it issues the asset, has the platform
account made, and funds this gateway's account with XLM and an allowance of the asset. The
gateway's only part is its trustline to the asset — whose limit caps how much allowance it can
ever hold — which it signs itself. :func:`check` says, line by line, what is in place and what
is missing, and adds the trustline when asked (``meter-gateway stellar onboard --limit X``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Final

from stellar_sdk import Account, Asset, Keypair, TransactionBuilder

from cloud_sync.stellar.amounts import AmountError, format_amount, to_stroops
from cloud_sync.stellar.horizon import HorizonClient, HorizonError, HorizonUnavailable, Refused, balance_of
from gateway.config import StellarConfig
from gateway.config.stellar import parse_asset

RESENDS: Final = 10
"""Resends of the trustline envelope through unclear answers before giving up (the command can be rerun)."""
RESEND_S: Final = 1.0
TRUST_TIMEOUT_S: Final = 300


@dataclass
class Report:
    lines: list[tuple[bool, str]] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return all(ok for ok, _ in self.lines)

    def add(self, ok: bool, line: str) -> None:
        self.lines.append((ok, line))


async def _trust(horizon: HorizonClient, cfg: StellarConfig, keypair: Keypair, limit: str) -> str:
    record = await horizon.account(keypair.public_key)
    assert record is not None
    view = await horizon.latest()
    tx = (TransactionBuilder(Account(keypair.public_key, int(record["sequence"])), cfg.network_passphrase,
                             base_fee=view.base_fee)
          .append_change_trust_op(Asset(cfg.asset_code, cfg.asset_issuer), limit=limit)
          .set_timeout(TRUST_TIMEOUT_S).build())
    tx.sign(keypair)
    for _ in range(RESENDS):
        try:
            await horizon.submit(tx.to_xdr())
            return tx.hash_hex()
        except HorizonUnavailable:
            await asyncio.sleep(RESEND_S)
        except Refused:
            found = await horizon.lookup(tx.hash_hex())
            if found is not None and found.successful:
                return tx.hash_hex()
            raise
    raise HorizonUnavailable("the ledger gave no clear answer; run the command again")


async def check(cfg: StellarConfig, keypair: Keypair, *, trust_limit: str | None = None) -> Report:
    report = Report()
    asset = f"{cfg.asset_code} (issuer {cfg.asset_issuer})"
    gateway = keypair.public_key
    async with HorizonClient(cfg.horizon_url, post_timeout_s=cfg.timeout_s) as horizon:
        try:
            passphrase = await horizon.network_passphrase()
        except HorizonError as exc:
            report.add(False, f"Horizon at {cfg.horizon_url} does not answer ({exc}): check [stellar] horizon_url")
            return report
        report.add(passphrase == cfg.network_passphrase,
                   f"network: {passphrase!r}" + ("" if passphrase == cfg.network_passphrase else
                                                 f", but the config says {cfg.network_passphrase!r}"))
        issuer = await horizon.account(cfg.asset_issuer)
        report.add(issuer is not None, f"asset issuer {cfg.asset_issuer} " +
                   ("exists" if issuer else "does not exist: the utility must create it (addAsset)"))
        platform = await horizon.account(cfg.platform_signer)
        report.add(platform is not None, f"platform account {cfg.platform_signer} " +
                   ("exists" if platform else "does not exist: the platform must create it"))
        if platform is not None:
            has = balance_of(platform, cfg.asset_code, cfg.asset_issuer) is not None
            report.add(has, "the platform account trusts " + asset if has else
                       f"the platform account has no trustline to {asset}: invoices cannot move debt to it")
        record = await horizon.account(gateway)
        if record is None:
            report.add(False, f"gateway account {gateway} does not exist: the utility must fund it with XLM "
                              f"(each meter account takes {cfg.starting_balance} XLM)")
            return report
        xlm = balance_of(record, None, None) or 0
        report.add(True, f"gateway account {gateway} holds {format_amount(xlm)} XLM")
        held = balance_of(record, cfg.asset_code, cfg.asset_issuer)
        if held is None and trust_limit is not None:
            try:
                to_stroops(trust_limit)
            except AmountError as exc:
                report.add(False, f"--limit: {exc}")
                return report
            tx = await _trust(horizon, cfg, keypair, trust_limit)
            report.add(True, f"trustline to {asset} created, limit {trust_limit} (transaction {tx})")
            record = await horizon.account(gateway) or record
            held = balance_of(record, cfg.asset_code, cfg.asset_issuer)
        if held is None:
            report.add(False, f"the gateway has no trustline to {asset}: run this again with --limit X (the most "
                              "allowance it may hold)")
            return report
        line = next(b for b in record["balances"] if b.get("asset_code") == cfg.asset_code
                    and b.get("asset_issuer") == cfg.asset_issuer)
        report.add(held > 0, f"allowance: {format_amount(held)} {cfg.asset_code} of limit {line.get('limit')}" +
                   ("" if held > 0 else " — the utility must pay the allowance to the gateway account"))
        if cfg.company_account is not None:
            company = await horizon.account(cfg.company_account)
            pay = parse_asset(cfg.payment_asset)
            ok = company is not None and (pay is None or company["account_id"] == pay[1] or
                                          balance_of(company, *pay) is not None)
            report.add(ok, f"company account {cfg.company_account} " + (
                "can receive invoice payments" if ok else "does not exist or has no trustline to the payment asset"))
    return report
