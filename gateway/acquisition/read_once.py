"""Decoding a profile's quantities once (one-off reads from the local API and ``meter-gateway read``).

Through the bus's one-off queue, on the read plan the poller would use. Every quantity ends up either
in the values or in the problems with the reason: a block that failed, a value that did not decode.
A unit without the export register its profile maps (exception 2, some EM24 variants) loses only that
value: the rest of its block is asked again without it, so the import register still reads.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from gateway.acquisition.read_plan import WireCost, plan_reads, split_block
from gateway.acquisition.transport import PortUnavailable
from gateway.errors import AcquisitionError, DeviceException, DeviceTimeout, ValueRejected
from gateway.profiles import Profile, Quantity, decode

ENERGY_EXPORT = "energy_export"
ILLEGAL_DATA_ADDRESS = 2

Request = Callable[[int, int, int], Awaitable[list[int]]]
"""(function, start, count) → registers, through the bus scheduler."""


async def read_once(request: Request, profile: Profile, wanted: Sequence[Quantity],
                    cost: WireCost, avoid: Sequence[Quantity] = ()) -> tuple[dict[str, float], dict[str, str]]:
    """(values, problems) of one read of ``wanted``, no block covering an ``avoid`` quantity's registers."""
    values: dict[str, float] = {}
    problems: dict[str, str] = {}
    plan = plan_reads(wanted, max_registers=profile.max_registers_per_read,
                      even_only=profile.registers_even_only, cost=cost, avoid=avoid)
    by_name = {q.name: q for q in wanted}
    for i, block in enumerate(plan.blocks):
        try:
            registers = await request(block.function, block.start, block.count)
            chunks = split_block(block, registers)
        except AcquisitionError as exc:
            if (isinstance(exc, DeviceException) and exc.code == ILLEGAL_DATA_ADDRESS
                    and ENERGY_EXPORT in block.quantities and len(block.quantities) > 1):
                # Is it the export register? Asked alone once: refused too, the rest is read around it.
                export = by_name[ENERGY_EXPORT]
                alone, alone_problems = await read_once(request, profile, [export], cost, avoid)
                values.update(alone)
                rest = [by_name[n] for n in block.quantities if n != ENERGY_EXPORT]
                if ENERGY_EXPORT not in alone_problems:  # it answers: the fault lies elsewhere in the block
                    problems.update({q.name: str(exc) for q in rest})
                    continue
                problems[ENERGY_EXPORT] = f"{alone_problems[ENERGY_EXPORT]}: this unit has no export register?"
                again, again_problems = await read_once(request, profile, rest, cost, [*avoid, export])
                values.update(again)
                problems.update(again_problems)
                continue
            problems.update({name: str(exc) for name in block.quantities})
            if isinstance(exc, PortUnavailable | DeviceTimeout):
                # The rest would wait out the same timeout; say so for each of them.
                for later in plan.blocks[i + 1:]:
                    problems.update(dict.fromkeys(later.quantities, f"not tried: {exc}"))
                break
            continue
        for name, chunk in chunks.items():
            try:
                values[name] = decode(by_name[name], chunk)
            except ValueRejected as exc:
                problems[name] = f"{exc.reason}: {exc}"
    return values, problems
