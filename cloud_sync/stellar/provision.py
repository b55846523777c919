"""Custodial meter accounts (seed 000's CreateCustomerAccount): one per meter serial, made once.

The account is created by one transaction (see :func:`txbuild.account_transaction`), signed by
the gateway and a device key made for that attempt only. The key lives in memory while the
envelope is built; only the signed envelope and the account id are stored (before the first
submit). If that envelope is later proved void (never included), a new device key is made for
the next attempt — so there is never a second account, nor a half-made one: the transaction's
operations all apply or none do.

Before a meter's first attempt the network is asked whether an account for this serial already
exists under this gateway's signer (a box whose ledger file was lost): it is adopted, not
duplicated.

The serial number is read from the meter when its profile has a ``serial_number`` identity
register (through the line's scheduler, never beside it), else taken from the meter's
``serial`` key; when both exist they must agree (a mismatch is a wiring or unit-id mistake that
would credit the wrong customer).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

import structlog
from stellar_sdk import Keypair

from cloud_sync.stellar.horizon import HorizonClient, data_value
from cloud_sync.stellar.store import ACCOUNT, APPLIED, PENDING, AccountRow, StellarStore, StoredTx
from cloud_sync.stellar.submitter import Resolution, Submitter
from cloud_sync.stellar.txbuild import PLATFORM_WEIGHT, SERIAL_DATA_KEY, Bounds, account_transaction, asset_of
from gateway.clock import Clock
from gateway.config import GatewayConfig, ModbusMeterConfig, StellarConfig
from gateway.config.stellar import SERIAL_IDENTITY
from gateway.errors import GatewayError
from gateway.profiles import Profile, decode_identity

log = structlog.get_logger("cloud_sync.stellar")

SERIAL_READ_TIMEOUT_S: Final = 30.0
"""A one-off read queues behind the polls of a slow line; past this the meter is tried again later."""


class SerialUnavailable(GatewayError):
    """The meter's serial number cannot be known now (or ever, without a config change)."""


class RegisterReader(Protocol):
    async def request(self, unit: int, function: int, start: int, count: int, *,
                      turnaround_s: float = 0.0) -> list[int]: ...


def serial_register(profile: Profile) -> bool:
    return any(i.name == SERIAL_IDENTITY for i in profile.identity)


class MeterSerials:
    """Where each configured meter's serial number comes from (the daemon's buses, or the CLI's)."""

    def __init__(self, cfg: GatewayConfig, profiles: dict[str, Profile],
                 bus_of: Callable[[str], RegisterReader | None]) -> None:
        self._cfg = cfg
        self._profiles = profiles
        self._bus_of = bus_of
        self._bus_names = {m.id: b.name for b in cfg.buses for m in b.meters}

    def needs_line(self, meter: str) -> bool:
        """True if the serial is read from the meter (not just taken from the config)."""
        return isinstance(self._cfg.meter(meter), ModbusMeterConfig) and meter in self._profiles \
            and serial_register(self._profiles[meter])

    def bus_name(self, meter: str) -> str | None:
        return self._bus_names.get(meter)

    async def __call__(self, meter: str) -> str:
        meter_cfg = self._cfg.meter(meter)
        if meter_cfg is None:
            raise SerialUnavailable(f"meter {meter!r} has credits but is not in the config: add it back with its "
                                    "serial so its credits can be paid")
        configured = meter_cfg.serial
        if not self.needs_line(meter):
            if configured is None:
                raise SerialUnavailable(f"meter {meter!r} has no serial register; add serial = \"…\" to it")
            return configured
        assert isinstance(meter_cfg, ModbusMeterConfig)
        bus = self._bus_of(self._bus_names[meter])
        if bus is None:
            if configured is not None:
                return configured
            raise SerialUnavailable(f"bus of meter {meter!r} is not available to read its serial")
        ident = next(i for i in self._profiles[meter].identity if i.name == SERIAL_IDENTITY)
        try:
            async with asyncio.timeout(SERIAL_READ_TIMEOUT_S):
                registers = await bus.request(meter_cfg.unit_id, ident.function, ident.address,
                                              ident.register_count, turnaround_s=meter_cfg.turnaround_s)
        except (GatewayError, TimeoutError) as exc:
            raise SerialUnavailable(f"cannot read meter {meter!r}'s serial number: {exc or 'timed out'}") from None
        value = str(decode_identity(ident, registers)).strip()
        if not value or value == "0":
            raise SerialUnavailable(f"meter {meter!r} reports no serial number (register {ident.address:#06x} "
                                    "is empty); set serial = \"…\" from its nameplate")
        if configured is not None and configured != value:
            raise SerialUnavailable(f"meter {meter!r} reports serial {value} but its config says {configured}: a "
                                    "wrong unit id or wiring would credit the wrong customer; check and correct it")
        return value


