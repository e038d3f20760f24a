"""A route as both sides read it: host and path patterns, methods, priority, and the
project it serves for (docs/edge.md, Routes)."""

from __future__ import annotations

import re

from pydantic import field_validator

from edgefn.contract._base import Record

_HOST = re.compile(r"(\*|(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*)")
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


class RouteSpec(Record):
    """Host exact, `*` or `*.domain`; path exact or `prefix/*`."""

    id: str = ""
    host: str = "*"
    path: str
    methods: tuple[str, ...] = ()
    priority: int = 0
    function_id: str = ""
    # The tenant: the project owning `function_id` ("" for a local functions directory).
    project_id: str = ""

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        v = v.lower()
        if not _HOST.fullmatch(v):
            raise ValueError(f"invalid route host {v!r}")
        return v

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/") or "*" in v[:-1] or (v.endswith("*") and not v.endswith("/*")):
            raise ValueError(f"invalid route path {v!r}: exact, or a prefix ending in /*")
        return v

    @field_validator("methods")
    @classmethod
    def _methods(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        upper = tuple(m.upper() for m in v)
        bad = [m for m in upper if m not in HTTP_METHODS]
        if bad:
            raise ValueError(f"unknown HTTP methods {bad}")
        return upper
