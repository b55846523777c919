"""``/login`` and ``/logout``: a technician signs in with a name and password, and out again.

The form posts (never a GET: no password in a URL, a history or a log); the answer is a 303 to the
page asked for, with a fresh session cookie. Every failure is logged (``sign_in_failed``: the name,
when it is a valid one, and the client address; never the password) and counted by the throttle,
which answers 429 with ``Retry-After`` without checking a password once a name or a client has
failed too often. Passwords are checked one at a time in a worker thread: an argon2 verification
holds 19 MiB and a few hundred milliseconds of a Pi's core, and the event loop must keep polling.

Both forms are refused when another site submits them (an ``Origin`` that is not this box); signing
out also needs the session's own form token.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlencode

import structlog
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from gateway.web.auth import client_address
from gateway.web.users import USERNAME_RE

if TYPE_CHECKING:  # gateway.web.app mounts these routes; importing it at run time would be circular
    from gateway.web.app import WebContext

log = structlog.get_logger("gateway.web")

MAX_FORM_BYTES = 4096
MAX_WAITING_SIGN_INS = 8
"""Sign-ins queued for the one hashing slot; more are told to retry (a flood must not queue memory)."""
NEXT_RE = re.compile(r"/(?!/)[A-Za-z0-9/_.\-]{0,200}")
"""Where a sign-in may lead: a path on this box, never another site (no ``//host``, no scheme)."""

Render = Callable[..., str]


def safe_next(value: str | None) -> str:
    return value if value and NEXT_RE.fullmatch(value) else "/"


def login_url(next_path: str) -> str:
    return "/login" + (f"?{urlencode({'next': next_path})}" if next_path != "/" else "")


def _foreign_origin(request: Request) -> bool:
    """A form sent by another site. Browsers say so in ``Sec-Fetch-Site``; with ``Referrer-Policy:
    no-referrer`` their ``Origin`` on a form post is ``null``, so it only counts when it names a site."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site != "same-origin"
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return False  # not a browser, or an old one: the SameSite=Strict cookie still holds
    return origin != f"{request.url.scheme}://{request.url.netloc}"


async def _form(request: Request) -> dict[str, str] | None:
    """The urlencoded form, or None when it is no such form or too large."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=8, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        return None
    return {k: v[0] for k, v in fields.items()}


def login_routes(ctx: WebContext, render: Render) -> list[Route]:
    waiting = 0

    def page(status: int = 200, *, message: str | None = None, error: str | None = None, next_path: str = "/",
             name: str = "", headers: dict[str, str] | None = None) -> Response:
        users = ctx.auth.users
        problem = users.problem if users else "no data directory"
        no_users = users is not None and problem is None and not users.users()
        html = render("login.html", s=ctx.status, session=None, message=message, error=error, next_path=next_path,
                      name=name, no_users=no_users, problem=problem, data_dir=users.data_dir if users else None)
        return HTMLResponse(html, status_code=status, headers=headers)

    async def login_form(request: Request) -> Response:
        next_path = safe_next(request.query_params.get("next"))
        if "token" in request.query_params:
            return page(401, next_path=next_path, error=(
                "Addresses with ?token= no longer open the page: sign in with your technician account. (The "
                "token is for API clients, sent as 'Authorization: Bearer'.)"))
        if ctx.auth.session(request) is not None:
            return RedirectResponse(next_path, status_code=303)
        message = "You are signed out." if request.query_params.get("signed_out") == "1" else None
        return page(next_path=next_path, message=message)

    async def login(request: Request) -> Response:
        nonlocal waiting
        if _foreign_origin(request):
            return page(403, error="This form was sent from another site; open the gateway's page and sign in there.")
        form = await _form(request)
        if form is None:
            return page(400, error="The sign-in form did not arrive whole; reload the page and try again.")
        name = form.get("username", "").strip().lower()
        password = form.get("password", "")
        next_path = safe_next(form.get("next"))
        client = client_address(request)
        who = name if USERNAME_RE.fullmatch(name) else "(not a user name)"
        users = ctx.auth.users
        if users is None or not users.users():
            return page(401, next_path=next_path, name=name, error="No technician account can sign in here yet.")
        now = ctx.session_clock.now()
        wait = ctx.throttle.wait_s(name, client, now)
        if wait > 0:
            log.warning("sign_in_throttled", user=who, client=client, retry_after_s=round(wait))
            return page(429, next_path=next_path, name=name, headers={"Retry-After": str(int(wait) + 1)},
                        error=f"Too many failed sign-ins: wait {int(wait) + 1} s before trying again.")
        if waiting >= MAX_WAITING_SIGN_INS:
            return page(429, next_path=next_path, name=name, headers={"Retry-After": "2"},
                        error="The gateway is checking other sign-ins; try again in a moment.")
        waiting += 1
        try:
            async with ctx.hash_slot:
                user = await asyncio.to_thread(users.verify, name, password)
        finally:
            waiting -= 1
        if user is None:
            by_name, by_client = ctx.throttle.failed(name, client, ctx.session_clock.now())
            log.warning("sign_in_failed", user=who, client=client, failures_for_user=by_name,
                        failures_from_client=by_client)
            return page(401, next_path=next_path, name=name, error="Wrong user name or password.")
        ctx.throttle.succeeded(name)
        response = RedirectResponse(next_path, status_code=303)
        ctx.auth.start_session(response, request, user.name, user.stamp)
        log.info("signed_in", user=user.name, client=client)
        return response

    async def logout(request: Request) -> Response:
        if _foreign_origin(request):
            return page(403, error="This form was sent from another site.")
        session = ctx.auth.session(request)
        form = await _form(request)
        response = RedirectResponse("/login?signed_out=1", status_code=303)
        if session is None:
            ctx.auth.end_session(request, response)  # drop a stale cookie all the same
            return response
        if form is None or not secrets.compare_digest(form.get("csrf", "").encode(), session.csrf.encode()):
            return page(403, error="Sign out from the gateway's own page.")
        ctx.auth.end_session(request, response)
        log.info("signed_out", user=session.user, client=client_address(request))
        return response

    return [
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
    ]
