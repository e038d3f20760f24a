"""Request and response bodies of functions and versions."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from edgefn.contract import (
    MAX_SECRETS_PER_FUNCTION,
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
from edgefn.controlplane.auth.schemas import StrictModel
from edgefn.controlplane.fields import (
    ONLY_PATTERN_KEYS,
    SEMVER_PATTERN,
    Id,
    Line,
    Text,
    drop_null_defaults,
    omitted,
    pattern,
)
from edgefn.controlplane.functions.models import FunctionVersion
from edgefn.controlplane.selector import parse_selector
from edgefn.sandbox.engine import (
    DEFAULT_MAX_EXECUTION_MS,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_MEMORY_PAGES,
)

# For `fullmatch` (a `$` read by `re.match` would take a trailing newline).
SEMVER = re.compile(SEMVER_PATTERN)

Name = Field(
    min_length=1,
    max_length=100,
    pattern=pattern(
        r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$",
        "lower-case letters, digits and inner `-`",
    ),
)
# A WASI environment entry is `NAME=value` in a C string.
EnvName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=256,
        pattern=pattern(r"^[^=\x00-\x1f\x7f]+$", "a name without `=` or control characters"),
    ),
]
Env = Annotated[
    dict[EnvName, Annotated[Text, Field(max_length=16_384)]],
    Field(max_length=256, json_schema_extra=ONLY_PATTERN_KEYS),
]
Entrypoint = Annotated[Line, Field(min_length=1, max_length=100)]
# The grammar (controlplane/selector.py) is more than a pattern can say, so the
# document names it as a format (with its length limit) and the parser enforces
# it (400 invalid_selector); pattern and length are checked here all the same.
Selector = Annotated[
    Line,
    Field(max_length=500),
    WithJsonSchema(
        {
            "type": "string",
            "format": "pop-selector",
            "description": "a pop_selector expression of at most 500 characters, "
            "e.g. `region in ['tokyo','osaka'] and latency<30`",
        }
    ),
]


def check_selector(value: str | None) -> str | None:
    if value is not None:
        parse_selector(value)  # raises InvalidSelector, a 400
    return value


class _FunctionFields(StrictModel):
    entrypoint: Entrypoint = "handle"
    runtime: Literal["wasm", "wasm-aot"] = "wasm"
    # The absolute bounds are the contract's (`edgefn.contract.limits`); the cluster's caps
    # (`CPSettings.caps`), below them, are checked by the service.
    max_execution_ms: ExecutionMs = DEFAULT_MAX_EXECUTION_MS
    memory_pages: MemoryPages = DEFAULT_MEMORY_PAGES
    max_response_bytes: ResponseBytes = DEFAULT_MAX_RESPONSE_BYTES
    pop_selector: Selector | None = None
    env: Env = Field(default_factory=dict)

    _selector = field_validator("pop_selector")(check_selector)


class FunctionIn(_FunctionFields, FunctionPolicy):
    """The policy fields (and their validation) are the contract's `FunctionPolicy`."""

    name: str = Name
    owner_project_id: Id | None = None


class FunctionPatch(StrictModel):
    """Each field given replaces the function's value; `kv` and `http_fetch` are
    replaced whole. The merged policy is validated by `FunctionPolicy`. Only
    `pop_selector` (no selector) and `max_request_bytes` (the node's limit) take
    null; any other field may be left out, not nulled."""

    model_config = ConfigDict(json_schema_extra=drop_null_defaults)

    entrypoint: Entrypoint = omitted()
    runtime: Literal["wasm", "wasm-aot"] = omitted()
    max_execution_ms: ExecutionMs = omitted()
    memory_pages: MemoryPages = omitted()
    max_response_bytes: ResponseBytes = omitted()
    pop_selector: Selector | None = None
    env: Env = omitted()
    max_request_bytes: RequestBytes | None = None
    kv: KvPolicy = omitted()
    http_fetch: HttpFetchPolicy = omitted()
    isolation: Isolation = omitted()
    min_hot_instances: HotInstances = omitted()
    max_hot_instances: HotInstances = omitted()
    idle_timeout_s: IdleTimeout = omitted()
    secrets: list[SecretName] = omitted(max_length=MAX_SECRETS_PER_FUNCTION)

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
    urls: list[str] | None = Field(
        None,
        description="Where the function is served: each route that serves it on the "
        "edge's URL (EDGEFN_EDGE_URL), e.g. `https://edge.example.com/hello`; a "
        "`*.example.com` host stays a pattern. Null when the control plane has no edge "
        "URL, and in listings.",
    )
    edge_url: str | None = Field(
        None, description="The edge's URL the `urls` are on (EDGEFN_EDGE_URL), or null."
    )


class DataOut(BaseModel):
    """A version's data archive: its sha256, size and mount map."""

    sha256: str
    size: int
    mounts: dict[str, str]


class VersionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    function_id: str
    version: str
    sha256: str
    size: int
    artifact_url: str
    abi: str
    created_at: dt.datetime
    # The version's data archive (docs/wagi.md, Volumes); null without one.
    data: DataOut | None = None

    @model_validator(mode="before")
    @classmethod
    def _data(cls, row: Any) -> Any:
        if isinstance(row, FunctionVersion):
            archive = row.data_archive()
            return {**{k: getattr(row, k) for k in cls.model_fields if k != "data"},
                    "data": None if archive is None else
                    DataOut(sha256=archive.sha256, size=archive.size, mounts=archive.mounts)}
        return row

