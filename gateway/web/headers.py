"""Security headers on every response of the local web server.

The page and the API show a box's meters, keys and sync state to whoever holds the token, so nothing
they answer may be cached (``no-store``), framed (clickjacking), sniffed into another type, or leak its
address in a Referer. The page's only inline code is its ``<style>`` block, allowed by its hash: no
inline script can run, even if an attacker got markup into a value shown on it.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Awaitable, Callable

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def style_hash(template_source: str) -> str:
    """The CSP source for the template's inline ``<style>`` block (``'sha256-…'``)."""
    match = re.search(r"<style>(.*?)</style>", template_source, re.DOTALL)
    if match is None:
        raise ValueError("the page template has no <style> block to allow")
    digest = hashlib.sha256(match.group(1).encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode('ascii')}'"


def content_security_policy(style_source: str) -> str:
    return (f"default-src 'self'; style-src {style_source}; object-src 'none'; base-uri 'none'; "
            "form-action 'self'; frame-ancestors 'none'")


def security_headers(csp: str) -> dict[str, str]:
    return {
        "Cache-Control": "no-store",
        "X-Frame-Options": "DENY",
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }


class SecurityHeaders:
    """ASGI middleware adding the headers to every HTTP response that passes through it."""

    def __init__(self, app: ASGIApp, headers: dict[str, str]) -> None:
        self.app = app
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = MutableHeaders(scope=message)
                for name, value in self.headers.items():
                    out[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


def server_error_handler(headers: dict[str, str]) -> Callable[[Request, Exception], Awaitable[Response]]:
    """The 500 answer (a bug): Starlette sends it outside the middleware, so it carries the headers itself."""

    async def handler(_: Request, __: Exception) -> Response:
        return PlainTextResponse("Internal Server Error", status_code=500, headers=headers)

    return handler
