"""Every query parameter (and path parameter) of every route, fed hostile values: a 4xx with a message, never a 500.

Two of these were 500s with a traceback: ``credits?after=99999999999999999999`` (beyond SQLite's
integers) and ``intervals?from=9999-12-31`` (the default one-day range overflowed ``date``).
"""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.web.conftest import Site

# (path, parameter, valid values for the route's other parameters)
QUERY_PARAMS = [
    ("/", "token", {}),
    ("/api/v1/credits", "after", {"limit": "10"}),
    ("/api/v1/credits", "limit", {"after": "0"}),
    ("/api/v1/meters/m1/intervals", "from", {"to": "2025-12-02"}),
    ("/api/v1/meters/m1/intervals", "to", {"from": "2025-12-01"}),
    ("/api/v1/meters/m1/intervals", "from", {}),
    ("/api/v1/meters/m1/intervals", "format", {"from": "2025-12-01"}),
    ("/api/v1/buses/line/read", "unit", {"profile": "eastron-sdm630"}),
    ("/api/v1/buses/line/read", "profile", {"unit": "1"}),
]
PATH_PARAMS = ["/api/v1/meters/{}", "/api/v1/meters/{}/intervals", "/api/v1/meters/{}/projection",
               "/api/v1/buses/{}/read?unit=1&profile=eastron-sdm630"]

HOSTILE = [
    "", " ", "-1", "0", "1", "+1", "99999999999999999999", "9" * 5000, "-9223372036854775809", "9223372036854775808",
    "1e3", "1.5", "NaN", "nan", "inf", "-inf", "0x10", "1_000", "\u0665", "\uff11",
    "9999-12-31", "0000-01-01", "0001-01-01", "9999-12-31T23:59:59", "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00", "1900-01-01", "8999-12-31", "2025-13-45", "2025-02-29", "2025-12-01T25:00",
    "2025-12-01T00:00:00+99:00", "2025-W01-1", "\x00", "a\x00b.toml", "%", "%%", "../../etc/passwd", "/dev/zero",
    "/etc/passwd", "../x.toml", "x" * 10_000, "true", "null", "[]", "{}", "<script>alert(1)</script>",
    "json", "nem12", "greenbutton", "NEM12", "\u202e", "\ud7ff", "\U0001f600",
]
RAW = ["%FF", "%FF%FE%FD", "%C3%28", "%ED%A0%80", "%00", "%F4%90%80%80", "%E2%82"]
"""Percent-encoded bytes that are not UTF-8 (and a NUL): sent as they are."""
ALLOWED = {200, 303, 400, 401, 404, 409, 429, 502}


def _query(params: dict[str, str]) -> str:
    return "&".join(f"{quote(k)}={quote(v, safe='')}" for k, v in params.items())


async def _check(http: httpx.AsyncClient, url: str) -> None:
    answer = await http.get(url)
    assert answer.status_code in ALLOWED, (url[:200], answer.status_code, answer.text[:300])
    if answer.status_code == 400 and answer.headers["content-type"].startswith("application/json"):
        assert answer.json()["error"], url[:200]


def _urls(value: str, *, raw: bool = False) -> list[str]:
    encoded = value if raw else quote(value, safe="")
    urls = []
    for path, name, others in QUERY_PARAMS:
        rest = _query(others)
        urls.append(f"{path}?{rest + '&' if rest else ''}{quote(name)}={encoded}")
    urls.extend(p.format(encoded) for p in PATH_PARAMS if encoded and encoded not in (".", ".."))
    return urls


@pytest.mark.parametrize("raw", [False, True], ids=["hostile", "not-utf8"])
async def test_every_parameter_with_hostile_values(site: Site, raw: bool) -> None:
    headers = {"Authorization": f"Bearer {site.token}"}
    async with httpx.AsyncClient(base_url=site.url, headers=headers, timeout=30) as http:
        for value in RAW if raw else HOSTILE:
            for url in _urls(value, raw=raw):
                await _check(http, url)


@pytest.mark.parametrize(("url", "message"), [
    ("/api/v1/credits?after=99999999999999999999", "after must be a whole number from 0 to"),
    ("/api/v1/credits?after=-1", "after must be a whole number from 0 to"),
    ("/api/v1/credits?limit=1e3", "limit must be a whole number from 1 to 1000"),
    ("/api/v1/meters/m1/intervals?from=9999-12-31", "must lie between 1900-01-01 and 9000-01-01"),
    ("/api/v1/meters/m1/intervals?from=0001-01-01", "must lie between 1900-01-01 and 9000-01-01"),
    ("/api/v1/meters/m1/intervals?from=0000-01-01", "must be dates (YYYY-MM-DD, local) or ISO 8601"),
    ("/api/v1/meters/m1/intervals?to=9999-12-31T23:59:59-14:00", "must lie between"),
    ("/api/v1/buses/line/read?unit=300&profile=eastron-sdm630", "unit must be a whole number from 1 to 247"),
    ("/api/v1/buses/line/read?unit=1", "need ?profile="),
])
async def test_bad_values_get_400_with_a_message(site: Site, url: str, message: str) -> None:
    async with httpx.AsyncClient(base_url=site.url, headers={"Authorization": f"Bearer {site.token}"}) as http:
        answer = await http.get(url)
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["error"]


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.one_of(st.text(max_size=30), st.integers().map(str), st.floats().map(str),
                       st.dates().map(str), st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat())))
async def test_every_parameter_with_generated_values(site: Site, value: str) -> None:
    async with httpx.AsyncClient(base_url=site.url, headers={"Authorization": f"Bearer {site.token}"},
                                 timeout=30) as http:
        for url in _urls(value):
            await _check(http, url)
