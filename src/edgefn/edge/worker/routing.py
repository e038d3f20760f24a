"""Route matching on host + path (docs/edge.md, Routes) without scanning every route.

Hosts are looked up by exact name, then by wildcard suffix (longest first), then
`*`; within a host, an exact path wins, else the longest `prefix/*`, found by
walking the request path's own ancestors: the cost grows with the path's depth,
never with the number of routes. Ties go to the higher `priority`.

Tenancy (contract/tenancy.py, docs/security.md) is decided once, when the table is
built: a route whose function belongs to another project, or whose host or `*`
path overlaps one an earlier route of another project took, is dropped with a
logged error and `edge_routes_dropped`. Table order decides who was first (the
control plane sends routes sorted by host, path, priority and id, so every node
decides alike). A host some project routes is served by that project's routes
only: its host routes, then its own `*` routes; `*` routes of other projects
serve hosts nobody routes. A request costs what it did before.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from edgefn.contract import RouteSpec
from edgefn.contract.tenancy import Claims, claim_of
from edgefn.edge.metrics import ROUTES_DROPPED

log = logging.getLogger("edgefn.edge.worker.routing")


@dataclass(frozen=True, slots=True)
class RouteMatch:
    route: RouteSpec
    function_id: str


@dataclass(frozen=True, slots=True)
class MethodNotAllowed:
    allowed: tuple[str, ...]


@dataclass(slots=True)
class _PathTable:
    project: str = ""
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
    """An immutable routing table; build a new one when routes change.

    `function_projects` maps function ids to their project: a route to a function
    of another project than its own is dropped (functions it does not name are
    checked by the runtime, which answers 404 or 503 for them).
    """

    def __init__(
        self, routes: Iterable[RouteSpec], function_projects: Mapping[str, str] | None = None
    ) -> None:
        self._exact: dict[str, _PathTable] = {}
        self._wildcard: dict[str, _PathTable] = {}
        self._any: _PathTable | None = None
        # The `*` routes of each project: what a host that project holds falls back to.
        self._any_of: dict[str, _PathTable] = {}
        self.size = 0
        for route in _tenant_safe(routes, function_projects or {}):
            if route.host == "*":
                self._any_of.setdefault(route.project_id, _PathTable(route.project_id)).add(route)
            self._table_for(route).add(route)
            self.size += 1
        for table in [*self._exact.values(), *self._wildcard.values(), *self._any_of.values()]:
            table.finish()
        if self._any is not None:
            self._any.finish()

    def _table_for(self, route: RouteSpec) -> _PathTable:
        host = route.host
        if host == "*":
            if self._any is None:
                self._any = _PathTable()
            return self._any
        if host.startswith("*."):
            return self._wildcard.setdefault(host[1:], _PathTable(route.project_id))
        return self._exact.setdefault(host, _PathTable(route.project_id))

    def _host_tables(self, host: str) -> Iterator[_PathTable]:
        # Every table found for a host has one project: `_tenant_safe` saw to it.
        held: _PathTable | None = self._exact.get(host)
        if held is not None:
            yield held
        if self._wildcard:
            dot = host.find(".")
            while dot != -1:
                table = self._wildcard.get(host[dot:])
                if table is not None:
                    held = held or table
                    yield table
                dot = host.find(".", dot + 1)
        if held is None:
            if self._any is not None:
                yield self._any
        else:
            own = self._any_of.get(held.project)
            if own is not None:
                yield own

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


def _tenant_safe(
    routes: Iterable[RouteSpec], function_projects: Mapping[str, str]
) -> Iterator[RouteSpec]:
    """The routes that keep tenants apart, in table order; the others are dropped."""
    claims = Claims()
    for route in routes:
        owner = function_projects.get(route.function_id, route.project_id)
        if owner != route.project_id:
            _drop(route, "function_of_another_project", owner)
            continue
        claim = claim_of(route.host, route.path)
        holder = claims.other_holder(claim, route.project_id)
        if holder is not None:
            _drop(route, "claimed_by_another_project", holder)
            continue
        claims.add(claim, route.project_id)
        yield route


def _drop(route: RouteSpec, reason: str, other_project: str) -> None:
    ROUTES_DROPPED.labels(reason=reason).inc()
    log.error(
        "route %s (%s%s, project %r, function %s) dropped: %s (project %r)",
        route.id or "-",
        route.host,
        route.path,
        route.project_id,
        route.function_id,
        reason,
        other_project,
    )


def normalize_host(host: str) -> str:
    """Lower-case, without the port; IPv6 literals keep their brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end != -1 else host
    colon = host.rfind(":")
    return host[:colon] if colon != -1 else host
