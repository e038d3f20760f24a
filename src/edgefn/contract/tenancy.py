"""The tenancy rule of routes, shared by the control plane and the edge's router
(docs/security.md, Route tenancy): a host other than `*` belongs to one project,
and so does each path on the shared `*` host.

A route claims its host, or on `*` its path; two projects' claims may never
overlap. The control plane refuses the second with 409; the router drops it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

# The whole of a host: what a route on a host other than `*` claims.
WHOLE_HOST = "/*"
Namespace = Literal["host", "path"]


@dataclass(frozen=True, slots=True)
class Claim:
    """What a route takes: a host name (exact, or every name below a `*.` wildcard),
    or a path on the `*` host (exact, or a `prefix/*` with everything below it)."""

    namespace: Namespace
    key: str
    subtree: bool


def claim_of(host: str, path: str) -> Claim:
    if host == "*":
        if path.endswith("/*"):
            return Claim("path", path[:-2], True)  # `/api/*` serves `/api` and below
        return Claim("path", path, False)
    if host.startswith("*."):
        return Claim("host", host[2:], True)  # `*.example.com` serves names below only
    return Claim("host", host, False)


def claim_key(host: str, path: str) -> tuple[str, str]:
    """The (host, path) a route's claim is recorded under: the host alone for a host
    other than `*` (path `/*`, the whole host), the path too on `*`."""
    return (host, path) if host == "*" else (host, WHOLE_HOST)


def _ancestors(namespace: Namespace, key: str) -> Iterator[str]:
    """Proper ancestors, nearest first: `b.c`, `c` for `a.b.c`; `/a`, `` for `/a/b`."""
    if namespace == "host":
        dot = key.find(".")
        while dot != -1:
            yield key[dot + 1 :]
            dot = key.find(".", dot + 1)
    else:
        while key:
            key = key[: key.rfind("/")]
            yield key


class Claims:
    """Claims held by projects; answers who else holds one that overlaps a new claim.

    Two claims overlap when some request could be served by both: equal names or
    paths, a name below a wildcard, a path inside a prefix, a prefix inside another.
    A `*.example.com` wildcard covers every name below `example.com` (at any depth)
    but not `example.com` itself; `/api/*` covers `/api` and everything below it.
    Cost per check and per add: the depth of the name or path.
    """

    def __init__(self) -> None:
        self._point: dict[tuple[Namespace, str], str] = {}
        self._subtree: dict[tuple[Namespace, str], str] = {}
        # Projects holding a claim strictly below a key.
        self._below: dict[tuple[Namespace, str], set[str]] = {}

    def other_holder(self, claim: Claim, project: str) -> str | None:
        """A project other than `project` holding a claim that overlaps `claim`, or None."""
        ns, key = claim.namespace, claim.key
        inclusive = ns == "path"  # a path prefix covers its own path; a wildcard does not
        found = [self._subtree.get((ns, a)) for a in _ancestors(ns, key)]
        if claim.subtree:
            found.append(self._subtree.get((ns, key)))
            found.extend(self._below.get((ns, key), ()))
            if inclusive:
                found.append(self._point.get((ns, key)))
        else:
            found.append(self._point.get((ns, key)))
            if inclusive:
                found.append(self._subtree.get((ns, key)))
        return next((p for p in found if p is not None and p != project), None)

    def add(self, claim: Claim, project: str) -> None:
        ns, key = claim.namespace, claim.key
        (self._subtree if claim.subtree else self._point).setdefault((ns, key), project)
        for ancestor in _ancestors(ns, key):
            self._below.setdefault((ns, ancestor), set()).add(project)
