"""The per-box web secret, and the browser session derived from it.

The token is generated at first start into ``<data_dir>/web.token`` (0600, written atomically).
APIs take it only as ``Authorization: Bearer <token>``. A technician's browser opens the page once
as ``/?token=<token>``: the page answers at once with a session cookie and a 303 to the same
address without the token, so the secret does not stay in the address bar, the history, a refresh
or a Referer. The cookie does not hold the token: it holds an expiry and an HMAC of it keyed by the
token, so it is useless as a bearer token, stops working at its expiry, and every session ends when
the token file is replaced. ``?token=`` is accepted nowhere but on the page (until sign-in with
users exists).
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import os
import re
import secrets
import stat
import tempfile
from pathlib import Path

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.clock import Clock
from gateway.errors import ConfigError

log = structlog.get_logger("gateway.web")

TOKEN_FILE = "web.token"
COOKIE = "gw_session"
SESSION_TTL_S = 12 * 3600
"""A browser session lasts a technician's working day; then the page asks for the token again."""
MAX_TOKEN_FILE_BYTES = 4096
TOKEN_RE = re.compile(r"[\x21-\x7e]{16,512}")
"""A usable token: 16 to 512 visible ASCII characters (a generated one is 32)."""
_SESSION_RE = re.compile(r"v1\.([0-9]{1,12})\.([0-9a-f]{64})")
_SESSION_CONTEXT = b"meter-gateway web session v1|"


def load_or_create_token(data_dir: Path) -> str:
    """The box's web token; created at first start, recreated (with a warning) if empty or corrupt.

    Refused when other users may read the file: the token opens every API of the box.
    """
    path = data_dir / TOKEN_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return _write_token(path, replace=False)
    except OSError as exc:
        raise ConfigError(f"cannot read the web token {path}: {exc.strerror}; "
                          "it must be a regular file readable by the gateway's user") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{path} is not a regular file; remove it and start again to create a new token")
        raw = os.read(fd, MAX_TOKEN_FILE_BYTES + 1)
    finally:
        os.close(fd)
    token = raw.decode("ascii", errors="replace").strip()
    if not TOKEN_RE.fullmatch(token):
        # An interrupted first start (old versions wrote it in place) or a damaged file: nothing could
        # ever match it, so the page would stay locked. A new token is the only way forward.
        log.warning("web_token_regenerated", path=str(path), reason="empty" if not token else "not a token",
                    hint="the new token is in the file; give it to whatever used the old one")
        return _write_token(path, replace=True)
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise ConfigError(f"{path} is readable by other users (mode {mode:o}); run 'chmod 600 {path}' "
                          "and start again")
    return token


_NO_HARD_LINKS = (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS)


def _write_token(path: Path, *, replace: bool) -> str:
    """Write a new token atomically: a temporary file, fsync, then rename (or link, if it must be new)."""
    token = secrets.token_urlsafe(24)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(token + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:  # another start created it meanwhile: use that one
                return load_or_create_token(path.parent)
            except OSError as exc:
                if exc.errno not in _NO_HARD_LINKS:
                    raise
                # A file system without hard links (vfat on a removable card, some FUSE mounts): a
                # rename is atomic too; only a start racing this one could be overwritten.
                if path.exists():
                    return load_or_create_token(path.parent)
                os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return token


def _same(a: str, b: str) -> bool:
    # Compared as bytes: compare_digest refuses non-ASCII str, and a visitor controls these.
    return secrets.compare_digest(a.encode("utf-8", "surrogateescape"), b.encode("utf-8", "surrogateescape"))


class WebAuth:
    """Checks the token and issues and checks sessions; ``clock`` is real wall time (a simulated
    meter clock running at 900x would end a session in under a minute)."""

    def __init__(self, token: str, clock: Clock) -> None:
        self._token = token
        self._clock = clock

    def token_matches(self, candidate: str) -> bool:
        return bool(candidate) and _same(candidate, self._token)

    def new_session(self) -> str:
        expires = int(self._clock.now()) + SESSION_TTL_S
        return f"v1.{expires}.{self._mac(expires)}"

    def session_valid(self, value: str) -> bool:
        match = _SESSION_RE.fullmatch(value)
        if match is None:
            return False
        expires = int(match.group(1))
        now = self._clock.now()
        return now < expires <= now + SESSION_TTL_S + 60 and _same(match.group(2), self._mac(expires))

    def _mac(self, expires: int) -> str:
        return hmac.new(self._token.encode(), _SESSION_CONTEXT + str(expires).encode(), hashlib.sha256).hexdigest()

    def bearer(self, request: Request) -> bool:
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and self.token_matches(credentials.strip())

    def authorised(self, request: Request) -> bool:
        """An API request: the bearer header or the page's session cookie; never ``?token=``."""
        return self.bearer(request) or self.session_valid(request.cookies.get(COOKIE, ""))

    def set_session(self, response: Response, request: Request) -> None:
        response.set_cookie(COOKIE, self.new_session(), max_age=SESSION_TTL_S, path="/", httponly=True,
                            samesite="strict", secure=request.url.scheme == "https")


def denied(request: Request) -> Response:
    if "token" in request.query_params:
        message = ("?token= is only accepted when opening the page / (it is then swapped for a session "
                   "cookie); an API client sends 'Authorization: Bearer <token>' (see web.token in the data dir)")
    else:
        message = ("this needs the gateway's web token: send 'Authorization: Bearer <token>', or open the page "
                   "once as /?token=<token> (see web.token in the data dir)")
    return JSONResponse({"error": message}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
