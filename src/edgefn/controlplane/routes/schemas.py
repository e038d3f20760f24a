"""Bodies of the routes endpoints."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from edgefn.contract import HTTP_METHODS, JsonInt
from edgefn.controlplane.auth.schemas import StrictModel
from edgefn.controlplane.fields import Id, pattern
from edgefn.controlplane.functions.schemas import Selector, check_selector

METHODS = HTTP_METHODS
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?"
# No port: nodes match the request's host without its port, and refuse a route
# table holding one (every tenant's routes would stop updating on that node).
HOST_PATTERN = pattern(
    rf"^(\*|(\*\.)?{_LABEL}(\.{_LABEL})*)$",
    "an exact host, `*`, or `*.example.com`",
)
NAMED_HOST_PATTERN = pattern(
    rf"^(\*\.)?{_LABEL}(\.{_LABEL})*$", "an exact host or `*.example.com`"
)
# Exact, or a prefix ending in `/*`; no space, control character, `?` or `#`.
PATH_PATTERN = pattern(
    r"^(/\*|/[^*?#\x00-\x20\x7f]*(/\*)?)$",
    "a path starting with / that may only end in /* as a wildcard",
)
# A method name in any case (ECMA patterns have no case-insensitive flag).
METHOD_PATTERN = pattern(
    "^(" + "|".join("".join(f"[{c}{c.lower()}]" for c in m) for m in METHODS) + ")$",
    f"one of {', '.join(METHODS)}",
)

Method = Annotated[str, Field(pattern=METHOD_PATTERN, description=f"one of {', '.join(METHODS)}")]


class RouteIn(StrictModel):
    host: str = Field(
        min_length=1,
        max_length=255,
        pattern=HOST_PATTERN,
        description="exact, `*`, or `*.example.com`",
    )
    path: str = Field(
        min_length=1,
        max_length=1000,
        pattern=PATH_PATTERN,
        description="exact, or a prefix ending `/*`",
    )
    function_id: Id
    methods: list[Method] = Field(
        default_factory=lambda: list(METHODS), min_length=1, max_length=len(METHODS)
    )
    pop_selector: Selector | None = None
    priority: JsonInt = Field(0, ge=-1_000_000, le=1_000_000)

    _selector = field_validator("pop_selector")(check_selector)

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        return value.lower()

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: list[str]) -> list[str]:
        return sorted({m.upper() for m in value})


class RouteOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    host: str
    path: str
    function_id: str
    methods: list[str]
    pop_selector: str | None
    priority: int
    created_at: dt.datetime
    # False when its project does not hold the route's claim (docs/api.md, Route
    # tenancy and claims): the route then reaches no node.
    serving: bool = True


class _ClaimFields(StrictModel):
    project_id: Id
    pinned: StrictBool = Field(True, description="kept when the project's last route under it goes")


class PathClaimIn(_ClaimFields):
    """A path on the shared `*` host (exact, or `prefix/*`)."""

    host: Literal["*"]
    path: str = Field(min_length=1, max_length=1000, pattern=PATH_PATTERN)


class HostClaimIn(_ClaimFields):
    """A whole host: exact or `*.example.com` (its path, if given, is `/*`)."""

    host: str = Field(min_length=1, max_length=255, pattern=NAMED_HOST_PATTERN)
    path: Literal["/*"] | None = None

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        return value.lower()


# A claim for a project (docs/api.md, Route claims); two shapes, so that the
# OpenAPI states which paths go with which hosts.
ClaimIn = PathClaimIn | HostClaimIn


class ClaimOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    host: str
    path: str
    project_id: str
    pinned: bool
    created_at: dt.datetime
