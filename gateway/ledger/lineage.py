"""Which credit chains this data dir has started, so that a key without its ledger starts none silently.

Every meter's credits form a chain (seq 1, 2, 3 ... each linking the previous hash) that the
billing system continues from its last accepted credit. The chains live in the ledger; the key
that signs them lives beside it. If the ledger is lost or moved aside (as the advice for a
damaged file says) while the key stays, a new ledger would restart every meter at seq 1: the
billing system answers ``replay`` for each, and the uplink is blocked for good, with no warning.

So when a ledger is created, :data:`LINEAGE_FILE` records the gateway id and key it was created
for. A start that finds the record but no ledger refuses (:class:`~gateway.errors.LedgerMissing`)
and says how to go on: continue the chains from the billing system's tips
(``meter-gateway recover-chains``, :mod:`gateway.ledger.recovery`) or enrol a new key
(``meter-gateway identity --new-key``, which moves the key and this record aside).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import LedgerMissing

DB_FILE = "ledger.db"
LINEAGE_FILE = "ledger.lineage"

RECOVERY_ADVICE = (
    "continue the meters' chains from the billing system's last accepted credits: "
    "'meter-gateway recover-chains --config FILE'; or enrol a new key: 'meter-gateway identity --new-key "
    "--config FILE', then register the new key at the billing system under a new gateway_id. "
    "If you still have the old ledger, put it back instead. See README, 'Lost or damaged ledger'"
)


@dataclass(frozen=True, slots=True)
class Lineage:
    gateway_id: str
    gateway_key: str


def has_ledger(path: Path) -> bool:
    """Whether ``path`` holds a ledger at all (SQLite treats an empty file as a new database)."""
    try:
        return path.stat().st_size > 0
    except FileNotFoundError:
        return False


def read(data_dir: Path) -> Lineage | None:
    path = data_dir / LINEAGE_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return Lineage(str(doc["gateway_id"]), str(doc["gateway_key"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        # Unreadable or garbled: chains may exist; refusing is the safe side, and the message says why.
        return Lineage("?", "?")


def record(data_dir: Path, lineage: Lineage) -> None:
    """Write the record durably (a power cut right after the first credit must not lose it)."""
    path = data_dir / LINEAGE_FILE
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({"gateway_id": lineage.gateway_id, "gateway_key": lineage.gateway_key}, fh)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(data_dir, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def refuse_new_chains(data_dir: Path, gateway_id: str) -> None:
    """Called before a new ledger is created: refuse if this key's chains were started here before."""
    found = read(data_dir)
    if found is None:
        return
    # The billing system keeps each meter's chain under the gateway id, whatever key signed it: a new
    # id starts new chains there, the same id (even with another key) continues the old ones.
    if found.gateway_id in (gateway_id, "?"):
        raise LedgerMissing(
            f"the ledger {data_dir / DB_FILE} is missing, but gateway {gateway_id!r} has already issued "
            f"credits from a ledger here ({data_dir / LINEAGE_FILE}, key {found.gateway_key}): a new ledger would "
            "restart every meter at seq 1 and the billing system would refuse them as replays. To go on, "
            + RECOVERY_ADVICE)


def move_aside(data_dir: Path) -> Path | None:
    """Move the record aside (a new key starts new chains); returns where it went."""
    path = data_dir / LINEAGE_FILE
    if not path.exists():
        return None
    target = aside_name(path)
    os.replace(path, target)
    return target


def aside_name(path: Path) -> Path:
    """``NAME.replaced-N`` with the first N not taken: nothing moved aside is ever overwritten."""
    n = 1
    while (candidate := path.with_name(f"{path.name}.replaced-{n}")).exists():
        n += 1
    return candidate


def remove_stale_tmp(data_dir: Path) -> None:
    with contextlib.suppress(OSError):
        (data_dir / (LINEAGE_FILE + ".tmp")).unlink()
