"""Choosing which register blocks to request so a polling cycle takes least wire time.

On RS-485 at 9600 baud every request costs ~21 ms of fixed overhead (8-byte
request, 5-byte response frame, two 3.5-character silences) while each extra
register costs ~2 ms. Reading a gap between two values is therefore cheaper
than a second request up to a point, and that point depends on baud rate,
framing and device turnaround. Since a block's cost depends only on its span,
the exact optimum is a shortest-path/DP over address-sorted quantities, one
function code at a time (a request can only carry one function code).

Pure: no I/O, no clock. The acquisition loop builds the plan once per meter.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gateway.errors import ValueRejected
from gateway.profiles import Profile, Quantity, SerialDefaults

MAX_PDU_REGISTERS = 125
_LAST_ADDRESS = 0xFFFF


@dataclass(frozen=True)
class WireCost:
    """Modbus RTU timing model (Modbus over Serial Line v1.02, §2.5.1.1).

    `turnaround_s` is the device's think time between request and response;
    vendors quote 10-15 ms and it changes which plan is optimal (a larger
    turnaround favours fewer, longer requests).
    """

    bits_per_char: int = 10
    baud: int = 9600
    turnaround_s: float = 0.0

    def __post_init__(self) -> None:
        if self.bits_per_char <= 0 or self.baud <= 0 or self.turnaround_s < 0:
            raise ValueError(f"invalid wire parameters: {self!r}")

    @classmethod
    def from_serial(cls, serial: SerialDefaults, turnaround_s: float = 0.0) -> WireCost:
        return cls(bits_per_char=serial.bits_per_char, baud=serial.baud, turnaround_s=turnaround_s)

    @classmethod
    def for_line(cls, framing: str, baud: int, turnaround_s: float = 0.0) -> WireCost:
        """A line's cost from its configured framing ("8N1", "8E1", ...): a parity or second stop bit is an 11th bit."""
        bits = 11 if framing in ("8E1", "8O1", "8N2") else 10
        return cls(bits_per_char=bits, baud=baud, turnaround_s=turnaround_s)

    def char_time(self) -> float:
        return self.bits_per_char / self.baud

    def t35(self) -> float:
        # The spec fixes the gap at 1.75 ms above 19200 baud so fast links
        # do not need sub-millisecond timers.
        return 3.5 * self.char_time() if self.baud <= 19200 else 0.00175

    def transaction_time(self, n_registers: int) -> float:
        """8-byte request + (5 + 2n)-byte response, each followed by a t3.5 gap."""
        return (13 + 2 * n_registers) * self.char_time() + 2 * self.t35() + self.turnaround_s


@dataclass(frozen=True)
class ReadBlock:
    """One request: `count` registers from `start` with one function code.

    `spans[i]` is (offset into the response, register count) of `quantities[i]`,
    so the response can be cut up without the profile at hand.
    """

    function: int
    start: int
    count: int
    quantities: tuple[str, ...]
    spans: tuple[tuple[int, int], ...]

    @property
    def end(self) -> int:
        return self.start + self.count


@dataclass(frozen=True)
class ReadPlan:
    blocks: tuple[ReadBlock, ...]

    def total_time(self, cost: WireCost) -> float:
        """Minimum bus time for one polling cycle of this meter."""
        return sum(cost.transaction_time(b.count) for b in self.blocks)

    @property
    def register_count(self) -> int:
        return sum(b.count for b in self.blocks)


def split_block(block: ReadBlock, registers: Sequence[int]) -> dict[str, list[int]]:
    """Cut a block's response into each quantity's registers, ready for `decode`.

    A short or long response would shift every value after the fault, so it is
    rejected as a whole rather than decoded into plausible-looking garbage.
    """
    if len(registers) != block.count:
        raise ValueRejected(
            f"FC{block.function:02d} {block.start:#06x}: expected {block.count} registers,"
            f" got {len(registers)}",
            reason="length",
        )
    return {
        name: list(registers[offset : offset + width])
        for name, (offset, width) in zip(block.quantities, block.spans, strict=True)
    }


def _make_block(run: Sequence[Quantity], even_only: bool) -> ReadBlock:
    start = run[0].address
    end = max(q.end for q in run)
    count = end - start
    if even_only and count % 2:
        # Pad with the register after the span: on the meters that need even
        # counts (Eastron), every value is a 2-register float so spans are
        # already even and this never triggers on a built-in profile. At the
        # top of the address space, pad before the span instead.
        count += 1
        if start + count > _LAST_ADDRESS + 1:
            start -= 1
    return ReadBlock(
        function=run[0].function,
        start=start,
        count=count,
        quantities=tuple(q.name for q in run),
        spans=tuple((q.address - start, q.register_count) for q in run),
    )


