"""Request and response bodies of functions and versions."""

from __future__ import annotations

import datetime as dt
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edgefn.controlplane.auth.schemas import StrictModel
from edgefn.controlplane.selector import parse_selector
from edgefn.edge.spec import (
    ExecutionMs,
    FunctionPolicy,
    HotInstances,
    HttpFetchPolicy,
    IdleTimeout,
    Isolation,
    KvPolicy,
    MemoryPages,
    RequestBytes,
    ResponseBytes,
    SecretName,
)
from edgefn.sandbox.engine import (
    DEFAULT_MAX_EXECUTION_MS,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_MEMORY_PAGES,
)

# semver.org's own expression, anchored.
SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)

Name = Field(min_length=1, max_length=100, pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


def check_selector(value: str | None) -> str | None:
    if value is not None:
        parse_selector(value)  # raises InvalidSelector, a 400
    return value


class _FunctionFields(StrictModel):
    entrypoint: str = Field("handle", min_length=1, max_length=100)
    runtime: Literal["wasm", "wasm-aot"] = "wasm"
    # The absolute bounds are the edge's (`edgefn.edge.spec`); the cluster's caps
    # (`CPSettings.caps`), below them, are checked by the service.
    max_execution_ms: ExecutionMs = DEFAULT_MAX_EXECUTION_MS
    memory_pages: MemoryPages = DEFAULT_MEMORY_PAGES
    max_response_bytes: ResponseBytes = DEFAULT_MAX_RESPONSE_BYTES
    pop_selector: str | None = Field(None, max_length=500)
    env: dict[str, str] = Field(default_factory=dict)

    _selector = field_validator("pop_selector")(check_selector)


class FunctionIn(_FunctionFields, FunctionPolicy):
    """The policy fields (and their validation) are the edge's `FunctionPolicy`."""

    name: str = Name
    owner_project_id: str | None = None


class FunctionPatch(StrictModel):
    """Each field given replaces the function's value; `kv` and `http_fetch` are
    replaced whole. The merged policy is validated by `FunctionPolicy`."""

    entrypoint: str | None = Field(None, min_length=1, max_length=100)
    runtime: Literal["wasm", "wasm-aot"] | None = None
    max_execution_ms: ExecutionMs | None = None
    memory_pages: MemoryPages | None = None
    max_response_bytes: ResponseBytes | None = None
    pop_selector: str | None = Field(None, max_length=500)
    env: dict[str, str] | None = None
    max_request_bytes: RequestBytes | None = None
    kv: KvPolicy | None = None
    http_fetch: HttpFetchPolicy | None = None
    isolation: Isolation | None = None
    min_hot_instances: HotInstances | None = None
    max_hot_instances: HotInstances | None = None
    idle_timeout_s: IdleTimeout | None = None
    secrets: list[SecretName] | None = None

    _selector = field_validator("pop_selector")(check_selector)


class FunctionOut(FunctionPolicy):
    id: str
    name: str
    owner_project_id: str
    entrypoint: str
    runtime: str
    max_execution_ms: int
    memory_pages: int
    max_response_bytes: int
    pop_selector: str | None
    env: dict[str, str]
    active_version: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    upload_url: str | None = Field(
        None,
        description="Short-lived URL to PUT a module to; then POST /versions with only "
        "`version`. Null for callers who may not upload.",
    )


class VersionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    function_id: str
    version: str
    sha256: str
    size: int
    artifact_url: str
    abi: str
    created_at: dt.datetime
