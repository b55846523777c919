"""The ``[stellar]`` section: the tenant (utility) the gateway tokenizes consumption for.

Onboarding a tenant (seed 000's AddTenant / addAsset) is configuration: the network, the
utility's asset (code + issuer), the platform's master signer, the rate from Wh to asset
units, and what each new meter account starts with. Only *public* keys appear here: the box
never holds the issuer's or the platform's secret. Its own account is its identity key.

Keys are checked without stellar-sdk (the daemon imports it only when ``[stellar]`` is
configured): a StrKey is base32 of a version byte, the 32-byte key and a CRC16-XModem
checksum (SEP-23), which is all a config check needs.

The section is a :mod:`gateway.schema` record like the rest of the file, not a pydantic model:
stellar-sdk imports pydantic anyway, but building this model's pydantic schema cost the daemon
another 1.2 MiB, and ``check-config`` of a file with ``[stellar]`` now needs neither. Error types,
messages and hints are the ones the pydantic model gave (:class:`gateway.schema.FieldError`).
"""

from __future__ import annotations

import base64
import binascii
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final

from gateway.schema import Field, FieldError, Model, field_validator

MAX_AMOUNT_DECIMALS: Final = 7
"""Stellar amounts are integers of 10^-7 units (stroops)."""
MAX_ASSET_CODE: Final = 12
MIN_STARTING_BALANCE_XLM: Final = Decimal(3)
"""A meter account holds a trustline, a data entry and two extra signers: (2 + 4) × 0.5 XLM reserve."""
SERIAL_IDENTITY: Final = "serial_number"
"""The identity register a firmware profile names when the meter reports its serial number."""

_VERSION_ACCOUNT: Final = 6 << 3
_VERSION_MUXED: Final = 12 << 3
_VERSION_SEED: Final = 18 << 3


