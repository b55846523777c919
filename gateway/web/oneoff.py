"""``GET /api/v1/buses/{bus}/read?unit=N&profile=P``: a one-off read through the line's scheduler.

``profile`` names a built-in profile, the id of a profile a meter on that bus already uses, or a
``.toml`` file under ``[web] profiles_dir``, and nothing else: the API must not become a way to make
the daemon read arbitrary files (``/dev/zero`` would fill the memory; a key file's content would come
back in the error). A file is opened without following a final symlink, must resolve inside the
directory, be a regular file and at most :data:`MAX_PROFILE_BYTES`; errors say what is wrong
without repeating anything from the file (``meter-gateway check-config`` shows the details to the
installer).

The line decides how much it gives to one-off reads (see ``gateway.acquisition.one_off``); when it
has enough in progress the answer is 429 with ``Retry-After``, at once.
"""

from __future__ import annotations

import asyncio
import math
import os
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.acquisition.modbus import MAX_UNIT_ID
from gateway.acquisition.one_off import BusBusy
from gateway.errors import AcquisitionError, ConfigError, ProfileError
from gateway.profiles import Profile, builtin_profile
from gateway.schema import ValidationError
from gateway.web.auth import denied
from gateway.web.params import BadParam, int_param, str_param

if TYPE_CHECKING:  # gateway.web.app mounts this route; importing it at run time would be circular
    from gateway.web.app import WebContext

ONE_OFF_READ_TIMEOUT_S = 30.0
"""A one-off read waits for its share of a busy line; past this, the technician is told so."""

MAX_PROFILE_BYTES = 256 * 1024
"""The largest built-in profile is under 4 KiB; anything far larger is not a profile."""

MAX_PROFILE_REF = 255


def _is_path(ref: str) -> bool:
    return ref.endswith(".toml") or "/" in ref or "\\" in ref


def one_off_profile(ref: str, profiles_dir: Path | None, configured: Mapping[str, Profile]) -> Profile:
    """The profile a one-off read may use; ProfileError (safe to show) otherwise."""
    if ref in configured:
        return configured[ref]
    if not _is_path(ref):
        return builtin_profile(ref)
    if profiles_dir is None:
        raise ProfileError("profile files for one-off reads must lie in the profiles directory, and none is "
                           "configured: set [web] profiles_dir and put the .toml file there, or name a built-in "
                           "profile (meter-gateway profiles list)")
    try:
        base = profiles_dir.resolve()
        path = (base / ref).resolve()
    except (OSError, ValueError, RuntimeError):
        raise ProfileError(f"profile {ref!r} is not a file name under the profiles directory") from None
    if not path.is_relative_to(base) or path == base:
        raise ProfileError(f"profile {ref!r} is not under the profiles directory {base}")
    if path.suffix != ".toml":
        raise ProfileError(f"profile {ref!r}: a profile file's name ends in .toml")
    return _parse(ref, _read_bounded(path, ref))


def _read_bounded(path: Path, ref: str) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ProfileError(f"no profile file {ref!r} in the profiles directory") from None
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "invalid name"
        raise ProfileError(f"cannot open profile file {ref!r}: {reason}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ProfileError(f"profile {ref!r} is not a regular file")
        if st.st_size > MAX_PROFILE_BYTES:
            raise ProfileError(f"profile file {ref!r} is larger than {MAX_PROFILE_BYTES // 1024} KiB")
        with os.fdopen(os.dup(fd), "rb") as fh:
            raw = fh.read(MAX_PROFILE_BYTES + 1)
    finally:
        os.close(fd)
    if len(raw) > MAX_PROFILE_BYTES:  # it grew while being read
        raise ProfileError(f"profile file {ref!r} is larger than {MAX_PROFILE_BYTES // 1024} KiB")
    return raw


def _parse(ref: str, raw: bytes) -> Profile:
    hint = "meter-gateway check-config on a config whose meter uses it shows why"
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError):
        raise ProfileError(f"profile file {ref!r} is not TOML; {hint}") from None
    try:
        return Profile.model_validate(data)
    except (ValidationError, RecursionError) as exc:
        count = exc.error_count() if isinstance(exc, ValidationError) else 1
        raise ProfileError(f"profile file {ref!r} is not a valid firmware profile ({count} problem(s)); "
                           f"{hint}") from None


def _error(message: str, status: int, headers: Mapping[str, str] | None = None) -> Response:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def one_off_routes(ctx: WebContext) -> list[Route]:
    async def bus_read(request: Request) -> Response:
        """One-off read of every quantity of a device, through the bus's scheduler (never beside it)."""
        if not ctx.auth.authorised(request):
            return denied(request)
        name = request.path_params["bus"]
        bus = ctx.buses.get(name)
        if bus is None:
            return _error(f"no bus {name!r}; buses: {sorted(ctx.buses)}", 404)
        params = request.query_params
        try:
            unit = int_param(params, "unit", lo=1, hi=MAX_UNIT_ID)
            ref = str_param(params, "profile", max_len=MAX_PROFILE_REF,
                            hint="a built-in profile id, or a .toml file in [web] profiles_dir")
            profile = one_off_profile(ref, ctx.profiles_dir, bus.profiles)
        except (BadParam, ProfileError) as exc:
            return _error(str(exc), 400)
        try:
            async with asyncio.timeout(ONE_OFF_READ_TIMEOUT_S):
                values, problems = await bus.read_values(unit, profile)
        except BusBusy as exc:
            return _error(f"line busy: {exc}", 429, {"Retry-After": str(math.ceil(exc.retry_after_s))})
        except ConfigError as exc:
            return _error(str(exc), 400)
        except TimeoutError:
            return _error(f"no complete read within {ONE_OFF_READ_TIMEOUT_S:.0f} s: the line gives one-off reads "
                          f"{bus.cfg.one_off_share:.0%} of its time while polls wait; try again, or read fewer "
                          "devices at once", 504)
        except AcquisitionError as exc:
            return _error(f"read failed: {exc}", 502)
        return JSONResponse({"bus": bus.cfg.name, "unit": unit, "profile": profile.id, "values": values,
                             "problems": problems})

    return [Route("/api/v1/buses/{bus}/read", bus_read)]
