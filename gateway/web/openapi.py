"""``GET /api/v1/openapi.yaml``: the local API's contract, served by the box it describes.

The document (``gateway/web/openapi.yaml``, package data) is what a technician's tool or a central
system that pulls reads to know the API; serving it from the box means the document a client gets
is the one of the version running there. It needs no token: it describes the API and holds nothing
of the site. ``tests/web/test_api_contract.py`` validates it and holds the app to it with schemathesis.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

OPENAPI_PATH = "/api/v1/openapi.yaml"


@cache
def openapi_document() -> bytes:
    return files("gateway.web").joinpath("openapi.yaml").read_bytes()


async def _openapi(_: Request) -> Response:
    return Response(openapi_document(), media_type="application/yaml")


def openapi_routes() -> list[Route]:
    """The route serving the document, to be mounted next to ``create_app``'s own."""
    return [Route(OPENAPI_PATH, _openapi, methods=["GET"])]
