"""Bodies of the routes endpoints."""

from __future__ import annotations

import datetime as dt
import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edgefn.controlplane.auth.schemas import StrictModel
from edgefn.controlplane.functions.schemas import check_selector

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?"
_HOST = re.compile(rf"^(\*|(\*\.)?{_LABEL}(\.{_LABEL})*(:\d{{1,5}})?)$")
_PATH = re.compile(r"^/[^*\s?#]*(/\*)?$|^/\*$")


class RouteIn(StrictModel):
    host: str = Field(min_length=1, max_length=255, description="exact, `*`, or `*.example.com`")
    path: str = Field(min_length=1, max_length=1000, description="exact, or a prefix ending `/*`")
    function_id: str
    methods: list[str] = Field(default_factory=lambda: list(METHODS), min_length=1)
    pop_selector: str | None = Field(None, max_length=500)
    priority: int = Field(0, ge=-1_000_000, le=1_000_000)

    _selector = field_validator("pop_selector")(check_selector)

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if not _HOST.match(value):
            raise ValueError("host must be an exact host, `*`, or `*.example.com`")
        return value.lower()

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not _PATH.match(value):
            raise ValueError("path must start with / and may only end in /* as a wildcard")
        return value

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
