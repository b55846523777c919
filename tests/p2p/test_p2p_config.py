"""[p2p] agreements and [soroban]: parsed when right, every mistake with its line and what to do."""

from __future__ import annotations

from pathlib import Path

import pytest
from stellar_sdk import Keypair as SdkKeypair
from stellar_sdk import StrKey

from gateway.cli import main
from gateway.config import InvalidConfig, parse_config
from gateway.p2p.task import agreements_of

PROVIDER = SdkKeypair.random().public_key
CONSUMER = SdkKeypair.random().public_key
CONTRACT = StrKey.encode_contract(bytes(range(32)))

HEAD = f"""gateway_id = "gw"

[[buses]]
name = "a"
host = "127.0.0.1"
  [[buses.meters]]
  id = "solar-1"
  unit_id = 1
  profile = "eastron-sdm630"

[soroban]
rpc_url = "http://127.0.0.1:8000/soroban/rpc"
contract_id = "{CONTRACT}"
network_passphrase = "Standalone Network ; February 2017"
"""


def agreement(**over: str) -> str:
    fields = {"id": "1", "provider_meter": '"solar-1"', "provider": f'"{PROVIDER}"', "consumer": f'"{CONSUMER}"',
              "kwh": "10", "price_per_kwh": "50", "start": "2026-06-01T00:00:00Z",
              "deadline": "2026-06-02T00:00:00+02:00", **over}
    return "\n[[p2p.agreements]]\n" + "".join(f"{k} = {v}\n" for k, v in fields.items())


def test_agreements_parse() -> None:
    cfg = parse_config(HEAD + agreement() + agreement(id="2", status='"Cancelled"'))
    assert cfg.p2p is not None
    assert cfg.soroban is not None
    (a,) = agreements_of(cfg.p2p.agreements)  # only Active ones are delivered
    assert (a.terms.agreement_id, a.terms.kwh, a.provider_meter, a.provider) == (1, 10, "solar-1", PROVIDER)
    assert a.terms.start == 1_780_272_000
    assert a.terms.deadline == 1_780_272_000 + 22 * 3600


def problems(text: str) -> list[str]:
    with pytest.raises(InvalidConfig) as err:
        parse_config(text)
    return [str(p) for p in err.value.problems]


def test_every_mistake_with_its_line() -> None:
    text = (HEAD.replace(CONTRACT, PROVIDER) + agreement(provider_meter='"solar-9"')
            + agreement(id="2", deadline="2026-05-01T00:00:00Z", consumer=f'"{PROVIDER}"')
            + agreement(id="1", provider=f'"{SdkKeypair.random().secret}"', start="2026-06-01T00:00:00"))
    lines = text.splitlines()

    def line_of(needle: str, nth: int = 0) -> int:
        return [i for i, t in enumerate(lines, start=1) if needle in t][nth]

    found = problems(text)
    assert any(f"line {line_of('contract_id')}: soroban.contract_id: not a valid Soroban contract id" in p
               for p in found), found
    assert any(f"line {line_of('solar-9')}: p2p.agreements[0].provider_meter: provider_meter 'solar-9' is not a "
               "configured meter" in p for p in found), found
    assert any(p.startswith(f"line {line_of('[[p2p.agreements]]', 1)}: p2p.agreements[1]: ")
               and "deadline must be after start" in p for p in found), found
    assert any("p2p.agreements[2].provider: this is a SECRET key" in p
               and p.startswith(f"line {line_of('provider =', 2)}:") for p in found), found
    assert any(p.startswith(f"line {line_of('start = 2026-06-01T00:00:00', 2)}: p2p.agreements[2].start")
               for p in found), found
    second_id_1 = [i for i, t in enumerate(lines, start=1) if t == "id = 1"][1]
    assert any(f"line {second_id_1}: p2p.agreements[2].id: agreement 1 is listed twice" in p
               for p in found), found


def test_check_config_says_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(HEAD + agreement(kwh="0"))
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "p2p.agreements[0].kwh" in err
    assert "line" in err
