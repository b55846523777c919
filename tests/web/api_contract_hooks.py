"""schemathesis hooks for the gateway's local API: the rules OpenAPI cannot state, so that runs reach the code.

Loaded by ``SCHEMATHESIS_HOOKS=api_contract_hooks`` (``test_api_contract.py``). Without them almost
every generated request names a meter or bus the site does not have (404) or a profile that is no
file and no built-in (400), and the reads, projections and exports behind them would never run.
For two cases in three the hooks name the site's meter (``house``) and bus (``line``); for cases
schemathesis generated to be *valid* they also

* read unit 1 (the simulated meter; another unit is a device that does not answer: 502) with a
  profile that exists (validity depends on the box's files, which the document cannot list);
* replace a ``from``/``to`` that is no real date or time, or a range that is not
  ``from < to <= from + 366 days``, by one that is (calendar and cross-field rules).

Cases schemathesis generated to be invalid keep their values (it revalidates what hooks change).
"""

from __future__ import annotations

import itertools
import json
import random
from datetime import date, timedelta
from typing import Any

import schemathesis

from gateway.reports.web import BadBound, parse_bound

SITE_METER = "house"
SITE_BUS = "line"
TZ = "America/Detroit"
PROFILES = ("eastron-sdm630", "eastron-sdm120")
MAX_RANGE = timedelta(days=366)
_CASES = itertools.count()


def _positive(case: Any) -> bool:
    meta = getattr(case, "meta", None)
    return meta is not None and meta.generation.mode.is_positive


def _pick(case: Any) -> random.Random:
    return random.Random(json.dumps([case.path_parameters, case.query], sort_keys=True, default=str))


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    pick = _pick(case)
    params = case.path_parameters
    if isinstance(params, dict) and next(_CASES) % 3:  # every third case keeps its generated names (404s)
        if isinstance(params.get("meter"), str):
            case.path_parameters = {**params, "meter": SITE_METER}
        if isinstance(params.get("bus"), str):
            case.path_parameters = {**params, "bus": SITE_BUS}
    if not _positive(case) or not isinstance(case.query, dict):
        return case
    if case.path == "/api/v1/buses/{bus}/read":
        case.query = {**case.query, "unit": 1, "profile": pick.choice(PROFILES)}
    elif case.path == "/api/v1/meters/{meter}/intervals":
        case.query = _valid_range(case.query)
    return case


def _valid_range(query: dict[str, Any]) -> dict[str, Any]:
    out = dict(query)
    try:
        start = parse_bound(str(out["from"]), TZ) if "from" in out else None
        end = parse_bound(str(out["to"]), TZ) if "to" in out else None
    except BadBound:
        start = end = None
        out.pop("from", None)
        out.pop("to", None)
    if start is not None and end is not None and not start < end <= start + MAX_RANGE:
        out.pop("to")
    if start is None and "to" in out:  # from defaults to today: keep the pair consistent
        out.pop("to")
    if start is not None and "to" not in out and len(str(out["from"])) == 10:
        try:  # a local day ends at the next local midnight, which must lie in range too
            parse_bound((date.fromisoformat(str(out["from"])) + timedelta(days=1)).isoformat(), TZ)
        except (BadBound, ValueError, OverflowError):
            out.pop("from")
    return out
