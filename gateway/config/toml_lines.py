"""Find the line of a TOML file that a validation error points at.

``tomllib`` gives values but not positions. Installers need "line 23", so this
module scans the text once and maps each key path (as pydantic reports it:
``("buses", 0, "meters", 2, "profile")``) to the line where it was written.
It understands the TOML an installer writes by hand: ``[table]``,
``[[array.of.tables]]``, ``key = value`` and dotted keys. Anything it cannot
place falls back to the nearest enclosing table header, which is still where
the installer should look.
"""

from __future__ import annotations

import re

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-\.\"' ]+?)\s*=")

Path = tuple[str | int, ...]


def _split_key(raw: str) -> list[str]:
    return [part.strip().strip('"').strip("'") for part in raw.split(".")]


def key_lines(text: str) -> dict[Path, int]:
    """Map every table and key path in ``text`` to its 1-based line number."""
    lines: dict[Path, int] = {}
    counts: dict[Path, int] = {}
    current: Path = ()
    in_multiline: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if in_multiline is not None:
            if in_multiline in line:
                in_multiline = None
            continue
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        header = _HEADER.match(line)
        if header and not _KEY.match(line):
            names = _split_key(header.group(2))
            # Resolve the array indices of parent tables that are arrays of tables.
            path: list[str | int] = []
            for name in names:
                path.append(name)
                idx = counts.get(tuple(path))
                if idx is not None and len(path) < len(names):
                    path.append(idx)
            base = tuple(path)
            if header.group(1) == "[[":
                index = counts.get(base, -1) + 1
                counts[base] = index
                current = (*base, index)
                lines.setdefault(base, number)
            else:
                current = base
            lines[current] = number
            continue
        key = _KEY.match(line)
        if key:
            full = (*current, *_split_key(key.group(1)))
            lines.setdefault(full, number)
            value = line[key.end() :].strip()
            for quote in ('"""', "'''"):
                if value.startswith(quote) and value.count(quote) == 1:
                    in_multiline = quote
    return lines


def line_for(lines: dict[Path, int], path: Path) -> int | None:
    """The line of ``path``, or of its nearest ancestor that has one."""
    probe = tuple(path)
    while probe:
        if probe in lines:
            return lines[probe]
        probe = probe[:-1]
    return None