def _block_count(start: int, end: int, even_only: bool) -> int:
    count = end - start
    return count + (count % 2) if even_only else count


def _optimal_runs(
    qs: Sequence[Quantity], max_registers: int, even_only: bool, cost: WireCost,
    holes: Sequence[tuple[int, int]] = (),
) -> list[Sequence[Quantity]]:
    """Best partition of address-sorted quantities into contiguous runs (O(n²) DP).

    Restricting blocks to contiguous runs loses nothing: a quantity lying inside
    a block's span is read for free, and two blocks whose spans interleave can
    always be uncrossed without lengthening either. No run's span may cover a
    hole (start, end): a register the device refuses to be read at all.
    """
    n = len(qs)
    best = [0.0] + [float("inf")] * n
    choice = [0] * (n + 1)
    for i in range(n):
        if best[i] == float("inf"):
            continue
        end = 0
        for j in range(i, n):
            end = max(end, qs[j].end)
            count = _block_count(qs[i].address, end, even_only)
            if count > max_registers or any(lo < qs[i].address + count and qs[i].address < hi for lo, hi in holes):
                break  # spans only grow with j
            total = best[i] + cost.transaction_time(count)
            if total < best[j + 1]:
                best[j + 1] = total
                choice[j + 1] = i
    runs: list[Sequence[Quantity]] = []
    j = n
    while j > 0:
        i = choice[j]
        runs.append(qs[i:j])
        j = i
    return runs[::-1]


def _validate(quantities: Sequence[Quantity], max_registers: int, even_only: bool) -> None:
    if not 1 <= max_registers <= MAX_PDU_REGISTERS:
        raise ValueError(f"max_registers must be 1..{MAX_PDU_REGISTERS}, got {max_registers}")
    names = [q.name for q in quantities]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate quantity names in {names}")
    for q in quantities:
        if _block_count(q.address, q.end, even_only) > max_registers:
            raise ValueError(f"{q.name} needs more registers than max_registers={max_registers} allows")


def _by_function(quantities: Iterable[Quantity]) -> dict[int, list[Quantity]]:
    groups: dict[int, list[Quantity]] = {}
    for q in sorted(quantities, key=lambda q: (q.function, q.address, q.end, q.name)):
        groups.setdefault(q.function, []).append(q)
    return groups


def plan_reads(
    quantities: Sequence[Quantity], *, max_registers: int, even_only: bool = False, cost: WireCost,
    avoid: Iterable[Quantity] = (),
) -> ReadPlan:
    """The read plan with the least total transaction time for these quantities.

    Blocks never mix function codes, never split a value, never exceed
    `max_registers`, and with `even_only` always have an even count (possibly
    reading one register past the last value, see `_make_block`). No block
    covers the registers of an ``avoid`` quantity: one the device turned out
    to refuse (exception 2 for an export register a variant lacks), which would
    fail every block reading across it.
    """
    _validate(quantities, max_registers, even_only)
    holes: dict[int, list[tuple[int, int]]] = {}
    for q in avoid:
        holes.setdefault(q.function, []).append((q.address, q.end))
    blocks: list[ReadBlock] = []
    for function, qs in _by_function(quantities).items():
        runs = _optimal_runs(qs, max_registers, even_only, cost, holes.get(function, ()))
        blocks.extend(_make_block(run, even_only) for run in runs)
    return ReadPlan(tuple(blocks))


def naive_plan(quantities: Sequence[Quantity], *, even_only: bool = False) -> ReadPlan:
    """One request per quantity: the baseline most simple gateways use."""
    groups = _by_function(quantities).values()
    return ReadPlan(tuple(_make_block([q], even_only) for qs in groups for q in qs))


def plan_profile(profile: Profile, cost: WireCost, names: Iterable[str] | None = None) -> ReadPlan:
    """Optimal plan for some (default: all) of a profile's quantities under its read limits."""
    wanted = list(profile.quantities.values()) if names is None else [profile.quantities[n] for n in names]
    return plan_reads(
        wanted, max_registers=profile.max_registers_per_read, even_only=profile.registers_even_only, cost=cost
    )
