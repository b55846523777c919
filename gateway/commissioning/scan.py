"""Scanning a line for responding unit ids and telling models apart.

A unit id is *present* when anything comes back: registers, an exception (a
meter saying "no such register" is still a meter), or even a garbled frame.
Modbus TCP gateways answer 0x0A/0x0B for absent serial devices; those count as
absent. Only silence means nobody is there.

*Duplicate ids* are the classic commissioning fault (many models ship as id
1). Two devices answering one request talk over each other, so the master sees
CRC errors or garbage instead of a clean answer, or answers that change from
one read to the next (two serial numbers). Each present id is therefore read
several times; any garbling or inconsistency flags it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from gateway.acquisition.modbus import ModbusBus
from gateway.acquisition.transport import FrameError
from gateway.errors import AcquisitionError, DeviceException, DeviceTimeout
from gateway.profiles import Profile, builtin_profiles, identity_matches

PROBE_FUNCTION, PROBE_ADDRESS = 3, 0
"""Holding register 0: answered (with a value or exception 2) by every meter we know."""
CONFIRM_READS = 3
"""Reads per present id to catch collisions; a colliding pair garbles nearly every answer."""


@dataclass
class Found:
    unit: int
    models: list[str] = field(default_factory=list)
    """Profiles whose identity registers match: a fingerprint match first, then family matches."""
    identity: dict[str, list[int]] = field(default_factory=dict)
    reads: dict[tuple[int, int, int], list[int]] = field(default_factory=dict)
    """(function, address, count) → registers of the identity reads that succeeded."""
    duplicate_suspected: bool = False
    notes: list[str] = field(default_factory=list)


@dataclass
class ScanResult:
    found: list[Found]
    scanned: int


def parse_ids(text: str) -> list[int]:
    """ "1-10,17,20-22" → ids; every id must be 1..247 (0 is broadcast, 248+ reserved)."""
    ids: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        try:
            first, last = int(lo), int(hi or lo)
        except ValueError:
            raise ValueError(f"bad id range {part!r}; use e.g. 1-247 or 1,2,5-9") from None
        if not 1 <= first <= last <= 247:
            raise ValueError(f"id range {part!r} must lie within 1-247")
        ids.extend(range(first, last + 1))
    return sorted(set(ids))


async def _probe(bus: ModbusBus, unit: int) -> str | None:
    """'ok', 'garbled' or None (silent)."""
    try:
        await bus.request(unit, PROBE_FUNCTION, PROBE_ADDRESS, 1)
    except DeviceTimeout:
        return None
    except FrameError:
        return "garbled"
    except DeviceException:
        return "ok"
    return "ok"


async def identify(bus: ModbusBus, unit: int, profiles: Iterable[Profile]) -> Found:
    found = Found(unit)
    reads: dict[tuple[int, int, int], list[int] | None] = {}
    strong: list[str] = []
    weak: list[str] = []
    for profile in profiles:
        if not profile.identity:
            continue
        matched = True
        fingerprint = False
        for ident in profile.identity:
            key = (ident.function, ident.address, ident.register_count)
            if key not in reads:
                try:
                    reads[key] = await bus.request(unit, *key)
                except FrameError:
                    found.duplicate_suspected = True
                    found.notes.append(f"garbled answer reading {ident.address:#06x}")
                    reads[key] = None
                except AcquisitionError:
                    reads[key] = None
            regs = reads[key]
            if regs is None or not identity_matches(ident, regs):
                matched = False
                break
            found.identity[f"{ident.name}@{ident.address:#06x}"] = regs
            found.reads[key] = regs
            fingerprint = fingerprint or ident.expect is not None
        if matched:
            (strong if fingerprint else weak).append(profile.id)
    found.models = strong + weak
    return found


async def _confirm(bus: ModbusBus, found: Found) -> None:
    """Re-read what identified the device; a second device with the same id shows up as change or garbage."""
    keys = list(found.reads) or [(PROBE_FUNCTION, PROBE_ADDRESS, 1)]
    seen: dict[tuple[int, int, int], list[int]] = {}
    for _ in range(CONFIRM_READS):
        for key in keys:
            try:
                regs = await bus.request(found.unit, *key)
            except FrameError:
                found.duplicate_suspected = True
                found.notes.append("garbled answers: two devices may share this id")
                return
            except AcquisitionError:
                continue
            if key in seen and seen[key] != regs:
                found.duplicate_suspected = True
                found.notes.append(f"register {key[1]:#06x} changes between reads: two devices may share this id")
                return
            seen[key] = regs


async def scan(bus: ModbusBus, ids: Iterable[int], *, profiles: Iterable[Profile] | None = None,
               progress: Callable[[int, int, int], None] | None = None) -> ScanResult:
    """Probe each id through the (running) bus scheduler; identify and check what answers."""
    candidates = list(profiles) if profiles is not None else builtin_profiles()
    id_list = list(ids)
    found: list[Found] = []
    for i, unit in enumerate(id_list, 1):
        answer = await _probe(bus, unit)
        if answer is not None:
            entry = await identify(bus, unit, candidates)
            if answer == "garbled":
                entry.duplicate_suspected = True
                entry.notes.append("garbled answer to the probe: two devices may share this id")
            else:
                await _confirm(bus, entry)
            found.append(entry)
        if progress:
            progress(i, len(id_list), len(found))
        await asyncio.sleep(0)
    return ScanResult(found, len(id_list))
