"""The receiver's schema migrations: versioned SQL files shipped as package data.

``cloud_sync/migrations/sqlite/000N_name.sql`` and ``cloud_sync/migrations/pg/000N_name.sql``,
numbered from 1 without gaps. Each store applies the files above its recorded version, each in
one transaction with the new version number (SQLite: ``PRAGMA user_version``; PostgreSQL: the
``receiver_schema`` table, under an advisory lock so that receivers starting together migrate once).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations(dialect: str) -> list[Migration]:
    """The migrations of ``dialect`` (``sqlite`` or ``pg``) in order; a gap in the numbers is a packaging bug."""
    folder = resources.files("cloud_sync").joinpath("migrations", dialect)
    found = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"receiver migrations for {dialect} are not numbered 1..N: "
                           f"{[m.version for m in found]}; reinstall the package")
    return found


def newest(dialect: str) -> int:
    return len(migrations(dialect))
