"""An overloaded line's achievable period in the API and on the page, over real HTTP (issue 11, item 4).

The bus sets these fields (tests/acquisition/test_acq_overbooked.py drives a real overbooked line);
here the web side must show them: the JSON carries them, the page row and the problems list say the
period the meters get, not only the configured one.
"""

from __future__ import annotations

import httpx

from tests.web.conftest import Site


async def test_the_api_and_the_page_say_the_period_an_overloaded_line_achieves(site: Site) -> None:
    line = site.ctx.status.lines["line"]
    line.poll_period_s, line.needed_period_s = 1.0, 1.533
    line.overloaded, line.achievable_period_s = True, 1.5312
    headers = {"Authorization": f"Bearer {site.token}"}
    async with httpx.AsyncClient(base_url=site.url, headers=headers) as http:
        lines = (await http.get("/api/v1/lines")).json()["lines"]
        page = (await http.get("/")).text
    [shown] = [x for x in lines if x["name"] == "line"]
    assert shown["overloaded"] is True
    assert shown["achievable_period_s"] == 1.5312
    assert shown["poll_period_s"] == 1.0
    assert shown["needed_period_s"] == 1.533
    assert "1.53 achievable" in page
    assert "configured 1, overloaded" in page
    assert "cannot keep poll_s = 1 (the read plans need 1.53 s)" in page
    assert "read about every 1.53 s" in page
