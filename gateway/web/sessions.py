"""Browser sessions and the sign-in throttle, both in memory, both bounded. Pure: time is passed in.

Sessions are server-side: the cookie holds a random id (256 bits) and nothing else, the store keeps
only its SHA-256, so signing out, removing a user or giving them a new password ends a session for
real, at once. A restart of the daemon signs everyone out; on a box that restarts a few times a year
that is cheaper than a session table on the SD card.

The throttle counts failed sign-ins per user name and per client address. A few are free (typos);
after that each further attempt must wait twice as long as the one before, up to
``MAX_DELAY_S``, and is refused without even checking the password, which also keeps a guessing
client from spending the box's CPU on hashes. Failures are forgotten ``FORGET_AFTER_S`` after the last.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import OrderedDict
from dataclasses import dataclass

SESSION_IDLE_S = 4 * 3600
"""A session unused this long ends: a phone left in a meter room does not stay signed in overnight."""
SESSION_MAX_S = 12 * 3600
"""However busy, a session ends after a working day."""
MAX_SESSIONS = 64
MAX_SESSIONS_PER_USER = 8
"""Bounds memory whatever a client does; the oldest session goes first."""

FREE_FAILURES_PER_USER = 5
FREE_FAILURES_PER_CLIENT = 20
"""A client may mistype several accounts' passwords (a shared tablet) before it is slowed down."""
FIRST_DELAY_S = 30.0
MAX_DELAY_S = 15 * 60.0
FORGET_AFTER_S = 15 * 60.0
MAX_TRACKED = 4096
"""Names and addresses followed at once; past this the least recently failed are forgotten."""


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass
class Session:
    user: str
    stamp: str
    """The password the user signed in with (see ``gateway.web.users.stamp_of``)."""
    created: float
    last_seen: float
    csrf: str
    """Sent back by the page's forms (sign-out), so another site cannot submit them."""


class SessionStore:
    def __init__(self) -> None:
        self._sessions: OrderedDict[str, Session] = OrderedDict()  # by digest, least recently used first

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self, user: str, stamp: str, now: float) -> tuple[str, Session]:
        """A new session; returns the cookie value and the session."""
        self._expire(now)
        mine = [k for k, s in self._sessions.items() if s.user == user]
        for key in mine[: max(0, len(mine) - MAX_SESSIONS_PER_USER + 1)]:
            del self._sessions[key]
        while len(self._sessions) >= MAX_SESSIONS:
            self._sessions.popitem(last=False)
        value = secrets.token_urlsafe(32)
        session = Session(user, stamp, now, now, secrets.token_urlsafe(16))
        self._sessions[_digest(value)] = session
        return value, session

    def get(self, value: str, now: float) -> Session | None:
        if not value or len(value) > 128:
            return None
        key = _digest(value)
        session = self._sessions.get(key)
        if session is None:
            return None
        if now - session.last_seen > SESSION_IDLE_S or now - session.created > SESSION_MAX_S or now < session.created:
            del self._sessions[key]
            return None
        session.last_seen = now
        self._sessions.move_to_end(key)
        return session

    def end(self, value: str) -> bool:
        return self._sessions.pop(_digest(value), None) is not None

    def end_user(self, user: str) -> int:
        keys = [k for k, s in self._sessions.items() if s.user == user]
        for key in keys:
            del self._sessions[key]
        return len(keys)

    def _expire(self, now: float) -> None:
        for key in [k for k, s in self._sessions.items()
                    if now - s.last_seen > SESSION_IDLE_S or now - s.created > SESSION_MAX_S]:
            del self._sessions[key]


@dataclass
class _Failures:
    count: int
    last: float


class SignInThrottle:
    def __init__(self) -> None:
        self._users: OrderedDict[str, _Failures] = OrderedDict()
        self._clients: OrderedDict[str, _Failures] = OrderedDict()

    def wait_s(self, user: str, client: str, now: float) -> float:
        """Seconds before this user name may be tried from this client; 0 when it may be now."""
        return max(_wait(self._users, user, FREE_FAILURES_PER_USER, now),
                   _wait(self._clients, client, FREE_FAILURES_PER_CLIENT, now))

    def failed(self, user: str, client: str, now: float) -> tuple[int, int]:
        """Count a failure; returns the failures in a row for the name and for the client."""
        return _count(self._users, user, now), _count(self._clients, client, now)

    def succeeded(self, user: str) -> None:
        # Only the name is cleared: a client that knows one password must not earn new guesses at others.
        self._users.pop(user, None)


def _wait(table: OrderedDict[str, _Failures], key: str, free: int, now: float) -> float:
    entry = table.get(key)
    if entry is None or now - entry.last > FORGET_AFTER_S or entry.count < free:
        return 0.0
    delay = min(FIRST_DELAY_S * 2.0 ** (entry.count - free), MAX_DELAY_S)
    return max(0.0, entry.last + delay - now)


def _count(table: OrderedDict[str, _Failures], key: str, now: float) -> int:
    entry = table.get(key)
    if entry is None or now - entry.last > FORGET_AFTER_S:
        entry = _Failures(0, now)
    entry.count += 1
    entry.last = now
    table[key] = entry
    table.move_to_end(key)
    while len(table) > MAX_TRACKED:
        table.popitem(last=False)
    return entry.count