@dataclass(frozen=True, slots=True)
class Provisioned:
    meter: str
    serial: str
    account: str
    how: str
    """'existing' (already active), 'adopted' (found on the network), 'created', or 'failed: …'."""


class Provisioner:
    def __init__(self, cfg: StellarConfig, store: StellarStore, horizon: HorizonClient, submitter: Submitter,
                 keypair: Keypair, clock: Clock) -> None:
        self._cfg = cfg
        self._store = store
        self._horizon = horizon
        self._submitter = submitter
        self._keypair = keypair
        self._clock = clock
        self._asset = asset_of(cfg.asset_code, cfg.asset_issuer)

    async def find_existing(self, serial: str) -> str | None:
        """An account already made for ``serial`` by this gateway, controlled by the platform."""
        async for record in self._horizon.accounts_with_signer(self._keypair.public_key):
            signers = {s.get("key"): int(s.get("weight", 0)) for s in record.get("signers", [])}
            if data_value(record, SERIAL_DATA_KEY) == serial and \
                    signers.get(self._cfg.platform_signer, 0) >= PLATFORM_WEIGHT:
                return str(record["account_id"])
        return None

    async def ensure(self, meter: str, serial: str,
                     row: AccountRow | None) -> tuple[Provisioned, StoredTx | None, Resolution | None]:
        """Make the meter's account (or adopt it); the caller has no other transaction pending.

        Returns the transaction and its resolution for the caller to settle (None, None when
        nothing was submitted).
        """
        now_ms = int(self._clock.now() * 1000)
        if row is not None and row.state == "active":
            return Provisioned(meter, row.serial, row.account_id, "existing"), None, None
        if row is None:
            existing = await self.find_existing(serial)
            if existing is not None:
                await self._store.adopt_account(meter, serial, existing, now_ms=now_ms)
                log.info("stellar_account_adopted", meter=meter, serial=serial, account=existing)
                return Provisioned(meter, serial, existing, "adopted"), None, None
        view = await self._horizon.latest()
        sequence = await self._horizon.sequence(self._keypair.public_key)
        if sequence is None:
            raise SerialUnavailable(f"the gateway account {self._keypair.public_key} is not on the network: the "
                                    "utility must fund it with XLM first (see meter-gateway stellar onboard)")
        device = Keypair.random()  # exists only here; discarded when this function returns
        tx = account_transaction(
            self._keypair, device, sequence + 1, serial=serial, asset=self._asset,
            platform_signer=self._cfg.platform_signer, starting_balance=self._cfg.starting_balance,
            bounds=Bounds.after(view, window_ledgers=self._cfg.tx_window_ledgers, timeout_s=self._cfg.tx_timeout_s),
            base_fee=view.base_fee, passphrase=self._cfg.network_passphrase)
        account = device.public_key
        del device
        await self._store.record_account_tx(meter, serial, account, tx, now_ms=now_ms)
        log.info("stellar_account_creating", meter=meter, serial=serial, account=account, tx=tx.hash)
        stored = StoredTx(tx.hash, ACCOUNT, meter, tx.envelope, tx.seq, tx.bounds, PENDING, 0)
        resolution = await self._submitter.resolve(stored)
        how = "created" if resolution.state == APPLIED else f"not created: {resolution.tx_code} {resolution.reason}"
        return Provisioned(meter, serial, account, how), stored, resolution
