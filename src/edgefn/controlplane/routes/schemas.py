"""Bodies of the routes endpoints."""

from __future__ import annotations

import datetime as dt
import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edgefn.controlplane.auth.schemas import StrictModel
from edgefn.controlplane.functions.schemas import check_selector

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?"
# No port: nodes match the request's host without its port, and refuse a route
# table holding one (every tenant's routes would stop updating on that node).
_HOST = re.compile(rf"^(\*|(\*\.)?{_LABEL}(\.{_LABEL})*)$")
_PATH = re.compile(r"^/[^*\s?#]*(/\*)?$|^/\*$")


def check_host(value: str) -> str:
    if not _HOST.match(value):
        raise ValueError("host must be an exact host, `*`, or `*.example.com`")
    return value.lower()


def check_path(value: str) -> str:
    if not _PATH.match(value):
        raise ValueError("path must start with / and may only end in /* as a wildcard")
    return value


class RouteIn(StrictModel):
    host: str = Field(min_length=1, max_length=255, description="exact, `*`, or `*.example.com`")
    path: str = Field(min_length=1, max_length=1000, description="exact, or a prefix ending `/*`")
    function_id: str
    methods: list[str] = Field(default_factory=lambda: list(METHODS), min_length=1)
    pop_selector: str | None = Field(None, max_length=500)
    priority: int = Field(0, ge=-1_000_000, le=1_000_000)

    _selector = field_validator("pop_selector")(check_selector)

    _host = field_validator("host")(check_host)
    _path = field_validator("path")(check_path)

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: list[str]) -> list[str]:
        upper = sorted({m.upper() for m in value})
        unknown = [m for m in upper if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown methods {unknown}; allowed: {list(METHODS)}")
        return upper


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


class ClaimIn(StrictModel):
    """A host, or a path on the `*` host, for a project (docs/api.md, Route claims)."""

    host: str = Field(min_length=1, max_length=255, description="exact, `*`, or `*.example.com`")
    path: str | None = Field(
        None, max_length=1000, description="on host `*` only: the path (exact or `prefix/*`)"
    )
    project_id: str
    pinned: bool = Field(True, description="kept when the project's last route under it goes")

    _host = field_validator("host")(check_host)

    @field_validator("path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        return None if value is None else check_path(value)

    @model_validator(mode="after")
    def _path_only_on_any_host(self) -> ClaimIn:
        if self.host == "*" and self.path is None:
            raise ValueError("a claim on host `*` names its path")
        if self.host != "*" and self.path not in (None, "/*"):
            raise ValueError("a claim on a host other than `*` takes the whole host: no path")
        return self


class ClaimOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    host: str
    path: str
    project_id: str
    pinned: bool
    created_at: dt.datetime
