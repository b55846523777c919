"""The seed-001 contract's state machine without XDR or HTTP: statuses, errors, disputes, expiry, the token."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_sync.soroban_rpc.contract import Call, ContractError, ContractState, EnergySharing, SharingError

ADMIN, A, B, C = "GADMIN", "GPROVIDER", "GCONSUMER", "GSTRANGER"
EVERYONE = frozenset({ADMIN, A, B, C})


def contract(now: int = 1000) -> EnergySharing:
    k = EnergySharing()
    k.invoke("initialize", [ADMIN, "CTOKEN"], Call(now, EVERYONE))
    k.invoke("register_prosumer", [A], Call(now, EVERYONE))
    k.invoke("register_prosumer", [B], Call(now, EVERYONE))
    return k


def err(k: EnergySharing, fn: str, args: list[object], now: int = 1000,
        auth: frozenset[str] = EVERYONE) -> SharingError:
    before = k.state.to_json()
    with pytest.raises(ContractError) as info:
        k.invoke(fn, args, Call(now, auth))
    assert k.state.to_json() == before, "a failed call changed the state"
    return info.value.code


def test_errors_by_name() -> None:
    k = EnergySharing()
    assert err(k, "register_prosumer", [A]) is SharingError.NotInitialized
    k = contract()
    assert err(k, "initialize", [ADMIN, "CTOKEN"]) is SharingError.AlreadyInitialized
    assert err(k, "create_agreement", [A, A, 5, 1, 2000]) is SharingError.SelfSharingNotAllowed
    assert err(k, "create_agreement", [C, B, 5, 1, 2000]) is SharingError.ProsumerNotRegistered
    assert err(k, "create_agreement", [A, B, 0, 1, 2000]) is SharingError.InvalidAmount
    assert err(k, "create_agreement", [A, B, 5, 1, 1000]) is SharingError.InvalidDeadline
    assert err(k, "create_agreement", [A, B, 5, 1, 2000], auth=frozenset({B})) is SharingError.AuthMissing
    assert err(k, "get_agreement", [9]) is SharingError.AgreementNotFound
    aid = k.invoke("create_agreement", [A, B, 5, 3, 2000], Call(1000, EVERYONE))
    assert err(k, "deliver_energy", [aid, 6, 1, A]) is SharingError.ExcessiveDelivery
    assert err(k, "deliver_energy", [aid, 1, 1, A], now=2001) is SharingError.DeliveryDeadlinePassed
    assert err(k, "expire_agreement", [aid]) is SharingError.DeadlineNotPassed
    tx = k.invoke("deliver_energy", [aid, 5, 77, A], Call(1500, EVERYONE))
    assert err(k, "settle_payment", [tx, B]) is SharingError.PaymentFailed
    assert err(k, "settle_payment", [tx, C]) is SharingError.NotAuthorized
    k.invoke("mint", [B, 15], Call(1500, EVERYONE))
    k.invoke("settle_payment", [tx, B], Call(1600, EVERYONE))
    assert err(k, "settle_payment", [tx, B]) is SharingError.TransactionAlreadySettled
    assert k.state.agreements[aid].status.value == "Settled"
    assert k.state.transactions[tx].settled_at == 1600


def test_dispute_upheld_frees_the_quantity_and_is_never_paid() -> None:
    k = contract()
    k.invoke("mint", [B, 100], Call(1000, EVERYONE))
    aid = k.invoke("create_agreement", [A, B, 4, 10, 5000], Call(1000, EVERYONE))
    tx = k.invoke("deliver_energy", [aid, 4, 1, A], Call(1100, EVERYONE))
    assert k.state.agreements[aid].status.value == "Delivered"
    k.invoke("raise_dispute", [tx, B], Call(1200, EVERYONE))
    assert k.state.transactions[tx].status.value == "Disputed"
    assert err(k, "settle_payment", [tx, A]) is SharingError.TransactionDisputed
    assert err(k, "resolve_dispute", [tx, A, True]) is SharingError.NotAuthorized
    k.invoke("resolve_dispute", [tx, ADMIN, True], Call(1300, EVERYONE))
    assert k.state.agreements[aid].status.value == "Active"
    assert err(k, "resolve_dispute", [tx, ADMIN, False]) is SharingError.NotDisputed
    tx2 = k.invoke("deliver_energy", [aid, 4, 2, A], Call(1400, EVERYONE))
    k.invoke("settle_payment", [tx2, B], Call(1500, EVERYONE))
    assert k.state.agreements[aid].status.value == "Settled"
    assert k.state.balances == {A: 40, B: 60}


def test_dispute_rejected_returns_to_delivered_and_settles() -> None:
    k = contract()
    k.invoke("mint", [B, 10], Call(1000, EVERYONE))
    aid = k.invoke("create_agreement", [A, B, 2, 5, 5000], Call(1000, EVERYONE))
    tx = k.invoke("deliver_energy", [aid, 2, 1, A], Call(1100, EVERYONE))
    k.invoke("raise_dispute", [tx, A], Call(1200, EVERYONE))
    k.invoke("resolve_dispute", [tx, ADMIN, False], Call(1300, EVERYONE))
    k.invoke("settle_payment", [tx, A], Call(1400, EVERYONE))
    assert k.state.agreements[aid].status.value == "Settled"


def test_cancel_and_expire() -> None:
    k = contract()
    a1 = k.invoke("create_agreement", [A, B, 2, 5, 5000], Call(1000, EVERYONE))
    k.invoke("cancel_agreement", [a1, B], Call(1100, EVERYONE))
    assert k.state.agreements[a1].status.value == "Cancelled"
    assert err(k, "deliver_energy", [a1, 1, 1, A]) is SharingError.AgreementNotActive
    a2 = k.invoke("create_agreement", [A, B, 2, 5, 5000], Call(1000, EVERYONE))
    k.invoke("expire_agreement", [a2], Call(5001, frozenset()))
    assert k.state.agreements[a2].status.value == "Expired"


def test_state_survives_json() -> None:
    k = contract()
    aid = k.invoke("create_agreement", [A, B, 3, 5, 5000], Call(1000, EVERYONE))
    k.invoke("deliver_energy", [aid, 1, 9, A], Call(1100, EVERYONE))
    assert ContractState.from_json(k.state.to_json()) == k.state


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 50), st.lists(st.integers(1, 20), max_size=12))
def test_delivered_never_exceeds_agreed(agreed: int, deliveries: list[int]) -> None:
    k = contract()
    aid = k.invoke("create_agreement", [A, B, agreed, 2, 9000], Call(1000, EVERYONE))
    accepted = 0
    refusals: set[SharingError] = set()
    for kwh in deliveries:
        try:
            k.invoke("deliver_energy", [aid, kwh, 0, A], Call(1100, EVERYONE))
            accepted += kwh
        except ContractError as exc:
            refusals.add(exc.code)
    assert refusals <= {SharingError.ExcessiveDelivery, SharingError.AgreementNotActive}
    assert accepted == k.state.agreements[aid].delivered_kwh <= agreed
    assert sum(t.energy_delivered_kwh for t in k.state.transactions.values()) == accepted
    assert (k.state.agreements[aid].status.value == "Delivered") == (accepted == agreed)
