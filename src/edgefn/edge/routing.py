"""Route matching on host + path (docs/edge.md, Routes) without scanning every route.

Hosts are looked up by exact name, then by wildcard suffix (longest first), then
`*`; within a host, an exact path wins, else the longest `prefix/*`, found by
walking the request path's own ancestors: the cost grows with the path's depth,
never with the number of routes. Ties go to the higher `priority`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from edgefn.edge.spec import RouteSpec


@dataclass(frozen=True, slots=True)
class RouteMatch:
    route: RouteSpec
    function_id: str


@dataclass(frozen=True, slots=True)
class MethodNotAllowed:
    allowed: tuple[str, ...]


@dataclass(slots=True)
class _PathTable:
    exact: dict[str, list[RouteSpec]] = field(default_factory=dict)
    prefix: dict[str, list[RouteSpec]] = field(default_factory=dict)

    def add(self, route: RouteSpec) -> None:
        if route.path.endswith("/*"):
            self.prefix.setdefault(route.path[:-2], []).append(route)
        else:
            self.exact.setdefault(route.path, []).append(route)

    def finish(self) -> None:
        for table in (self.exact, self.prefix):
            for routes in table.values():
                routes.sort(key=lambda r: -r.priority)  # stable: first defined wins ties

    def lookup(self, path: str) -> list[RouteSpec] | None:
        routes = self.exact.get(path)
        if routes is not None:
            return routes
        if not self.prefix:
            return None
        # `/api/*` serves `/api` and everything below `/api/`.
        candidate = path.rstrip("/") if path != "/" else ""
        while True:
            routes = self.prefix.get(candidate)
            if routes is not None:
                return routes
            if not candidate:
                return None
            candidate = candidate[: candidate.rfind("/")]


def _allows(route: RouteSpec, method: str) -> bool:
    return not route.methods or method in route.methods or (
        method == "HEAD" and "GET" in route.methods
    )


class Router:
    """An immutable routing table; build a new one when routes change."""

    def __init__(self, routes: Iterable[RouteSpec]) -> None:
        self._exact: dict[str, _PathTable] = {}
        self._wildcard: dict[str, _PathTable] = {}
        self._any: _PathTable | None = None
        self.size = 0
        for route in routes:
            self._table_for(route.host).add(route)
            self.size += 1
        for table in [*self._exact.values(), *self._wildcard.values(), self._any]:
            if table is not None:
                table.finish()

    def _table_for(self, host: str) -> _PathTable:
        if host == "*":
            if self._any is None:
                self._any = _PathTable()
            return self._any
        if host.startswith("*."):
            return self._wildcard.setdefault(host[1:], _PathTable())
        return self._exact.setdefault(host, _PathTable())

    def _host_tables(self, host: str) -> Iterable[_PathTable]:
        table = self._exact.get(host)
        if table is not None:
            yield table
        if self._wildcard:
            dot = host.find(".")
            while dot != -1:
                table = self._wildcard.get(host[dot:])
                if table is not None:
                    yield table
                dot = host.find(".", dot + 1)
        if self._any is not None:
            yield self._any

    def match(self, host: str, path: str, method: str) -> RouteMatch | MethodNotAllowed | None:
        """The route serving this request, a 405 with the allowed methods, or None (404)."""
        for table in self._host_tables(normalize_host(host)):
            routes = table.lookup(path)
            if routes is None:
                continue
            for route in routes:
                if _allows(route, method):
                    return RouteMatch(route, route.function_id)
            allowed = sorted({m for r in routes for m in r.methods})
            return MethodNotAllowed(tuple(allowed))
        return None


def normalize_host(host: str) -> str:
    """Lower-case, without the port; IPv6 literals keep their brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end != -1 else host
    colon = host.rfind(":")
    return host[:colon] if colon != -1 else host
