"""Who may use the page and the API: technicians signed in, machine clients with the box's token.

The token is generated at first start into ``<data_dir>/web.token`` (0600, written atomically).
Machine clients (the central billing system pulling credits, scripts) send it only as
``Authorization: Bearer <token>``. People sign in with a technician account
(``meter-gateway user add``, :mod:`gateway.web.users`) and get a server-side session
(:mod:`gateway.web.sessions`) in a cookie that is HttpOnly, SameSite=Strict, and Secure when the
page is served over TLS. No secret is accepted in a URL: ``?token=`` is refused everywhere. ``/metrics``
may be opened to listed networks (``[web] metrics_open_to``) for Prometheus scrapes.
"""

from __future__ import annotations

import errno
import ipaddress
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
from gateway.fsync import fsync_dir
from gateway.web.sessions import SESSION_MAX_S, Session, SessionStore
from gateway.web.users import UserStore

log = structlog.get_logger("gateway.web")

TOKEN_FILE = "web.token"
COOKIE = "gw_session"
MAX_TOKEN_FILE_BYTES = 4096
TOKEN_RE = re.compile(r"[\x21-\x7e]{16,512}")
"""A usable token: 16 to 512 visible ASCII characters (a generated one is 32)."""


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
    fsync_dir(path.parent)
    return token


def _same(a: str, b: str) -> bool:
    # Compared as bytes: compare_digest refuses non-ASCII str, and a visitor controls these.
    return secrets.compare_digest(a.encode("utf-8", "surrogateescape"), b.encode("utf-8", "surrogateescape"))


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def client_address(request: Request) -> str:
    """The client's address as the server saw it (a proxy on the box may set it: uvicorn trusts
    X-Forwarded-For from loopback only)."""
    return request.client.host if request.client else "unknown"


def _in_networks(host: str, networks: tuple[Network, ...]) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # a dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d
    return any(address in net for net in networks)


class WebAuth:
    """Checks bearer tokens and sessions. ``clock`` is real wall time (a simulated meter clock running
    at 900x would end a session in under a minute)."""

    def __init__(self, token: str, clock: Clock, users: UserStore | None, sessions: SessionStore,
                 metrics_open_to: tuple[Network, ...] = ()) -> None:
        self._token = token
        self._clock = clock
        self.users = users
        self.sessions = sessions
        self._metrics_open_to = metrics_open_to

    def token_matches(self, candidate: str) -> bool:
        return bool(candidate) and _same(candidate, self._token)

    def bearer(self, request: Request) -> bool:
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and self.token_matches(credentials.strip())

    def session(self, request: Request) -> Session | None:
        """The request's session, if it is open and its user still has the password it was opened with."""
        value = request.cookies.get(COOKIE, "")
        session = self.sessions.get(value, self._clock.now()) if value else None
        if session is None:
            return None
        user = self.users.users().get(session.user) if self.users else None
        if user is None or user.stamp != session.stamp:
            ended = self.sessions.end_user(session.user)
            log.info("sessions_ended", user=session.user, sessions=ended,
                     reason="user removed" if user is None else "new password")
            return None
        return session

    def authorised(self, request: Request) -> bool:
        """A machine client's bearer token or a technician's session; never anything in the URL."""
        return self.bearer(request) or self.session(request) is not None

    def metrics_allowed(self, request: Request) -> bool:
        return _in_networks(client_address(request), self._metrics_open_to) or self.authorised(request)

    def start_session(self, response: Response, request: Request, user: str, stamp: str) -> Session:
        old = request.cookies.get(COOKIE)
        if old:
            self.sessions.end(old)  # a fresh id at every sign-in: a planted cookie never becomes a session
        value, session = self.sessions.create(user, stamp, self._clock.now())
        response.set_cookie(COOKIE, value, max_age=SESSION_MAX_S, path="/", httponly=True,
                            samesite="strict", secure=request.url.scheme == "https")
        return session

    def end_session(self, request: Request, response: Response) -> None:
        value = request.cookies.get(COOKIE)
        if value:
            self.sessions.end(value)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict",
                               secure=request.url.scheme == "https")


def denied(request: Request) -> Response:
    if "token" in request.query_params:
        message = ("a token in the URL is not accepted: API clients send 'Authorization: Bearer <token>' "
                   "(web.token in the data dir); people sign in at /login")
    else:
        message = ("this needs a signed-in technician (sign in at /login) or the gateway's web token as "
                   "'Authorization: Bearer <token>' (web.token in the data dir)")
    return JSONResponse({"error": message}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
