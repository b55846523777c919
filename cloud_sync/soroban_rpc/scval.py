"""SCVal in and out: the contract's argument types, and its return values as a contracttype would encode them.

A Soroban ``#[contracttype]`` struct is an ``SCMap`` with symbol keys in sorted order; a unit enum
variant is an ``SCVec`` holding one symbol; ``Option<u64>`` is ``Void`` or ``U64``; ``()`` is ``Void``.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from stellar_sdk import Address, scval, xdr

from cloud_sync.soroban_rpc.contract import Agreement, EnergyTransaction

ARG_TYPES: dict[str, tuple[str, ...]] = {
    "initialize": ("address", "address"),
    "register_prosumer": ("address",),
    "create_agreement": ("address", "address", "u64", "u64", "u64"),
    "deliver_energy": ("u64", "u64", "u64", "address"),
    "settle_payment": ("u64", "address"),
    "raise_dispute": ("u64", "address"),
    "resolve_dispute": ("u64", "address", "bool"),
    "cancel_agreement": ("u64", "address"),
    "expire_agreement": ("u64",),
    "mint": ("address", "u64"),
    "balance": ("address",),
    "get_agreement": ("u64",),
    "get_transaction": ("u64",),
    "get_transaction_history": ("address",),
}
_HIDDEN = {"delivered_kwh", "refunded"}


class BadArguments(ValueError):
    """The invocation's arguments do not match the function's types (the host would trap)."""


def decode_args(function: str, args: list[xdr.SCVal]) -> list[Any]:
    types = ARG_TYPES.get(function)
    if types is None:
        raise BadArguments(f"the contract has no function {function!r}")
    if len(args) != len(types):
        raise BadArguments(f"{function} takes {len(types)} arguments, got {len(args)}")
    out: list[Any] = []
    for i, (kind, val) in enumerate(zip(types, args, strict=True)):
        try:
            if kind == "address":
                out.append(scval.from_address(val).address)
            elif kind == "u64":
                out.append(scval.from_uint64(val))
            else:
                out.append(scval.from_bool(val))
        except ValueError:
            raise BadArguments(f"{function} argument {i + 1} must be {kind}, got {val.type.name}") from None
    return out


def encode(value: Any) -> xdr.SCVal:
    if value is None:
        return scval.to_void()
    if isinstance(value, bool):
        return scval.to_bool(value)
    if isinstance(value, int):
        return scval.to_uint64(value)
    if isinstance(value, list):
        return scval.to_vec([encode(v) for v in value])
    if isinstance(value, Agreement | EnergyTransaction):
        return _struct(value)
    raise TypeError(f"no SCVal encoding for {type(value).__name__}")


def _struct(obj: Agreement | EnergyTransaction) -> xdr.SCVal:
    entries: dict[xdr.SCVal, xdr.SCVal] = {}
    for f in sorted(fields(obj), key=lambda f: f.name):
        if f.name in _HIDDEN:
            continue
        v = getattr(obj, f.name)
        if f.name in ("provider", "consumer"):
            sv = scval.to_address(Address(v))
        elif f.name == "status":
            sv = scval.to_vec([scval.to_symbol(v.value)])
        elif f.name == "settled_at":
            sv = scval.to_void() if v is None else scval.to_uint64(v)
        else:
            sv = scval.to_uint64(v)
        entries[scval.to_symbol(f.name)] = sv
    return scval.to_map(entries)


def decode_struct(val: xdr.SCVal) -> dict[str, Any]:
    """A contracttype struct back to a dict (for tests and the CLI's output)."""
    out: dict[str, Any] = {}
    for k, v in scval.from_map(val).items():
        name = scval.from_symbol(k)
        if v.type == xdr.SCValType.SCV_ADDRESS:
            out[name] = scval.from_address(v).address
        elif v.type == xdr.SCValType.SCV_VEC:
            out[name] = scval.from_symbol(scval.from_vec(v)[0])
        elif v.type == xdr.SCValType.SCV_VOID:
            out[name] = None
        else:
            out[name] = scval.from_uint64(v)
    return out
