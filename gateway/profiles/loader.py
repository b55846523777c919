"""Finding and parsing profile files.

Profiles ship as package data (one TOML per model) so an installed wheel is
self-contained; installers can also point a device at their own file when a
meter is not built in. Errors name the file, the field path and the reason,
because the person reading them is editing that file.
"""

from __future__ import annotations

import tomllib
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from gateway.errors import ProfileError
from gateway.profiles.models import PROFILE_ID_RE, Profile
from gateway.schema import ValidationError

_PACKAGE = "firmware_profiles"


def _format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _describe(source: str, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors(include_url=False):
        msg = err["msg"].removeprefix("Value error, ")
        where = _format_loc(err["loc"])
        if err["type"] in {"missing", "extra_forbidden"}:
            lines.append(f"  {where}: {msg}")
        else:
            lines.append(f"  {where}: {msg} (got {err['input']!r})")
    return f"invalid firmware profile {source}:\n" + "\n".join(lines)


def _parse(source: str, raw: bytes) -> Profile:
    try:
        data: dict[str, Any] = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ProfileError(f"firmware profile {source} is not UTF-8 text: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"firmware profile {source} is not valid TOML: {exc}") from exc
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        raise ProfileError(_describe(source, exc)) from exc


def load_profile_file(path: str | Path) -> Profile:
    """Load and validate a user-supplied profile; any problem is a ProfileError."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ProfileError(f"cannot read firmware profile {p}: {exc.strerror or exc}") from exc
    return _parse(str(p), raw)


def _builtin_files() -> dict[str, Traversable]:
    root = resources.files(_PACKAGE)
    return {
        entry.name.removesuffix(".toml"): entry
        for entry in root.iterdir()
        if entry.name.endswith(".toml") and entry.is_file()
    }


@cache
def _builtin(profile_id: str) -> Profile:
    files = _builtin_files()
    entry = files.get(profile_id)
    if entry is None:
        known = ", ".join(sorted(files)) or "(none installed)"
        raise ProfileError(f"unknown firmware profile {profile_id!r}; built-in profiles: {known}")
    profile = _parse(f"{_PACKAGE}/{entry.name}", entry.read_bytes())
    if profile.id != profile_id:
        # The file name is the lookup key; a mismatch would make two ids resolve to one map.
        raise ProfileError(f"firmware profile {_PACKAGE}/{entry.name} declares id {profile.id!r}")
    return profile


def builtin_profile(profile_id: str) -> Profile:
    """A profile shipped with the gateway, by id (e.g. "eastron-sdm630")."""
    if not PROFILE_ID_RE.match(profile_id):
        # Also keeps "../x" from ever being treated as a resource name.
        known = ", ".join(sorted(_builtin_files()))
        raise ProfileError(f"unknown firmware profile {profile_id!r}; built-in profiles: {known}")
    return _builtin(profile_id)


def builtin_profiles() -> list[Profile]:
    """Every shipped profile, sorted by id; fails loudly if any of them is broken."""
    return [_builtin(pid) for pid in sorted(_builtin_files())]


def resolve_profile(ref: str, base_dir: Path | None = None) -> Profile:
    """Resolve a config file's `profile = ...`: a built-in id or a path to a .toml file.

    Anything ending in .toml or containing a path separator is a path, taken
    relative to `base_dir` (normally the config file's directory) so a config
    keeps working whatever the daemon's working directory is.
    """
    if ref.endswith(".toml") or "/" in ref or "\\" in ref:
        path = Path(ref).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        return load_profile_file(path)
    return builtin_profile(ref)
