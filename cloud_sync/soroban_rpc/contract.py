"""The P2P energy-sharing contract of seed 001 as a pure state machine (no XDR, no I/O).

Each public function takes the contract's state, the ledger time and the addresses whose
authorisation the transaction carried (``authorized``), and either changes the state and
returns a value, or raises :class:`ContractError` with one of :class:`SharingError`'s codes —
in which case the caller drops every change (a failed Soroban invocation changes nothing).
``require_auth`` records which addresses the call needed, so simulation can hand out the
authorisation entries to sign.

Decisions where the seed is silent (documented in the package README):

* ``deliver_energy`` may be called more than once per agreement (partial deliveries); the sum
  may never exceed the agreed kWh (``ExcessiveDelivery``). Each call creates one transaction
  (status ``Delivered``) and returns its id; the agreement turns ``Delivered`` when the agreed
  kWh are reached, ``Settled`` when it is fully delivered and every transaction settled.
* After the deadline a delivery fails with ``DeliveryDeadlinePassed`` (the seed's name; the
  failure changes nothing, so the agreement's status changes only through
  ``expire_agreement``, which anyone may call after the deadline: Active → Expired).
* ``cancel_agreement`` by either party while nothing is delivered: Active → Cancelled.
* ``raise_dispute`` by either party on a Delivered transaction → Disputed (settlement refused
  with ``TransactionDisputed``); ``resolve_dispute`` by the admin: ``upheld=False`` → back to
  Delivered, ``upheld=True`` → the transaction stays Disputed (never paid) and its kWh no longer
  count as delivered. ``Pending`` exists as the seed names it but no function produces it.
* The payment token is this contract's own integer ledger (``balances``; the admin ``mint``s),
  not the Horizon stand-in's asset balances: see the README for why.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

U64_MAX = 2**64 - 1


class SharingError(IntEnum):
    """Contract error codes (``Error(Contract, #n)``); names from seed 001 first, ours after."""

    NotInitialized = 1
    ProsumerNotRegistered = 2
    AgreementNotFound = 3
    DeliveryDeadlinePassed = 4
    TransactionAlreadySettled = 5
    SelfSharingNotAllowed = 6
    PaymentFailed = 7
    AlreadyInitialized = 8
    ProsumerAlreadyRegistered = 9
    InvalidAmount = 10
    InvalidDeadline = 11
    AgreementNotActive = 12
    ExcessiveDelivery = 13
    NotAuthorized = 14
    TransactionNotFound = 15
    TransactionDisputed = 16
    NotDisputed = 17
    DeadlineNotPassed = 18
    AuthMissing = 19


class ContractError(Exception):
    def __init__(self, code: SharingError, detail: str = "") -> None:
        super().__init__(f"{code.name}: {detail}" if detail else code.name)
        self.code = code


class AgreementStatus(StrEnum):
    Active = "Active"
    Delivered = "Delivered"
    Settled = "Settled"
    Cancelled = "Cancelled"
    Expired = "Expired"


class TransactionStatus(StrEnum):
    Pending = "Pending"
    Delivered = "Delivered"
    Settled = "Settled"
    Disputed = "Disputed"


@dataclass
class Agreement:
    agreement_id: int
    provider: str
    consumer: str
    energy_amount_kwh: int
    price_per_kwh: int
    total_amount: int
    delivery_deadline: int
    status: AgreementStatus
    created_at: int
    delivered_kwh: int = 0
    """Not in the seed's struct (kept out of its SCVal): what deliveries have counted so far."""


@dataclass
class EnergyTransaction:
    transaction_id: int
    agreement_id: int
    provider: str
    consumer: str
    energy_delivered_kwh: int
    meter_reading: int
    payment_amount: int
    delivered_at: int
    settled_at: int | None
    status: TransactionStatus
    refunded: bool = False
    """Not in the seed's struct: a dispute upheld against this delivery (it is never paid)."""


@dataclass
class ContractState:
    admin: str | None = None
    token: str | None = None
    prosumers: set[str] = field(default_factory=set)
    agreements: dict[int, Agreement] = field(default_factory=dict)
    transactions: dict[int, EnergyTransaction] = field(default_factory=dict)
    balances: dict[str, int] = field(default_factory=dict)
    next_agreement: int = 1
    next_transaction: int = 1

    def to_json(self) -> dict[str, Any]:
        return {"admin": self.admin, "token": self.token, "prosumers": sorted(self.prosumers),
                "agreements": [{**vars(a), "status": a.status.value} for a in self.agreements.values()],
                "transactions": [{**vars(t), "status": t.status.value} for t in self.transactions.values()],
                "balances": self.balances, "next_agreement": self.next_agreement,
                "next_transaction": self.next_transaction}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ContractState:
        return cls(doc["admin"], doc["token"], set(doc["prosumers"]),
                   {a["agreement_id"]: Agreement(**{**a, "status": AgreementStatus(a["status"])})
                    for a in doc["agreements"]},
                   {t["transaction_id"]: EnergyTransaction(**{**t, "status": TransactionStatus(t["status"])})
                    for t in doc["transactions"]},
                   dict(doc["balances"]), doc["next_agreement"], doc["next_transaction"])


@dataclass
class Call:
    """One invocation's context: the ledger time and the addresses whose authorisation it carries."""

    now: int
    authorized: frozenset[str] = frozenset()
    enforce_auth: bool = True
    """False while simulating: record what auth is needed instead of refusing."""
    required: list[str] = field(default_factory=list)

    def require_auth(self, address: str) -> None:
        if address not in self.required:
            self.required.append(address)
        if self.enforce_auth and address not in self.authorized:
            raise ContractError(SharingError.AuthMissing, f"{address} did not authorise this call")


def _u64(value: int, what: str, *, positive: bool = False) -> int:
    if not 0 <= value <= U64_MAX or (positive and value == 0):
        raise ContractError(SharingError.InvalidAmount, f"{what} = {value}")
    return value


class EnergySharing:
    """The contract's functions over a state; ``invoke`` runs one on a copy and commits on success."""

    def __init__(self, state: ContractState | None = None) -> None:
        self.state = state or ContractState()

    def invoke(self, function: str, args: list[Any], call: Call) -> Any:
        """Run ``function``; on ContractError the state is untouched."""
        fn = FUNCTIONS.get(function)
        if fn is None:
            raise ValueError(f"the contract has no function {function!r}")
        work = copy.deepcopy(self.state)
        result = fn(work, call, *args)
        self.state = work
        return result


def _initialized(s: ContractState) -> str:
    if s.admin is None:
        raise ContractError(SharingError.NotInitialized)
    return s.admin


def _registered(s: ContractState, who: str) -> None:
    if who not in s.prosumers:
        raise ContractError(SharingError.ProsumerNotRegistered, who)


def _agreement(s: ContractState, agreement_id: int) -> Agreement:
    a = s.agreements.get(agreement_id)
    if a is None:
        raise ContractError(SharingError.AgreementNotFound, str(agreement_id))
    return a


def _transaction(s: ContractState, transaction_id: int) -> EnergyTransaction:
    t = s.transactions.get(transaction_id)
    if t is None:
        raise ContractError(SharingError.TransactionNotFound, str(transaction_id))
    return t


def initialize(s: ContractState, c: Call, admin: str, token_contract: str) -> None:
    if s.admin is not None:
        raise ContractError(SharingError.AlreadyInitialized)
    c.require_auth(admin)
    s.admin, s.token = admin, token_contract


def register_prosumer(s: ContractState, c: Call, prosumer: str) -> None:
    _initialized(s)
    c.require_auth(prosumer)
    if prosumer in s.prosumers:
        raise ContractError(SharingError.ProsumerAlreadyRegistered, prosumer)
    s.prosumers.add(prosumer)


def create_agreement(s: ContractState, c: Call, provider: str, consumer: str, energy_amount_kwh: int,
                     price_per_kwh: int, delivery_deadline: int) -> int:
    _initialized(s)
    c.require_auth(provider)
    _registered(s, provider)
    _registered(s, consumer)
    if provider == consumer:
        raise ContractError(SharingError.SelfSharingNotAllowed)
    _u64(energy_amount_kwh, "energy_amount_kwh", positive=True)
    _u64(price_per_kwh, "price_per_kwh")
    total = energy_amount_kwh * price_per_kwh
    _u64(total, "total_amount")
    if delivery_deadline <= c.now:
        raise ContractError(SharingError.InvalidDeadline, f"deadline {delivery_deadline} is not after {c.now}")
    agreement_id = s.next_agreement
    s.next_agreement += 1
    s.agreements[agreement_id] = Agreement(agreement_id, provider, consumer, energy_amount_kwh, price_per_kwh, total,
                                           delivery_deadline, AgreementStatus.Active, c.now)
    return agreement_id


def deliver_energy(s: ContractState, c: Call, agreement_id: int, energy_delivered_kwh: int, meter_reading: int,
                   provider: str) -> int:
    _initialized(s)
    c.require_auth(provider)
    _registered(s, provider)
    a = _agreement(s, agreement_id)
    if a.provider != provider:
        raise ContractError(SharingError.NotAuthorized, f"{provider} is not agreement {agreement_id}'s provider")
    if a.status is not AgreementStatus.Active:
        raise ContractError(SharingError.AgreementNotActive, f"agreement {agreement_id} is {a.status.value}")
    if c.now > a.delivery_deadline:
        raise ContractError(SharingError.DeliveryDeadlinePassed,
                            f"agreement {agreement_id}'s deadline {a.delivery_deadline} passed at {c.now}")
    _u64(energy_delivered_kwh, "energy_delivered_kwh", positive=True)
    _u64(meter_reading, "meter_reading")
    if a.delivered_kwh + energy_delivered_kwh > a.energy_amount_kwh:
        raise ContractError(SharingError.ExcessiveDelivery,
                            f"{a.delivered_kwh} + {energy_delivered_kwh} kWh > {a.energy_amount_kwh} agreed")
    a.delivered_kwh += energy_delivered_kwh
    if a.delivered_kwh == a.energy_amount_kwh:
        a.status = AgreementStatus.Delivered
    transaction_id = s.next_transaction
    s.next_transaction += 1
    s.transactions[transaction_id] = EnergyTransaction(
        transaction_id, agreement_id, provider, a.consumer, energy_delivered_kwh, meter_reading,
        energy_delivered_kwh * a.price_per_kwh, c.now, None, TransactionStatus.Delivered)
    return transaction_id


def settle_payment(s: ContractState, c: Call, transaction_id: int, settler: str) -> None:
    _initialized(s)
    c.require_auth(settler)
    t = _transaction(s, transaction_id)
    if settler not in (t.provider, t.consumer):
        raise ContractError(SharingError.NotAuthorized, f"{settler} is not a party to transaction {transaction_id}")
    if t.status is TransactionStatus.Settled:
        raise ContractError(SharingError.TransactionAlreadySettled, str(transaction_id))
    if t.status is TransactionStatus.Disputed:
        raise ContractError(SharingError.TransactionDisputed, str(transaction_id))
    if s.balances.get(t.consumer, 0) < t.payment_amount:
        raise ContractError(SharingError.PaymentFailed,
                            f"consumer holds {s.balances.get(t.consumer, 0)}, owes {t.payment_amount}")
    s.balances[t.consumer] = s.balances.get(t.consumer, 0) - t.payment_amount
    s.balances[t.provider] = s.balances.get(t.provider, 0) + t.payment_amount
    t.status, t.settled_at = TransactionStatus.Settled, c.now
    a = s.agreements[t.agreement_id]
    mine = [x for x in s.transactions.values() if x.agreement_id == a.agreement_id and not x.refunded]
    if a.status is AgreementStatus.Delivered and all(x.status is TransactionStatus.Settled for x in mine):
        a.status = AgreementStatus.Settled


def raise_dispute(s: ContractState, c: Call, transaction_id: int, disputer: str) -> None:
    _initialized(s)
    c.require_auth(disputer)
    t = _transaction(s, transaction_id)
    if disputer not in (t.provider, t.consumer):
        raise ContractError(SharingError.NotAuthorized, f"{disputer} is not a party to transaction {transaction_id}")
    if t.status is TransactionStatus.Settled:
        raise ContractError(SharingError.TransactionAlreadySettled, str(transaction_id))
    if t.status is TransactionStatus.Disputed:
        raise ContractError(SharingError.TransactionDisputed, str(transaction_id))
    t.status = TransactionStatus.Disputed


def resolve_dispute(s: ContractState, c: Call, transaction_id: int, admin: str, upheld: bool) -> None:
    if admin != _initialized(s):
        raise ContractError(SharingError.NotAuthorized, f"{admin} is not the admin")
    c.require_auth(admin)
    t = _transaction(s, transaction_id)
    if t.status is not TransactionStatus.Disputed or t.refunded:
        raise ContractError(SharingError.NotDisputed, str(transaction_id))
    if upheld:
        a = s.agreements[t.agreement_id]
        a.delivered_kwh -= t.energy_delivered_kwh
        if a.status is AgreementStatus.Delivered:
            a.status = AgreementStatus.Active
        t.refunded = True
    else:
        t.status = TransactionStatus.Delivered


def cancel_agreement(s: ContractState, c: Call, agreement_id: int, party: str) -> None:
    _initialized(s)
    c.require_auth(party)
    a = _agreement(s, agreement_id)
    if party not in (a.provider, a.consumer):
        raise ContractError(SharingError.NotAuthorized, f"{party} is not a party to agreement {agreement_id}")
    if a.status is not AgreementStatus.Active or a.delivered_kwh:
        raise ContractError(SharingError.AgreementNotActive, f"agreement {agreement_id} is {a.status.value}")
    a.status = AgreementStatus.Cancelled


def expire_agreement(s: ContractState, c: Call, agreement_id: int) -> None:
    _initialized(s)
    a = _agreement(s, agreement_id)
    if a.status is not AgreementStatus.Active:
        raise ContractError(SharingError.AgreementNotActive, f"agreement {agreement_id} is {a.status.value}")
    if c.now <= a.delivery_deadline:
        raise ContractError(SharingError.DeadlineNotPassed, f"deadline {a.delivery_deadline}, now {c.now}")
    a.status = AgreementStatus.Expired


def mint(s: ContractState, c: Call, to: str, amount: int) -> None:
    """The stand-in's payment token: the admin issues units to an address (for tests and the demo)."""
    c.require_auth(_initialized(s))
    _u64(amount, "amount", positive=True)
    s.balances[to] = _u64(s.balances.get(to, 0) + amount, "balance")


def balance(s: ContractState, c: Call, address: str) -> int:
    return s.balances.get(address, 0)


def get_agreement(s: ContractState, c: Call, agreement_id: int) -> Agreement:
    return _agreement(s, agreement_id)


def get_transaction(s: ContractState, c: Call, transaction_id: int) -> EnergyTransaction:
    return _transaction(s, transaction_id)


def get_transaction_history(s: ContractState, c: Call, prosumer: str) -> list[EnergyTransaction]:
    _registered(s, prosumer)
    return [t for t in sorted(s.transactions.values(), key=lambda t: t.transaction_id)
            if prosumer in (t.provider, t.consumer)]


FUNCTIONS: dict[str, Any] = {f.__name__: f for f in (
    initialize, register_prosumer, create_agreement, deliver_energy, settle_payment, raise_dispute, resolve_dispute,
    cancel_agreement, expire_agreement, mint, balance, get_agreement, get_transaction, get_transaction_history)}
READ_ONLY = frozenset({"balance", "get_agreement", "get_transaction", "get_transaction_history"})
