"""schemathesis hooks for the receiver: the cross-field rules OpenAPI cannot state, so that runs test something.

Loaded by ``SCHEMATHESIS_HOOKS=schemathesis_hooks`` (``test_schemathesis.py``). Without them, almost
every generated batch is refused as a whole (400: the body's ``batch`` differs from the
``Idempotency-Key`` header; 403: a random gateway id) and its credits are random JSON, so the
receiver's verification and storage would never be reached. For a batch whose header and body
schemathesis meant to be valid, the hooks

* make the key unique to the body (``<key>.<digest>``): the contract answers the same key with
  other bytes 422, a rule about *earlier* requests that schemathesis cannot know;
* set ``batch`` to that key and ``gateway`` to the gateway whose token the run sends;
* ask most reads for that gateway's meters;
* replace the credits, for about half of the cases, by a slice of honest signed chains (real
  credits of three meters, in and out of order), so runs see ``accepted``, ``duplicate`` and
  chain rejections, not only ``malformed``.

Cases schemathesis generated to be invalid are left alone (it revalidates what hooks change).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from typing import Any

import schemathesis
from receiver_kit import GW, honest_chain

from cloud_sync.receiver_intake import KEY_PATTERN

_KEY = re.compile(KEY_PATTERN)
_CHAINS = [honest_chain(12, meter=f"m{n}") for n in range(3)]
_SEGMENTS = [chain[k:k + 4] for chain in _CHAINS for k in range(0, 12, 4)]
"""Four consecutive credits of a meter: sent in a random order over the run they are accepted, duplicates or gaps."""


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    if case.path == "/v1/gateways/{gateway}/meters/{meter}/credits":
        return _own_meter(case)
    if case.path != "/v1/batches" or not isinstance(case.body, dict):
        return case
    key = case.headers.get("Idempotency-Key") if case.headers else None
    body = case.body
    if not (isinstance(key, str) and _KEY.fullmatch(key) and set(body) == {"gateway", "batch", "credits"}
            and isinstance(body["credits"], list) and len(body["credits"]) <= 50):
        return case
    pick = random.Random(key + json.dumps(body, sort_keys=True, default=str))
    credits = body["credits"]
    if pick.random() < 0.5:
        credits = [c for segment in pick.sample(_SEGMENTS, pick.randint(1, 3)) for c in segment]
    content = json.dumps({"gateway": GW, "credits": credits}, sort_keys=True, default=str).encode()
    unique = f"{key[:150]}.{hashlib.sha256(content).hexdigest()[:16]}"
    case.headers["Idempotency-Key"] = unique
    case.body = {"gateway": GW, "batch": unique, "credits": credits}
    return case


def _own_meter(case: Any) -> Any:
    """Most reads ask for the run's gateway and one of its meters (else all would be 403: another gateway's)."""
    params = case.path_parameters
    if not (isinstance(params, dict) and isinstance(params.get("gateway"), str)):
        return case
    pick = random.Random(json.dumps(params, sort_keys=True, default=str))
    if pick.random() < 0.7:
        case.path_parameters = {"gateway": GW, "meter": pick.choice(["m0", "m1", "m2", str(params.get("meter"))])}
    return case
