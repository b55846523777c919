"""``[stellar]`` in check-config: every mistake with its line and a hint; keys checked without stellar-sdk."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from stellar_sdk import Keypair, MuxedAccount

from gateway.config import InvalidConfig, StellarConfig, parse_config
from gateway.config.stellar import is_account_id, strkey_version

ISSUER = Keypair.random().public_key
PLATFORM = Keypair.random().public_key


def _doc(**stellar: str) -> str:
    values = {"horizon_url": "http://127.0.0.1:8000", "network_passphrase": "Test SDF Network ; September 2015",
              "asset_code": "KWH", "asset_issuer": ISSUER, "platform_signer": PLATFORM, "rate": "0.001", **stellar}
    body = "\n".join(f'{k} = "{v}"' for k, v in values.items())
    return (f'gateway_id = "gw"\n\n[stellar]\n{body}\n\n[mqtt]\n[[mqtt.meters]]\nid = "m1"\ntopic = "t/m1"\n'
            'format = "number"\nserial = "SN-1"\n')


def _problems(text: str) -> dict[str, tuple[int | None, str, str]]:
    with pytest.raises(InvalidConfig) as exc:
        parse_config(text)
    return {p.path: (p.line, p.message, p.hint) for p in exc.value.problems}


def test_a_valid_section_parses_and_defaults_the_seeds_starting_balance() -> None:
    cfg = parse_config(_doc())
    assert isinstance(cfg.stellar, StellarConfig)
    assert cfg.stellar.starting_balance == "3"
    assert cfg.stellar.payment_asset == "native"
    assert cfg.stellar.batch_ops == 100


def test_each_mistake_is_reported_with_its_line_and_a_hint() -> None:
    seed = Keypair.random().secret
    text = _doc(asset_issuer=ISSUER[:-1] + ("A" if ISSUER[-1] != "A" else "B"),
                platform_signer=MuxedAccount(PLATFORM, 7).account_muxed, asset_code="KILOWATTHOURS",
                rate="0.00000001", starting_balance="2.5", gateway_account=seed, payment_asset="USD")
    found = _problems(text)
    lines = text.splitlines()

    def line_of(key: str) -> int:
        return next(i for i, line in enumerate(lines, start=1) if line.startswith(f"{key} ="))

    expect = {
        "stellar.asset_issuer": "not a valid Stellar account address",
        "stellar.platform_signer": "muxed accounts (M…) are not supported",
        "stellar.asset_code": "must be 1 to 12 letters or digits",
        "stellar.rate": "more than 7 decimal places",
        "stellar.starting_balance": "below a meter account's minimum balance",
        "stellar.gateway_account": "SECRET key",
        "stellar.payment_asset": "CODE:ISSUER",
    }
    for path, message in expect.items():
        line, got, hint = found[path]
        assert message in got, (path, got)
        assert line == line_of(path.split(".")[1]), path
        assert hint, f"{path} has a hint"
    assert "rotate it" in found["stellar.gateway_account"][2]


def test_every_meter_needs_a_serial_for_its_account() -> None:
    text = _doc().replace('serial = "SN-1"\n', "") + (
        '[[mqtt.meters]]\nid = "m2"\ntopic = "t/m2"\nformat = "number"\nserial = "X"\n'
        '[[mqtt.meters]]\nid = "m3"\ntopic = "t/m3"\nformat = "number"\nserial = "X"\n'
        '[[buses]]\nname = "l"\nhost = "127.0.0.1"\n'
        '[[buses.meters]]\nid = "a"\nunit_id = 1\nprofile = "eastron-sdm630"\n'
        '[[buses.meters]]\nid = "b"\nunit_id = 2\nprofile = "finder-7m38"\n')
    found = _problems(text)
    assert "an MQTT meter cannot report it" in found["mqtt.meters[0]"][1]
    assert "serial 'X' is also meter 'm2'" in found["mqtt.meters[2].serial"][1]
    assert "has no serial register" in found["buses[0].meters[1]"][1]
    assert 'add serial = "…"' in found["buses[0].meters[1]"][2]
    assert not any(p.startswith("buses[0].meters[0]") for p in found), "the SDM630 reports its serial (0xFC00)"


def test_strkeys_are_checked_like_the_sdk_does() -> None:
    for _ in range(20):
        kp = Keypair.random()
        assert is_account_id(kp.public_key)
        assert not is_account_id(kp.secret)
        assert strkey_version(MuxedAccount(kp.public_key, 1).account_muxed) == 12 << 3
    assert not is_account_id("G" * 56)
    assert not is_account_id("")


def test_check_config_command_prints_the_lines(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(_doc(rate="1.123456789"))
    done = subprocess.run([sys.executable, "-m", "gateway", "check-config", str(path)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "stellar.rate: rate '1.123456789' has more than 7 decimal places (hint: Stellar amounts are" in done.stderr
    assert "Traceback" not in done.stderr


def test_errors_keep_their_types_and_hints_and_p2p_keys_share_the_check() -> None:
    """The section is a gateway.schema record: its validators' own error types and hints (``stellar_secret``
    and the others, as the pydantic model had them) survive, beside the schema's own; the [p2p] section's
    pydantic models check their keys with the same function and report the same type and hint."""
    from pydantic import ValidationError as PydanticValidationError

    from gateway.config.p2p import AgreementConfig
    from gateway.schema import ValidationError

    seed = Keypair.random().secret
    raw = {"horizon_url": "http://h", "network_passphrase": "p", "asset_code": "KWH", "asset_issuer": seed,
           "platform_signer": f" {PLATFORM} ", "rate": "x", "batch_ops": 0, "colour": "red"}
    with pytest.raises(ValidationError) as exc:
        StellarConfig.model_validate(raw)
    got = {e["loc"]: (e["type"], (e.get("ctx") or {}).get("hint", "")) for e in exc.value.errors()}
    assert {loc: kind for loc, (kind, _) in got.items()} == {
        ("asset_issuer",): "stellar_secret", ("rate",): "stellar_amount", ("batch_ops",): "greater_than_equal",
        ("colour",): "extra_forbidden"}
    assert "rotate it" in got[("asset_issuer",)][1]
    fixed = {k: v for k, v in raw.items() if k != "colour"} | {"asset_issuer": ISSUER, "rate": "0.5", "batch_ops": 5}
    assert StellarConfig.model_validate(fixed).platform_signer == PLATFORM, "an account key is stripped, as before"
    with pytest.raises(PydanticValidationError) as p2p:
        AgreementConfig.model_validate({"provider": seed})
    provider = next(e for e in p2p.value.errors() if e["loc"] == ("provider",))
    assert provider["type"] == "stellar_secret"
    assert provider["ctx"]["hint"] == got[("asset_issuer",)][1]
