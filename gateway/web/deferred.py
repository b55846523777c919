"""Routes whose module is imported at their first request, not when the app is built.

The reports and bills routes (projections, interval exports, issued bills) pull in the billing
engine, the exporters (Green Button's XML among them) and the reports service: about 2 MiB of a
box's memory that a status page, the API and the metrics never need. Their paths are declared here,
so the app's routing table is complete (and ordered) from the start; each path's real route is built
on first use and handles the request itself, method checks (405) included. The declared paths are
checked against the built ones, so the two lists cannot drift apart silently.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send


class DeferredRoutes:
    """``paths`` stand for the routes ``build()`` returns, built once at the first request to any of them."""

    def __init__(self, paths: Sequence[str], build: Callable[[], list[BaseRoute]]) -> None:
        self.paths = tuple(paths)
        self._build = build
        self._by_path: dict[str, Route] | None = None

    def routes(self) -> list[Route]:
        return [Route(path, endpoint=_Endpoint(self, path)) for path in self.paths]

    def built(self) -> dict[str, Route]:
        if self._by_path is None:
            routes = self._build()
            by_path = {r.path: r for r in routes if isinstance(r, Route)}
            if len(by_path) != len(routes) or set(by_path) != set(self.paths):
                raise RuntimeError(f"deferred routes declare {sorted(self.paths)} but the module has "
                                   f"{sorted(by_path)}: update the declaration")
            self._by_path = by_path
        return self._by_path


class _Endpoint:
    """An ASGI app standing for one declared path until its real route exists."""

    def __init__(self, group: DeferredRoutes, path: str) -> None:
        self.group = group
        self.path = path
        self.__name__ = f"deferred:{path}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.group.built()[self.path].handle(scope, receive, send)
