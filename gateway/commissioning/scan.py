"""Scanning a line for responding unit ids and telling models apart.

A unit id is *present* only when a device really answers: registers to the
probe or to an identity read, or a garbled frame (two devices talking at once).
Silence is absent, and so are Modbus TCP gateways' 0x0A/0x0B ("no path",
"target did not answer"): the gateway speaks, not a device. An id that answers
*every* read with an exception is not counted either: that is how stand-ins
behave (pymodbus' simulator says "device failure" for ids it does not host),
while a real meter answers its own identity registers.

A model is named only when the maker's identity registers single it out (ABB's
type text at 0x8960, Eastron's meter code at 0xFC02). Where the map cannot tell
models apart, the device is an "unknown model": a list of guesses is worse
than none, because the installer would pick one.

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

from gateway.acquisition.energy import profile_channels
from gateway.acquisition.modbus import ModbusBus
from gateway.acquisition.transport import FrameError
from gateway.channels import Channel
from gateway.errors import AcquisitionError, DeviceException, DeviceTimeout
from gateway.profiles import Profile, builtin_profiles, identity_matches

PROBE_FUNCTION, PROBE_ADDRESS = 3, 0
"""Holding register 0: answered (with a value or exception 2) by every meter we know."""
CONFIRM_READS = 3
GATEWAY_EXCEPTIONS = frozenset({0x0A, 0x0B})
"""Gateway path unavailable / gateway target device failed to respond: nobody is at that id."""
"""Reads per present id to catch collisions; a colliding pair garbles nearly every answer."""


@dataclass
class Found:
    unit: int
    models: list[str] = field(default_factory=list)
    """Profiles whose identity registers all match, at least one by an expected value (a fingerprint)."""
    family: list[str] = field(default_factory=list)
    """Profiles whose identity registers are merely readable: the family, not the model."""
    identity: dict[str, list[int]] = field(default_factory=dict)
    reads: dict[tuple[int, int, int], list[int]] = field(default_factory=dict)
    """(function, address, count) → registers of the identity reads that succeeded."""
    duplicate_suspected: bool = False
    notes: list[str] = field(default_factory=list)
    answered: bool = False
    """Some read got registers back: a device, not a stand-in's exception."""
    exception_codes: set[int] = field(default_factory=set)
    channels: tuple[Channel, ...] = ()
    """The energy channels a meter of the identified model has (import; export where its profile maps the
    register); empty while the model is unknown."""

    @property
    def model(self) -> str | None:
        """The one profile the identity registers single out, else None ("unknown model")."""
        return self.models[0] if len(self.models) == 1 else None


@dataclass
class ScanResult:
    found: list[Found]
    scanned: int
    exceptions_only: dict[int, set[int]] = field(default_factory=dict)
    """Ids that answered every read with a Modbus exception (codes): stand-ins, not counted as devices."""


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


async def _probe(bus: ModbusBus, unit: int) -> tuple[str | None, int | None]:
    """('registers' | 'exception' | 'garbled' | None for absent, the exception code if any)."""
    try:
        await bus.request(unit, PROBE_FUNCTION, PROBE_ADDRESS, 1)
    except DeviceTimeout:
        return None, None
    except FrameError:
        return "garbled", None
    except DeviceException as exc:
        return (None if exc.code in GATEWAY_EXCEPTIONS else "exception"), exc.code
    return "registers", None


async def identify(bus: ModbusBus, unit: int, profiles: Iterable[Profile]) -> Found:
    candidates = list(profiles)
    found = Found(unit)
    reads: dict[tuple[int, int, int], list[int] | None] = {}
    strong: list[str] = []
    weak: list[str] = []
    for profile in candidates:
        if not profile.identity:
            continue
        matched = True
        fingerprint = False
        family = False
        for ident in profile.identity:
            key = (ident.function, ident.address, ident.register_count)
            if key not in reads:
                try:
                    reads[key] = await bus.request(unit, *key)
                    found.answered = True
                except FrameError:
                    found.duplicate_suspected = True
                    found.notes.append(f"garbled answer reading {ident.address:#06x}")
                    reads[key] = None
                except DeviceException as exc:
                    found.exception_codes.add(exc.code)
                    reads[key] = None
                except AcquisitionError:
                    reads[key] = None
            regs = reads[key]
            if regs is None or not identity_matches(ident, regs):
                matched = False
                if ident.expect is None:
                    family = False
                    break
                continue
            found.identity[f"{ident.name}@{ident.address:#06x}"] = regs
            found.reads[key] = regs
            fingerprint = fingerprint or ident.expect is not None
            family = family or ident.expect is None
        if matched and fingerprint:
            strong.append(profile.id)
        elif family:  # its family's registers are there, but nothing (or something else) singles it out
            weak.append(profile.id)
    found.models = strong
    found.family = weak
    if len(strong) == 1:
        found.channels = profile_channels(next(p for p in candidates if p.id == strong[0]))
    if len(strong) > 1:
        found.notes.append("the identity registers fit several profiles; read the model off the label")
    elif not strong and weak:
        found.notes.append(f"a {_maker(candidates, weak)} meter, but its registers do not say which model: "
                           "read the model off the label")
    return found


def _maker(profiles: list[Profile], ids: list[str]) -> str:
    makers = sorted({p.manufacturer for p in profiles if p.id in ids})
    return "/".join(makers)


async def _answers_registers(bus: ModbusBus, unit: int, profiles: list[Profile], codes: set[int]) -> bool:
    """Whether the id returns registers for any profile's first quantity (meters without identity registers).

    Only asked of ids that answered the probe with an exception, which absent ids on a real RS-485
    line never do, so this costs time only where something does answer.
    """
    tried: set[tuple[int, int, int]] = set()
    for profile in profiles:
        q = min(profile.quantities.values(), key=lambda q: (q.function, q.address))
        key = (q.function, q.address, q.register_count)
        if key in tried:
            continue
        tried.add(key)
        try:
            await bus.request(unit, *key)
        except DeviceException as exc:
            codes.add(exc.code)
            continue
        except AcquisitionError:
            continue
        return True
    return False


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
    exceptions_only: dict[int, set[int]] = {}
    for i, unit in enumerate(id_list, 1):
        answer, code = await _probe(bus, unit)
        if answer is not None:
            entry = await identify(bus, unit, candidates)
            entry.answered = entry.answered or answer == "registers"
            if code is not None:
                entry.exception_codes.add(code)
            if answer == "exception" and not entry.answered and not entry.duplicate_suspected:
                entry.answered = await _answers_registers(bus, unit, candidates, entry.exception_codes)
            if answer == "exception" and not entry.answered and not entry.duplicate_suspected:
                exceptions_only[unit] = entry.exception_codes
                answer = None
            elif answer == "garbled":
                entry.duplicate_suspected = True
                entry.notes.append("garbled answer to the probe: two devices may share this id")
            else:
                await _confirm(bus, entry)
            if answer is not None:
                found.append(entry)
        if progress:
            progress(i, len(id_list), len(found))
        await asyncio.sleep(0)
    return ScanResult(found, len(id_list), exceptions_only)