def _crc16_xmodem(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def strkey_version(text: str) -> int | None:
    """The StrKey version byte of ``text`` if it is a well-formed StrKey (checksum included), else None."""
    if not text or not text.isascii() or text != text.upper():
        return None
    padded = text + "=" * (-len(text) % 8)
    try:
        raw = base64.b32decode(padded)
    except (binascii.Error, ValueError):
        return None
    if len(raw) < 3 or base64.b32encode(raw).decode().rstrip("=") != text:
        return None
    payload, checksum = raw[:-2], raw[-2:]
    if int.from_bytes(checksum, "little") != _crc16_xmodem(payload):
        return None
    return payload[0]


def is_account_id(text: str) -> bool:
    """A plain ed25519 account address (``G…``, 56 characters, valid checksum)."""
    return len(text) == 56 and strkey_version(text) == _VERSION_ACCOUNT


def account_key(value: str) -> str:
    """``value`` stripped if it is a plain account address (``G…``); else a FieldError saying what it is."""
    value = value.strip()
    version = strkey_version(value)
    if version == _VERSION_ACCOUNT and len(value) == 56:
        return value
    if version == _VERSION_MUXED:
        raise FieldError(
            "stellar_muxed", "muxed accounts (M…) are not supported",
            {"hint": "use the underlying G… account; the platform does not support muxed accounts"})
    if version == _VERSION_SEED:
        raise FieldError(
            "stellar_secret", "this is a SECRET key (S…), not an account address",
            {"hint": "remove it from the file now and rotate it; the gateway only needs public keys (G…)"})
    raise FieldError(
        "stellar_key", "not a valid Stellar account address",
        {"hint": "a public key is 56 characters starting with G; copy it again (the checksum does not match)"})


def _decimal(value: str, what: str, *, places: int = MAX_AMOUNT_DECIMALS) -> Decimal:
    try:
        number = Decimal(value.strip())
    except InvalidOperation:
        raise FieldError("stellar_amount", f"{what} {value!r} is not a decimal number",
                         {"hint": 'write it as a quoted decimal string, e.g. "0.001"'}) from None
    if not number.is_finite() or number <= 0:
        raise FieldError("stellar_amount", f"{what} must be a positive number",
                         {"hint": 'e.g. "0.001"'})
    exponent = number.normalize().as_tuple().exponent
    if isinstance(exponent, int) and -exponent > places:
        raise FieldError(
            "stellar_amount", f"{what} {value!r} has more than {places} decimal places",
            {"hint": f"Stellar amounts are whole multiples of 0.0000001 ({places} places); round it"})
    return number


def _asset_code(value: str) -> str:
    if not 1 <= len(value) <= MAX_ASSET_CODE or not value.isascii() or not value.isalnum():
        raise FieldError(
            "stellar_asset", f"asset code {value!r} must be 1 to {MAX_ASSET_CODE} letters or digits",
            {"hint": "use the code exactly as the utility issued it, e.g. \"KWH\""})
    return value


def parse_asset(value: str) -> tuple[str, str] | None:
    """``"native"`` → None (XLM); ``"CODE:G…"`` → (code, issuer). Raises ValueError otherwise."""
    if value == "native":
        return None
    code, sep, issuer = value.partition(":")
    if not sep:
        raise ValueError("write the asset as \"native\" or \"CODE:ISSUER\"")
    return _asset_code(code), account_key(issuer)


class StellarConfig(Model):
    """Where and how consumption is tokenized; see README "Stellar: tokenized consumption"."""

    horizon_url: str = Field(pattern=r"^https?://", description="Horizon API base URL")
    network_passphrase: str = Field(min_length=1, description="the network's passphrase (signatures cover it)")
    asset_code: str = Field(description="the utility's asset code")
    asset_issuer: str = Field(description="the utility's issuing account (public key only)")
    platform_signer: str = Field(
        description="the platform's master signer: controls every meter account (it alone meets HIGH)")
    rate: str = Field(
        description="asset units per Wh, an exact decimal with at most 7 places (\"0.001\" = 1 unit per kWh)")
    starting_balance: str = Field(
        default="3", description="XLM each new meter account is created with (seed 000: 3 XLM)")
    gateway_account: str | None = Field(
        default=None, description="this box's account; must be its identity key (meter-gateway identity)")
    company_account: str | None = Field(
        default=None, description="the management company's account that invoices pay (seed 000's CreateInvoice)")
    payment_asset: str = Field(
        default="native", description="what payers pay the company in: \"native\" (XLM) or \"CODE:ISSUER\"")
    batch_ops: int = Field(default=100, ge=1, le=100, description="payments per transaction (protocol maximum 100)")
    tx_timeout_s: int = Field(
        default=300, ge=30, le=3600, description="a transaction's upper time bound, after the network's latest ledger")
    tx_window_ledgers: int = Field(
        default=10, ge=2, le=1000, description="a transaction's upper ledger bound, after the network's latest ledger")
    timeout_s: float = Field(default=35.0, gt=0, le=120, description="per Horizon request (a submit may take ~30 s)")
    backoff_max_s: float = Field(default=300.0, ge=1, le=3600, description="cap of the retry delay")
    balance_refresh_s: float = Field(
        default=300.0, ge=10, le=86_400, description="how often idle meter balances are re-read for the status page")

    @field_validator("asset_issuer", "platform_signer", "gateway_account", "company_account")
    @classmethod
    def _check_account(cls, value: str | None) -> str | None:
        return None if value is None else account_key(value)

    @field_validator("asset_code")
    @classmethod
    def _check_code(cls, value: str) -> str:
        return _asset_code(value)

    @field_validator("rate")
    @classmethod
    def _check_rate(cls, value: str) -> str:
        _decimal(value, "rate")
        return value.strip()

    @field_validator("starting_balance")
    @classmethod
    def _check_starting_balance(cls, value: str) -> str:
        if _decimal(value, "starting_balance") < MIN_STARTING_BALANCE_XLM:
            raise FieldError(
                "stellar_amount", f"starting_balance {value!r} XLM is below a meter account's minimum balance",
                {"hint": "a meter account holds a trustline, its serial and two signers: (2 + 4) × 0.5 XLM = 3 XLM "
                         "at the network's base reserve; use at least \"3\""})
        return value.strip()

    @field_validator("payment_asset")
    @classmethod
    def _check_payment_asset(cls, value: str) -> str:
        try:
            parse_asset(value)
        except ValueError as exc:
            raise FieldError("stellar_asset", f"payment_asset {value!r}: {exc}",
                             {"hint": 'e.g. "native" (XLM) or "USDC:G…"'}) from None
        return value


def _meters(raw: dict[str, Any]) -> list[tuple[tuple[str | int, ...], dict[str, Any]]]:
    out: list[tuple[tuple[str | int, ...], dict[str, Any]]] = []
    buses = raw.get("buses")
    for b, bus in enumerate(buses if isinstance(buses, list) else []):
        meters = bus.get("meters") if isinstance(bus, dict) else None
        for m, meter in enumerate(meters if isinstance(meters, list) else []):
            if isinstance(meter, dict):
                out.append((("buses", b, "meters", m), meter))
    mqtt = raw.get("mqtt")
    meters = mqtt.get("meters") if isinstance(mqtt, dict) else None
    for m, meter in enumerate(meters if isinstance(meters, list) else []):
        if isinstance(meter, dict):
            out.append((("mqtt", "meters", m), meter))
    return out


def stellar_problems(raw: dict[str, Any], base_dir: Path) -> list[tuple[tuple[str | int, ...], str, str]]:
    """With ``[stellar]``, every meter needs a serial number for its account: from its profile's
    serial register or a ``serial`` key; two meters may not share one (they would share an account)."""
    if not isinstance(raw.get("stellar"), dict):
        return []
    from gateway.errors import ProfileError
    from gateway.profiles import resolve_profile

    found: list[tuple[tuple[str | int, ...], str, str]] = []
    seen: dict[str, Any] = {}
    for where, meter in _meters(raw):
        serial = meter.get("serial")
        if isinstance(serial, str):
            if serial in seen:
                found.append(((*where, "serial"), f"serial {serial!r} is also meter {seen[serial]!r}'s",
                              "each meter has its own serial number (on its nameplate)"))
            seen.setdefault(serial, meter.get("id"))
            continue
        profile = meter.get("profile") if where[0] == "buses" else None
        has_register = False
        if isinstance(profile, str):
            try:
                has_register = any(i.name == SERIAL_IDENTITY for i in resolve_profile(profile, base_dir).identity)
            except ProfileError:
                continue  # reported by the profile check
        if not has_register:
            what = f"profile {profile!r} has no serial register" if profile else "an MQTT meter cannot report it"
            found.append((where, f"meter {meter.get('id')!r} needs a serial number for its Stellar account and "
                                 f"{what}", 'add serial = "…" (from the meter\'s nameplate) to this meter'))
    return found
