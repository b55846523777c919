"""The per-box web secret.

Generated at first start into the data dir (0600). Anything beyond the
read-only health check needs it, as ``Authorization: Bearer <token>`` or, for a
technician's browser, once as ``?token=`` which sets an HttpOnly cookie.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

TOKEN_FILE = "web.token"
COOKIE = "gw_token"


def load_or_create_token(data_dir: Path) -> str:
    path = data_dir / TOKEN_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text(encoding="ascii").strip()
    token = secrets.token_urlsafe(24)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(token + "\n")
    return token


def authorised(request: Request, token: str) -> bool:
    """The token may come as a bearer header, the page's cookie, or ``?token=`` once."""
    header = request.headers.get("authorization", "")
    candidates = [header.removeprefix("Bearer ").strip(), request.cookies.get(COOKIE, ""),
                  request.query_params.get("token", "")]
    # Compared as bytes: compare_digest refuses non-ASCII str, and a visitor controls these.
    return any(c and secrets.compare_digest(c.encode(), token.encode()) for c in candidates)


def denied() -> Response:
    return JSONResponse({"error": "this needs the gateway's web token: send 'Authorization: Bearer <token>' "
                                  "or open the page once with ?token=<token> (see web.token in the data dir)"},
                        status_code=401)
