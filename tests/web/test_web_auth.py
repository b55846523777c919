"""No secret in a URL, a cookie that is not the token, security headers on every response, a token file
that cannot lock the page — over real HTTP."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import stat
from pathlib import Path

import httpx
import pytest
from structlog.testing import capture_logs

from gateway.errors import ConfigError
from gateway.web.auth import COOKIE, SESSION_TTL_S, TOKEN_FILE, load_or_create_token
from tests.web.conftest import Site

API_PATHS = ["/api/v1/meters", "/api/v1/meters/m1", "/api/v1/sync", "/api/v1/credits", "/api/v1/lines", "/metrics",
             "/api/v1/meters/m1/projection", "/api/v1/meters/m1/intervals",
             "/api/v1/buses/line/read?unit=1&profile=eastron-sdm630"]
SECURITY_HEADERS = {
    "cache-control": "no-store",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


async def test_the_token_in_a_url_is_swapped_for_a_session_at_once_and_the_url_cleaned(site: Site) -> None:
    async with httpx.AsyncClient(base_url=site.url) as http:
        opened = await http.get("/", params={"token": site.token})
        assert opened.status_code == 303
        assert opened.headers["location"] == "/", "the address is cleaned of the token"
        cookie = opened.headers["set-cookie"]
        assert site.token not in cookie, "the cookie does not hold the token"
        attributes = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
        assert {"httponly", "samesite", "path", "max-age"} <= attributes
        assert "samesite=strict" in cookie.lower()
        assert "secure" not in attributes, "plain HTTP on loopback: a Secure cookie would never come back"
        page = await http.get("/")
        assert page.status_code == 200
        assert "Meter gateway" in page.text
        assert site.token not in page.text, "neither the refresh nor any link carries the token"
        assert re.search(r'<meta http-equiv="refresh" content="\d+">', page.text), "refresh reloads the clean URL"
        assert (await http.get("/api/v1/meters")).status_code == 200, "the page's links work with the session"
        kept = await http.get("/", params={"token": site.token, "view": "lines"})
        assert kept.headers["location"] == "/?view=lines", "other parameters survive the exchange"


async def test_api_paths_refuse_the_token_in_the_url(site: Site) -> None:
    async with httpx.AsyncClient(base_url=site.url) as http:
        for path in API_PATHS:
            sep = "&" if "?" in path else "?"
            answer = await http.get(f"{path}{sep}token={site.token}")
            assert answer.status_code == 401, path
            assert "set-cookie" not in answer.headers
            assert "only accepted when opening the page" in answer.json()["error"], path
            bearer = await http.get(path, headers={"Authorization": f"Bearer {site.token}"})
            assert bearer.status_code != 401, path
        assert (await http.get("/", params={"token": "wrong-token-wrong-token"})).status_code == 401
        assert (await http.get("/", params={"token": "töken"})).status_code == 401


async def test_the_session_cookie_is_no_token_expires_and_cannot_be_forged(site: Site) -> None:
    async with httpx.AsyncClient(base_url=site.url) as http:
        session = (await http.get("/", params={"token": site.token})).cookies[COOKIE]
        http.cookies.clear()

        async def with_cookie(value: str, name: str = COOKIE) -> int:
            return (await http.get("/api/v1/meters", headers={"Cookie": f"{name}={value}"})).status_code

        assert await with_cookie(session) == 200
        assert (await http.get("/api/v1/meters", headers={"Authorization": f"Bearer {session}"})).status_code == 401, \
            "a stolen cookie is no bearer token"
        assert await with_cookie(site.token) == 401, "the raw token is not a session"
        assert await with_cookie(site.token, "gw_token") == 401, "nor the old cookie holding the raw token"
        _, expires, mac = session.split(".")
        assert await with_cookie(f"v1.{int(expires) + 3600}.{mac}") == 401, "the expiry is signed"
        assert await with_cookie(f"v1.{expires}.{'0' * 64}") == 401
        site.session_clock.advance(SESSION_TTL_S + 1)
        assert await with_cookie(session) == 401, "a session ends after a working day"


async def test_a_session_over_tls_gets_a_secure_cookie(site: Site) -> None:
    # Behind a TLS-terminating proxy on the box (uvicorn trusts X-Forwarded-Proto from loopback).
    async with httpx.AsyncClient(base_url=site.url) as http:
        opened = await http.get("/", params={"token": site.token}, headers={"X-Forwarded-Proto": "https"})
        assert opened.status_code == 303
        assert "secure" in {a.strip().lower() for a in opened.headers["set-cookie"].split(";")}


async def test_security_headers_on_every_response(site: Site) -> None:
    auth = {"Authorization": f"Bearer {site.token}"}
    async with httpx.AsyncClient(base_url=site.url) as http:
        answers = [
            await http.get("/"), await http.get("/", params={"token": "nope-nope-nope-nope"}),
            await http.get("/", params={"token": site.token}), await http.get("/", headers=auth),
            await http.get("/healthz"), await http.get("/nowhere"), await http.post("/api/v1/meters", headers=auth),
            await http.get("/api/v1/credits", params={"after": "x"}, headers=auth),
            *[await http.get(p, headers=auth) for p in API_PATHS], *[await http.get(p) for p in API_PATHS],
        ]
    statuses = {a.status_code for a in answers}
    assert {200, 303, 400, 401, 404, 405} <= statuses
    for answer in answers:
        for name, value in SECURITY_HEADERS.items():
            assert answer.headers.get(name) == value, (answer.request.url, name)
        csp = answer.headers["content-security-policy"]
        assert "default-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
    page = next(a for a in answers if a.status_code == 200 and a.request.url.path == "/")
    assert "<script" not in page.text
    style = re.search(r"<style>(.*?)</style>", page.text, re.DOTALL)
    assert style is not None
    digest = base64.b64encode(hashlib.sha256(style.group(1).encode()).digest()).decode()
    assert f"style-src 'sha256-{digest}'" in page.headers["content-security-policy"], \
        "the page's one inline style block is allowed by its hash, so it still renders"


def test_the_token_file_is_created_private_and_whole(tmp_path: Path) -> None:
    data = tmp_path / "data"
    token = load_or_create_token(data)
    path = data / TOKEN_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == token + "\n"
    assert len(token) >= 32
    assert sorted(p.name for p in data.iterdir()) == [TOKEN_FILE], "no temporary file left behind"
    assert load_or_create_token(data) == token, "kept across starts"


@pytest.mark.parametrize("content", [b"", b"\n", b"\x00\x00\x00\x00", b"short\n", b"\xff\xfe" * 40],
                         ids=["empty", "newline", "zeros", "short", "binary"])
async def test_an_empty_or_corrupt_token_file_is_replaced_with_a_warning(tmp_path: Path, content: bytes) -> None:
    # An old gateway killed between creating web.token and writing it left it empty: the page stayed locked.
    path = tmp_path / TOKEN_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, content)
    os.close(fd)
    with capture_logs() as logs:
        token = load_or_create_token(tmp_path)
    assert len(token) >= 32
    assert path.read_text() == token + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["web_token_regenerated"]
    assert load_or_create_token(tmp_path) == token


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_a_token_file_other_users_can_read_is_refused_with_the_fix(tmp_path: Path, mode: int) -> None:
    token = load_or_create_token(tmp_path)
    path = tmp_path / TOKEN_FILE
    path.chmod(mode)
    with pytest.raises(ConfigError) as refused:
        load_or_create_token(tmp_path)
    assert f"chmod 600 {path}" in str(refused.value)
    assert token not in str(refused.value)
    path.chmod(0o600)
    assert load_or_create_token(tmp_path) == token


def test_a_token_file_that_is_no_regular_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / TOKEN_FILE).mkdir()
    with pytest.raises(ConfigError, match="regular file"):
        load_or_create_token(tmp_path)
