"""Seed 000's CreateInvoice end to end on the local ledger, and the invoices it refuses."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from stellar_sdk import Keypair, MuxedAccount, TransactionEnvelope

from cloud_sync.stellar.horizon import HorizonClient
from cloud_sync.stellar.invoice import InvoiceRefused, create_invoice
from tests.stellar.gateway_harness import (
    GW,
    Tenant,
    account,
    asset_balance,
    readings,
    run_until,
    tenant,
)

XLM = 10_000_000


def xlm(doc: dict[str, object]) -> int:
    from cloud_sync.stellar.horizon import balance_of

    got = balance_of(doc, None, None)  # type: ignore[arg-type]
    assert got is not None
    return got


async def _credited(t: Tenant) -> str:
    await t.ledger.commit_readings(readings("m1", 4), now_ms=1)  # 420 Wh = 0.42 KWH
    await run_until(t.uplink(["m1"]), t.settled)
    return (await t.accounts())["m1"]


async def _payer(t: Tenant) -> Keypair:
    payer = Keypair.random()
    assert t.running.ledger.friendbot(payer.public_key).successful
    return payer


async def test_the_payer_and_the_platform_sign_and_both_transfers_happen(tmp_path: Path) -> None:
    async with tenant(tmp_path) as t:
        meter_account = await _credited(t)
        payer = await _payer(t)
        code, issuer = t.cfg.asset_code, t.cfg.asset_issuer
        platform, company = t.utility.platform.public_key, t.utility.company.public_key
        before = {"meter": await asset_balance(t.url, meter_account, code, issuer),
                  "platform": await asset_balance(t.url, platform, code, issuer),
                  "payer": xlm(await account(t.url, payer.public_key)),
                  "company": xlm(await account(t.url, company))}
        assert before["meter"] == 420 * t.per_wh
        async with HorizonClient(t.url, post_timeout_s=30) as horizon:
            invoice = await create_invoice(horizon, t.cfg, meter="m1", meter_account=meter_account,
                                           payer=payer.public_key, amount="0.3", payment_amount="12.5")
        envelope = TransactionEnvelope.from_xdr(invoice.envelope, t.cfg.network_passphrase)
        assert not envelope.signatures, "returned unsigned"
        ops = envelope.transaction.operations
        assert [op.source.account_id if op.source else None for op in ops] == [meter_account, None]
        envelope.sign(payer)
        envelope.sign(t.utility.platform)
        result = t.running.ledger.submit(envelope.to_xdr())
        assert result.successful, result.result_xdr
        assert await asset_balance(t.url, meter_account, code, issuer) == before["meter"] - 3_000_000
        assert await asset_balance(t.url, platform, code, issuer) == before["platform"] + 3_000_000
        assert xlm(await account(t.url, company)) == before["company"] + 125_000_000
        assert xlm(await account(t.url, payer.public_key)) == before["payer"] - 125_000_000 - 200  # two ops' fee


async def test_an_invoice_signed_by_the_payer_alone_is_refused_by_the_network(tmp_path: Path) -> None:
    async with tenant(tmp_path) as t:
        meter_account = await _credited(t)
        payer = await _payer(t)
        async with HorizonClient(t.url, post_timeout_s=30) as horizon:
            invoice = await create_invoice(horizon, t.cfg, meter="m1", meter_account=meter_account,
                                           payer=payer.public_key, amount="0.1")
        envelope = TransactionEnvelope.from_xdr(invoice.envelope, t.cfg.network_passphrase)
        envelope.sign(payer)
        result = t.running.ledger.submit(envelope.to_xdr())
        assert not result.included, "the meter's account needs the platform's signature"


async def test_refusals_say_what_is_wrong(tmp_path: Path) -> None:
    async with tenant(tmp_path) as t:
        meter_account = await _credited(t)
        payer = await _payer(t)
        muxed = MuxedAccount(payer.public_key, 42).account_muxed
        usd = t.cfg.model_copy(update={"payment_asset": f"USD:{t.utility.issuer.public_key}"})
        async with HorizonClient(t.url, post_timeout_s=30) as horizon:
            cases = [
                ({"cfg": t.cfg, "payer": muxed, "amount": "0.1"}, "muxed accounts are not supported"),
                ({"cfg": t.cfg, "payer": payer.public_key, "amount": "0.43"}, "above meter m1's balance of 0.4200000"),
                ({"cfg": usd, "payer": payer.public_key, "amount": "0.1"}, "has no trustline to USD"),
                ({"cfg": t.cfg, "payer": payer.public_key, "amount": "0.00000001"}, "more than 7 decimal places"),
                ({"cfg": t.cfg, "payer": Keypair.random().public_key, "amount": "0.1"}, "does not exist"),
                ({"cfg": t.cfg.model_copy(update={"company_account": None}), "payer": payer.public_key,
                      "amount": "0.1"}, "set [stellar] company_account"),
            ]
            for kwargs, message in cases:
                with pytest.raises(InvoiceRefused) as exc:
                    await create_invoice(horizon, kwargs.pop("cfg"), meter="m1",  # type: ignore[arg-type]
                                         meter_account=meter_account, **kwargs)  # type: ignore[arg-type]
                assert message in str(exc.value), (message, str(exc.value))


async def test_the_invoice_command_prints_the_envelope_and_refuses_a_muxed_payer(tmp_path: Path) -> None:
    async with tenant(tmp_path) as t:
        await _credited(t)
        payer = await _payer(t)
        config = tmp_path / "gateway.toml"
        config.write_text(
            f'gateway_id = "{GW}"\ndata_dir = "{tmp_path / "gateway"}"\n[time]\ntrust = "always"\n'
            f"[stellar]\nhorizon_url = \"{t.url}\"\nnetwork_passphrase = \"{t.cfg.network_passphrase}\"\n"
            f'asset_code = "{t.cfg.asset_code}"\nasset_issuer = "{t.cfg.asset_issuer}"\n'
            f'platform_signer = "{t.cfg.platform_signer}"\nrate = "0.001"\n'
            f'company_account = "{t.cfg.company_account}"\n'
            '[[mqtt.meters]]\nid = "m1"\ntopic = "m1"\nformat = "number"\nserial = "SN-m1"\n')

        async def run(*extra: str) -> tuple[int, str, str]:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway", "stellar", "invoice", "--config", str(config), "--meter", "m1",
                *extra, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await proc.communicate()
            assert proc.returncode is not None
            return proc.returncode, out.decode(), err.decode()

        code, out, err = await run("--payer", payer.public_key, "--amount", "0.2")
        assert code == 0, err
        envelope = TransactionEnvelope.from_xdr(out.strip(), t.cfg.network_passphrase)
        assert len(envelope.transaction.operations) == 2
        assert "Sign it as the payer and as the platform" in err
        code, out, err = await run("--payer", MuxedAccount(payer.public_key, 1).account_muxed, "--amount", "0.2")
        assert code == 1
        assert not out
        assert "muxed accounts are not supported" in err
        assert "Traceback" not in err
