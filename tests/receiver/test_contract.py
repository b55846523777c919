"""``cloud_sync/openapi.yaml`` is a valid OpenAPI document and says what the receiver's code enforces.

Every answer the HTTP tests get is also checked against it (``receiver_kit.check_against_contract``):
its status must be declared for the operation and its body must match the declared schema.
"""

from __future__ import annotations

import dataclasses
import re

import httpx
import pytest
from openapi_spec_validator import validate
from receiver_kit import check_against_contract, contract

from cloud_sync import credit, receiver_intake
from cloud_sync.credit import CreditBody, Rejection


def test_the_contract_is_a_valid_openapi_document() -> None:
    validate(contract())  # raises with the path of the first problem


def test_the_contract_states_the_limits_and_domains_the_code_enforces() -> None:
    spec = contract()
    schemas = spec["components"]["schemas"]
    post = spec["paths"]["/v1/batches"]["post"]
    (key,) = post["parameters"]
    assert key["schema"]["maxLength"] == receiver_intake.MAX_KEY_CHARS
    assert key["schema"]["pattern"] == receiver_intake.KEY_PATTERN
    assert schemas["Batch"]["properties"]["credits"]["maxItems"] == receiver_intake.MAX_CREDITS
    assert schemas["Id"]["pattern"] == credit.ID_PATTERN
    assert schemas["Hash"]["pattern"] == credit.HASH_PATTERN
    assert schemas["WireCredit"]["properties"]["signature"]["pattern"] == credit.SIGNATURE_PATTERN
    fields = schemas["Credit"]["properties"]
    assert fields["gateway_key"]["pattern"] == credit.KEY_PATTERN
    body_fields = {f.name for f in dataclasses.fields(CreditBody)}
    assert {*schemas["Credit"]["required"], *schemas["Credit"]["then"]["required"]} == body_fields == set(fields)
    assert body_fields - set(schemas["Credit"]["required"]) == {"channel"}, "v1 has every field but the channel"
    assert tuple(fields["channel"]["enum"]) == credit.CHANNELS
    assert tuple(fields["v"]["enum"]) == credit.VERSIONS
    assert tuple(fields["kind"]["enum"]) == credit.KINDS
    assert tuple(fields["quality"]["enum"]) == credit.QUALITIES
    assert (schemas["Int64"]["minimum"], schemas["Int64"]["maximum"]) == (credit.INT64_MIN, credit.INT64_MAX)
    assert fields["start"]["multipleOf"] == credit.INTERVAL_S
    reasons = schemas["BatchResult"]["properties"]["results"]["items"]["properties"]["reason"]["enum"]
    assert reasons == [r.value for r in Rejection]
    for status in ("200", "400", "401", "403", "413", "415", "422", "429", "503"):
        assert status in post["responses"], status
    for path in ("/v1/summary", "/v1/gateways/{gateway}/meters/{meter}/credits"):
        assert "401" in spec["paths"][path]["get"]["responses"]
    assert re.fullmatch(receiver_intake.KEY_PATTERN, "gw-1:billing_api:1-500")


def test_the_contract_check_catches_an_undeclared_status_and_an_undeclared_body() -> None:
    request = httpx.Request("POST", "http://x/v1/batches")
    with pytest.raises(AssertionError, match="418 is not in the contract"):
        check_against_contract("post", "/v1/batches", httpx.Response(418, request=request))
    off = {"batch": "k", "results": [{"meter": 5, "seq": 1, "status": "accepted"}], "accepted": 1,
           "duplicate": 0, "rejected": 0}
    with pytest.raises(AssertionError, match="does not match the contract"):
        check_against_contract("post", "/v1/batches", httpx.Response(200, json=off, request=request))
    with pytest.raises(AssertionError, match="does not match the contract"):
        check_against_contract("post", "/v1/batches", httpx.Response(401, json={"detail": "x"}, request=request))
    check_against_contract("post", "/v1/batches", httpx.Response(401, json={"error": "x"}, request=request))
