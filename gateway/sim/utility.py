"""The utility's side of Stellar onboarding, played by the demo and the tests (never by a box).

A real utility (the tenant) creates its issuing account, the platform its master account, and
the management company its receiving account; then it funds the gateway's account with XLM and
a *capped* allowance of the asset — a trustline whose limit is the cap, and a payment from the
issuer. Here friendbot funds the accounts, and the keys are kept in a file of the demo's data
dir (``utility-keys.json``, 0600), which is the utility's, not the gateway's.

Every step is idempotent (it looks before it acts) and every submission is resent byte for byte
until it is settled, so onboarding survives a kill at any moment and a ledger answering faults.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx
from stellar_sdk import Account as SdkAccount
from stellar_sdk import Asset, Keypair, TransactionBuilder

from cloud_sync.stellar.horizon import HorizonClient, HorizonUnavailable, Refused, balance_of

KEYS_FILE: Final = "utility-keys.json"
ASSET_CODE: Final = "KWH"
RATE: Final = "0.001"
"""1 KWH per kWh: a meter's balance reads as its credited kWh."""
ALLOWANCE: Final = "1000000"
"""The gateway's capped allowance of the asset (its trustline limit and the issuer's payment)."""
RETRY_S: Final = 0.2
ATTEMPTS: Final = 200
"""Resends of one envelope before onboarding gives up (~40 s of a ledger answering only faults)."""
TX_TIMEOUT_S: Final = 300


class OnboardingFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class Utility:
    issuer: Keypair
    platform: Keypair
    company: Keypair
    asset_code: str = ASSET_CODE

    @property
    def asset(self) -> Asset:
        return Asset(self.asset_code, self.issuer.public_key)

    @classmethod
    def load_or_create(cls, path: Path) -> Utility:
        if path.exists():
            doc = json.loads(path.read_text())
            return cls(Keypair.from_secret(doc["issuer"]), Keypair.from_secret(doc["platform"]),
                       Keypair.from_secret(doc["company"]), asset_code=doc.get("asset_code", ASSET_CODE))
        made = cls(Keypair.random(), Keypair.random(), Keypair.random())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"note": "demo only: the utility's and platform's keys; a gateway never holds these",
                       "issuer": made.issuer.secret, "platform": made.platform.secret,
                       "company": made.company.secret, "asset_code": made.asset_code}, fh)
        return made

    def config_lines(self, horizon_url: str, passphrase: str, *, rate: str = RATE) -> list[str]:
        """The ``[stellar]`` section a gateway of this utility is configured with."""
        return ["[stellar]", f'horizon_url = "{horizon_url}"', f'network_passphrase = "{passphrase}"',
                f'asset_code = "{self.asset_code}"', f'asset_issuer = "{self.issuer.public_key}"',
                f'platform_signer = "{self.platform.public_key}"', f'rate = "{rate}"',
                f'company_account = "{self.company.public_key}"', 'payment_asset = "native"', ""]


async def _friendbot(http: httpx.AsyncClient, url: str, horizon: HorizonClient, account: str) -> None:
    for _ in range(ATTEMPTS):
        if await _retrying(lambda: horizon.account(account)) is not None:
            return
        with contextlib.suppress(httpx.HTTPError):
            await http.get(f"{url}/friendbot", params={"addr": account})
        await asyncio.sleep(RETRY_S)
    raise OnboardingFailed(f"friendbot did not fund {account}")


async def submit_settled(horizon: HorizonClient, envelope_xdr: str, tx_hash: str) -> None:
    """Submit and resend the same bytes until the network has it (or refuses it for certain)."""
    for _ in range(ATTEMPTS):
        try:
            await horizon.submit(envelope_xdr)
            return
        except HorizonUnavailable:
            await asyncio.sleep(RETRY_S)
        except Refused as exc:
            found = await _retrying(lambda: horizon.lookup(tx_hash))
            if found is not None and found.successful:
                return
            raise OnboardingFailed(f"onboarding transaction refused: {exc}") from None
    raise OnboardingFailed("the ledger never took the onboarding transaction")


async def _retrying(make: Any) -> Any:
    for _ in range(ATTEMPTS):
        try:
            return await make()
        except HorizonUnavailable:
            await asyncio.sleep(RETRY_S)
    raise OnboardingFailed("the ledger answers nothing but faults")


async def _tx(horizon: HorizonClient, source: Keypair, passphrase: str) -> TransactionBuilder:
    record = await _retrying(lambda: horizon.account(source.public_key))
    assert record is not None
    view = await _retrying(horizon.latest)
    return (TransactionBuilder(SdkAccount(source.public_key, int(record["sequence"])), passphrase,
                               base_fee=view.base_fee).set_timeout(TX_TIMEOUT_S))


async def onboard(utility: Utility, horizon_url: str, passphrase: str, gateway: str, *, gateway_key: Keypair,
                  allowance: str = ALLOWANCE, limit: str | None = None) -> None:
    """Fund the tenant's accounts and the gateway: XLM, a trustline capped at ``limit`` (default: the
    allowance), and the allowance itself.

    ``gateway_key`` signs the gateway's change_trust (the gateway's own operation, in the
    same transaction as the issuer's payment so the two happen together or not at all).
    """
    async with HorizonClient(horizon_url, post_timeout_s=30) as horizon, httpx.AsyncClient(timeout=10) as http:
        for kp in (utility.issuer, utility.platform, utility.company):
            await _friendbot(http, horizon_url, horizon, kp.public_key)
        await _friendbot(http, horizon_url, horizon, gateway)
        record = await _retrying(lambda: horizon.account(gateway))
        if balance_of(record, utility.asset_code, utility.issuer.public_key) is None:
            builder = await _tx(horizon, utility.issuer, passphrase)
            tx = (builder.append_change_trust_op(utility.asset, limit=limit or allowance, source=gateway)
                  .append_payment_op(gateway, utility.asset, allowance).build())
            tx.sign(utility.issuer)
            tx.sign(gateway_key)
            await submit_settled(horizon, tx.to_xdr(), tx.hash_hex())
        record = await _retrying(lambda: horizon.account(utility.platform.public_key))
        if balance_of(record, utility.asset_code, utility.issuer.public_key) is None:
            builder = await _tx(horizon, utility.platform, passphrase)
            tx = builder.append_change_trust_op(utility.asset).build()
            tx.sign(utility.platform)
            await submit_settled(horizon, tx.to_xdr(), tx.hash_hex())


async def top_up(utility: Utility, horizon_url: str, passphrase: str, gateway: str, amount: str) -> None:
    """The utility refills the gateway's allowance (within its trustline's limit)."""
    async with HorizonClient(horizon_url, post_timeout_s=30) as horizon:
        builder = await _tx(horizon, utility.issuer, passphrase)
        tx = builder.append_payment_op(gateway, utility.asset, amount).build()
        tx.sign(utility.issuer)
        await submit_settled(horizon, tx.to_xdr(), tx.hash_hex())
