"""Sign-in with technician accounts, sessions that really end, no secret in a URL, bearer tokens for machines,
security headers on every response, a token file that cannot lock the page — over real HTTP."""

from __future__ import annotations

import os
import re
import ssl
import stat
import subprocess
from pathlib import Path

import httpx
import pytest
from structlog.testing import capture_logs

from gateway.config import parse_config
from gateway.errors import ConfigError
from gateway.web.app import WebContext, create_app
from gateway.web.auth import COOKIE, TOKEN_FILE, load_or_create_token
from gateway.web.server import serving
from gateway.web.sessions import FREE_FAILURES_PER_CLIENT, FREE_FAILURES_PER_USER, SESSION_IDLE_S, SESSION_MAX_S
from tests.web.conftest import PASSWORD, USER, Site

API_PATHS = ["/api/v1/meters", "/api/v1/meters/m1", "/api/v1/sync", "/api/v1/credits", "/api/v1/lines", "/metrics",
             "/api/v1/meters/m1/projection", "/api/v1/meters/m1/intervals",
             "/api/v1/buses/line/read?unit=1&profile=eastron-sdm630", "/api/v1/charts/meters/m1/day",
             "/api/v1/charts/meters/m1/period", "/api/v1/charts/lines/line"]
PAGES = ["/", "/meters/m1"]
SECURITY_HEADERS = {
    "cache-control": "no-store",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}
SAME_ORIGIN = {"Sec-Fetch-Site": "same-origin"}


async def sign_in(http: httpx.AsyncClient, user: str = USER, password: str = PASSWORD, **extra: str) -> httpx.Response:
    return await http.post("/login", data={"username": user, "password": password, **extra}, headers=SAME_ORIGIN)


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match, "the page carries its sign-out form"
    return match.group(1)


async def test_signing_in_gives_a_strict_httponly_session_cookie_and_no_secret_in_any_url(site: Site) -> None:
    async with httpx.AsyncClient(base_url=site.url) as http:
        first = await http.get("/meters/m1")
        assert first.status_code == 303
        assert first.headers["location"] == "/login?next=%2Fmeters%2Fm1", "asked to sign in, then back to the meter"
        form = await http.get(first.headers["location"])
        assert 'method="post" action="/login"' in form.text, "the password goes in a POST body, never a URL"
        answer = await sign_in(http, next="/meters/m1")
        assert answer.status_code == 303
        assert answer.headers["location"] == "/meters/m1"
        cookie = answer.headers["set-cookie"]
        value = answer.cookies[COOKIE]
        assert PASSWORD not in cookie
        assert site.token not in cookie
        assert len(value) >= 40, "a random session id"
        attributes = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
        assert {"httponly", "samesite", "path", "max-age"} <= attributes
        assert "samesite=strict" in cookie.lower()
        assert "secure" not in attributes, "plain HTTP on loopback: a Secure cookie would never come back"
        page = await http.get("/meters/m1")
        assert page.status_code == 200
        assert "m1" in page.text
        assert USER in page.text
        assert PASSWORD not in page.text
        assert site.token not in page.text
        for path in API_PATHS:
            assert (await http.get(path)).status_code != 401, f"{path}: the session opens the API the page uses"
        for url in [str(r.url) for r in (first, form, answer, page)] + [answer.headers["location"]]:
            assert PASSWORD.replace(" ", "+") not in url
            assert PASSWORD not in url
            assert site.token not in url


async def test_a_session_over_tls_gets_a_secure_cookie(site: Site) -> None:
    # Behind a TLS-terminating proxy on the box (uvicorn trusts X-Forwarded-Proto from loopback).
    async with httpx.AsyncClient(base_url=site.url) as http:
        answer = await http.post("/login", data={"username": USER, "password": PASSWORD},
                                 headers={**SAME_ORIGIN, "X-Forwarded-Proto": "https"})
        assert answer.status_code == 303
        assert "secure" in {a.strip().lower() for a in answer.headers["set-cookie"].split(";")}


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "page.crt", tmp_path / "page.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=30)
    return cert, key


