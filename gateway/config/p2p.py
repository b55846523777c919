"""The ``[p2p]`` and ``[soroban]`` sections: energy-sharing agreements (seed 001) and where deliveries go.

Agreements are *mirrored* from the contract by whoever creates them there (the installer, or the
central system that brokered the deal): the box cannot create or change one, it only attests
what its provider meter exported inside the agreement's window. A config section is what both
already use for everything else on the box (one file, ``check-config`` with line and reason,
reloaded on restart), so agreements are written there too: one ``[[p2p.agreements]]`` per
agreement, its numbers exactly as ``get_agreement`` returns them.

Like ``[stellar]``, the checks need no stellar-sdk (StrKeys are checked by their checksum).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from gateway.config.stellar import account_key, strkey_version
from gateway.schema import FieldError

U64_MAX: Final = 2**64 - 1
_VERSION_CONTRACT: Final = 2 << 3
STATUSES: Final = ("Active", "Delivered", "Settled", "Cancelled", "Expired")
"""The contract's AgreementStatus; only ``Active`` agreements get a delivery record."""


def _contract_id(value: str) -> str:
    value = value.strip()
    if len(value) != 56 or strkey_version(value) != _VERSION_CONTRACT:
        raise PydanticCustomError("soroban_contract", "not a valid Soroban contract id",
                                  {"hint": "a contract id is 56 characters starting with C; copy it again"})
    return value


ContractId = Annotated[str, AfterValidator(_contract_id)]


def _account_key(value: str) -> str:
    try:
        return account_key(value)
    except FieldError as exc:  # the [stellar] section's check, in pydantic's terms (this section is pydantic)
        raise PydanticCustomError(exc.kind, str(exc), exc.ctx) from None


AccountKey = Annotated[str, AfterValidator(_account_key)]


class AgreementConfig(BaseModel):
    """One agreement as the contract holds it, and which of this box's meters is its provider."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: int = Field(ge=1, le=U64_MAX, description="the contract's agreement_id")
    provider_meter: str = Field(min_length=1, description="the configured meter whose export is delivered")
    provider: AccountKey = Field(description="the provider's address in the contract (the meter's custodial account)")
    consumer: AccountKey = Field(description="the consumer's address in the contract")
    kwh: int = Field(ge=1, le=U64_MAX, description="energy_amount_kwh: whole kWh agreed")
    price_per_kwh: int = Field(ge=0, le=U64_MAX, description="price_per_kwh in the contract's token units")
    start: AwareDatetime = Field(description="the window's start (the agreement's created_at), with a time zone")
    deadline: AwareDatetime = Field(description="delivery_deadline, with a time zone")
    status: Literal["Active", "Delivered", "Settled", "Cancelled", "Expired"] = Field(
        default="Active", description="the contract's status; only Active agreements are delivered")

    @model_validator(mode="after")
    def _window(self) -> AgreementConfig:
        if self.deadline <= self.start:
            raise ValueError("deadline must be after start")
        if self.provider == self.consumer:
            raise ValueError("provider and consumer are the same address (the contract refuses self-sharing)")
        return self

    @property
    def start_s(self) -> int:
        return _unix(self.start)

    @property
    def deadline_s(self) -> int:
        return _unix(self.deadline)


def _unix(t: datetime) -> int:
    return int(t.timestamp())


class P2PConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    agreements: list[AgreementConfig] = Field(default_factory=list)
    check_every_s: float = Field(default=60.0, gt=0, le=3600,
                                 description="how often agreements are looked at when no interval wakes the planner")


class SorobanConfig(BaseModel):
    """Where delivery records are sent: the contract on a Soroban RPC server."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rpc_url: str = Field(pattern=r"^https?://", description="Soroban RPC endpoint (JSON-RPC 2.0)")
    contract_id: ContractId = Field(description="the energy-sharing contract (C…)")
    network_passphrase: str = Field(min_length=1, description="the network's passphrase (signatures cover it)")
    timeout_s: float = Field(default=30.0, gt=0, le=120, description="per RPC request")
    backoff_max_s: float = Field(default=300.0, ge=1, le=3600, description="cap of the retry delay")
    tx_timeout_s: int = Field(default=120, ge=30, le=3600,
                              description="a transaction's upper time bound after the network's latest ledger")


def p2p_problems(raw: dict[str, Any], meter_ids: set[str]) -> list[tuple[tuple[str | int, ...], str, str]]:
    """Agreement checks across the file: a known provider meter, one entry per agreement id."""
    p2p = raw.get("p2p")
    agreements = p2p.get("agreements") if isinstance(p2p, dict) else None
    found: list[tuple[tuple[str | int, ...], str, str]] = []
    seen: dict[Any, int] = {}
    for i, a in enumerate(agreements if isinstance(agreements, list) else []):
        if not isinstance(a, dict):
            continue
        where: tuple[str | int, ...] = ("p2p", "agreements", i)
        meter = a.get("provider_meter")
        if isinstance(meter, str) and meter and meter not in meter_ids:
            found.append(((*where, "provider_meter"), f"provider_meter {meter!r} is not a configured meter",
                          "use the id of the meter (in [[buses.meters]] or [[mqtt.meters]]) that measures the "
                          "provider's export"))
        aid = a.get("id")
        if isinstance(aid, int):
            if aid in seen:
                found.append(((*where, "id"), f"agreement {aid} is listed twice (also entry {seen[aid] + 1})",
                              "each agreement of the contract appears once"))
            seen.setdefault(aid, i)
    return found