async def test_served_over_https_by_the_gateway_itself_the_cookie_is_secure(site: Site, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    cfg = parse_config(f"""
gateway_id = "gw"
data_dir = "data"
[web]
tls_cert_file = "{cert.name}"
tls_key_file = "{key.name}"
""", base_dir=tmp_path)
    assert cfg.web.tls == (cert, key), "relative to the config file"
    trust = ssl.create_default_context(cafile=str(cert))
    async with (serving(create_app(site.ctx), tls=cfg.web.tls) as url,
                httpx.AsyncClient(base_url=url, verify=trust) as https):
        assert url.startswith("https://")
        answer = await sign_in(https)
        assert answer.status_code == 303
        flags = {a.strip().lower() for a in answer.headers["set-cookie"].split(";")}
        assert {"secure", "httponly", "samesite=strict"} <= flags
        assert (await https.get("/")).status_code == 200, "the secure cookie signs the browser in"
    with pytest.raises(ConfigError, match="both tls_cert_file and tls_key_file"):
        parse_config('gateway_id = "gw"\ndata_dir = "d"\n[web]\ntls_cert_file = "page.crt"\n', base_dir=tmp_path)


async def test_the_token_in_a_url_is_refused_everywhere(site: Site) -> None:
    async with httpx.AsyncClient(base_url=site.url) as http:
        for path in API_PATHS:
            sep = "&" if "?" in path else "?"
            answer = await http.get(f"{path}{sep}token={site.token}")
            assert answer.status_code == 401, path
            assert "set-cookie" not in answer.headers
            assert "token in the URL is not accepted" in answer.json()["error"], path
            bearer = await http.get(path, headers={"Authorization": f"Bearer {site.token}"})
            assert bearer.status_code != 401, f"{path}: machine clients keep the bearer token"
        for path in PAGES:
            page = await http.get(path, params={"token": site.token})
            assert page.status_code == 303, path
            assert "set-cookie" not in page.headers, "the token no longer opens a session"
            assert site.token not in page.headers["location"], "and it is dropped from the address"
            refused = await http.get(page.headers["location"])
            assert refused.status_code == 401
            assert "no longer open the page" in refused.text
        assert (await http.get("/", params={"token": "töken"})).status_code == 303
        assert (await http.get("/api/v1/meters")).status_code == 401


async def test_wrong_passwords_are_refused_logged_and_then_throttled(site: Site) -> None:
    async with httpx.AsyncClient(base_url=site.url) as http:
        with capture_logs() as logs:
            for _ in range(FREE_FAILURES_PER_USER):
                wrong = await sign_in(http, password="not the password")
                assert wrong.status_code == 401
                assert "Wrong user name or password" in wrong.text
                assert COOKIE not in wrong.cookies
            held = await sign_in(http)
            assert held.status_code == 429, "past the free failures even the right password waits"
            retry = int(held.headers["retry-after"])
            assert 1 <= retry <= 31
            assert COOKIE not in held.cookies
            other = await sign_in(http, user="nosuchuser", password="whatever it is")
            assert other.status_code == 401, "another name from the same client is not held yet"
        failed = [e for e in logs if e["event"] == "sign_in_failed"]
        assert len(failed) == FREE_FAILURES_PER_USER + 1
        assert failed[0]["user"] == USER
        assert failed[0]["client"] == "127.0.0.1"
        assert failed[-1]["user"] == "nosuchuser"
        assert [e["user"] for e in logs if e["event"] == "sign_in_throttled"] == [USER]
        assert not any("not the password" in str(e) for e in logs), "the password is never logged"
        site.session_clock.advance(retry)
        assert (await sign_in(http)).status_code == 303, "after the wait the right password gets in"


async def test_a_client_guessing_many_names_is_throttled_by_its_address(site: Site) -> None:
    async with httpx.AsyncClient(base_url=site.url) as http:
        for k in range(FREE_FAILURES_PER_CLIENT):
            assert (await sign_in(http, user=f"guess{k}", password="a password guess")).status_code == 401
        held = await sign_in(http)
        assert held.status_code == 429, "a fresh name from a client that failed this often waits too"
        assert "Too many failed sign-ins" in held.text


async def test_signing_out_ends_the_session_on_the_server(site: Site) -> None:
    async with httpx.AsyncClient(base_url=site.url) as http:
        await sign_in(http)
        stolen = http.cookies[COOKIE]
        page = await http.get("/")
        no_token = await http.post("/logout", data={"csrf": "forged"}, headers=SAME_ORIGIN)
        assert no_token.status_code == 403, "another site cannot sign a technician out"
        cross = await http.post("/logout", data={"csrf": csrf_of(page.text)}, headers={"Sec-Fetch-Site": "cross-site"})
        assert cross.status_code == 403
        out = await http.post("/logout", data={"csrf": csrf_of(page.text)}, headers=SAME_ORIGIN)
        assert out.status_code == 303
        assert out.headers["location"] == "/login?signed_out=1"
        assert COOKIE not in http.cookies, "the cookie is cleared"
    async with httpx.AsyncClient(base_url=site.url, cookies={COOKIE: stolen}) as replay:
        assert (await replay.get("/api/v1/meters")).status_code == 401, "a copy of the cookie is worthless now"
        assert (await replay.get("/")).status_code == 303


async def test_removing_a_user_or_a_new_password_ends_their_sessions(site: Site) -> None:
    async with httpx.AsyncClient(base_url=site.url) as first, httpx.AsyncClient(base_url=site.url) as second:
        await sign_in(first)
        await sign_in(second)
        assert (await first.get("/api/v1/meters")).status_code == 200
        site.users.set_password(USER, "an entirely new secret", replace=True)
        assert (await first.get("/api/v1/meters")).status_code == 401
        assert (await sign_in(second)).status_code == 401, "the old password is gone"
        assert (await sign_in(second, password="an entirely new secret")).status_code == 303
        site.users.remove(USER)
        assert (await second.get("/api/v1/meters")).status_code == 401
        assert (await sign_in(second, password="an entirely new secret")).status_code == 401


async def test_sessions_end_when_idle_and_after_a_working_day(site: Site) -> None:
    async with httpx.AsyncClient(base_url=site.url) as http:
        await sign_in(http)
        site.session_clock.advance(SESSION_IDLE_S - 60)
        assert (await http.get("/api/v1/meters")).status_code == 200, "used within the idle time: still open"
        site.session_clock.advance(SESSION_IDLE_S + 1)
        assert (await http.get("/api/v1/meters")).status_code == 401, "left idle: ended"
        await sign_in(http)
        for _ in range(int(SESSION_MAX_S // (SESSION_IDLE_S / 2)) + 1):
            site.session_clock.advance(SESSION_IDLE_S / 2)
            last = (await http.get("/api/v1/meters")).status_code
        assert last == 401, "however busy, a session ends after a working day"


async def test_forms_sent_from_another_site_are_refused(site: Site) -> None:
    async with httpx.AsyncClient(base_url=site.url) as http:
        for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "http://evil.example"}):
            answer = await http.post("/login", data={"username": USER, "password": PASSWORD}, headers=headers)
            assert answer.status_code == 403
            assert COOKIE not in answer.cookies
        # Chromium sends Origin: null on a same-origin form post under Referrer-Policy: no-referrer.
        ok = await http.post("/login", data={"username": USER, "password": PASSWORD}, headers={"Origin": "null"})
        assert ok.status_code == 303
        assert (await http.post("/login", data={"username": USER, "password": PASSWORD, "next": "//evil.example"},
                                headers=SAME_ORIGIN)).headers["location"] == "/", "no redirect off the box"
        oversized = await http.post("/login", content=b"username=" + b"x" * 10_000, headers={
            **SAME_ORIGIN, "Content-Type": "application/x-www-form-urlencoded"})
        assert oversized.status_code == 400


async def test_a_fresh_box_without_users_says_how_to_add_one(site: Site) -> None:
    site.users.remove(USER)
    async with httpx.AsyncClient(base_url=site.url) as http:
        form = await http.get("/login")
        assert "No technician account exists yet" in form.text
        assert "meter-gateway user add" in form.text
        assert (await sign_in(http)).status_code == 401


async def test_metrics_can_be_opened_to_listed_networks_only(site: Site) -> None:
    async with httpx.AsyncClient(base_url=site.url) as http:
        assert (await http.get("/metrics")).status_code == 401, "closed by default"
    cfg = site.cfg
    opened = cfg.model_copy(update={"web": cfg.web.model_copy(update={"metrics_open_to": ("127.0.0.0/8",)})})
    elsewhere = cfg.model_copy(update={"web": cfg.web.model_copy(update={"metrics_open_to": ("192.168.0.0/16",)})})
    for config, expected in ((opened, 200), (elsewhere, 401)):
        ctx = WebContext(site.ctx.status, site.ctx.ledger, site.ctx.clock, site.token, (), config=config)
        async with serving(create_app(ctx)) as url, httpx.AsyncClient(base_url=url) as http:
            scrape = await http.get("/metrics")
            assert scrape.status_code == expected, config.web.metrics_open_to
            assert (await http.get("/api/v1/meters")).status_code == 401, "only /metrics is opened"
            if expected == 200:
                assert "gateway_meter_up" in scrape.text


async def test_security_headers_on_every_response(site: Site) -> None:
    auth = {"Authorization": f"Bearer {site.token}"}
    async with httpx.AsyncClient(base_url=site.url) as http:
        answers = [
            await http.get("/"), await http.get("/", params={"token": "nope-nope-nope-nope"}),
            await http.get("/login"), await sign_in(http, password="wrong password!"), await sign_in(http),
            await http.get("/"), await http.get("/meters/m1"), await http.get("/meters/nope"),
            await http.get("/static/page.css"), await http.get("/static/charts.js"),
            await http.get("/healthz"), await http.get("/nowhere"), await http.post("/api/v1/meters", headers=auth),
            await http.get("/api/v1/credits", params={"after": "x"}, headers=auth),
            *[await http.get(p, headers=auth) for p in API_PATHS],
        ]
        uplot = "/static/vendor/uplot/uPlot.iife.min.js"
        static = await http.get(uplot)
        again = await http.get(uplot, headers={"If-None-Match": static.headers["etag"]})
    statuses = {a.status_code for a in answers}
    assert {200, 303, 400, 401, 404, 405} <= statuses
    assert again.status_code == 304, "a reloading phone revalidates the chart library, it does not fetch it again"
    assert again.content == b""
    for answer in [*answers, static, again]:
        is_static = answer.request.url.path.startswith("/static/")
        for name, value in SECURITY_HEADERS.items():
            expected = "no-cache" if name == "cache-control" and is_static else value
            assert answer.headers.get(name) == expected, (answer.request.url, name)
        csp = answer.headers["content-security-policy"]
        assert "default-src 'self'" in csp
        assert "script-src 'self'" in csp
        assert "style-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert "unsafe-eval" not in csp
    pages = [a for a in answers if a.headers.get("content-type", "").startswith("text/html")]
    assert len(pages) >= 5
    for page in pages:
        text = page.text
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), "no inline script: every script is a file"
        assert "<style" not in text, "no inline style: the CSP allows none"
        assert " style=" not in text
        assert not re.search(r"\son[a-z]+=", text), "no inline event handler"


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
