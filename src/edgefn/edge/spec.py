"""What an edge node runs: function specs (`function.json`) and the node state.

A `function.json` in a functions directory and a deploy instruction from the
control plane both become a `FunctionSpec`; the node's whole desired state is a
`NodeState`, persisted as JSON so the node restarts from disk alone.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from edgefn.atomicfile import write_atomic
from edgefn.edge.capabilities.hosts import HostAllowlist
from edgefn.sandbox.engine import (
    DEFAULT_MAX_EXECUTION_MS,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_MEMORY_PAGES,
    Limits,
    WasiOptions,
)

# What identifies a loaded function: (id, version, sha256, digest of its settings).
SpecKey = tuple[str, str, str, str]

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_HOST = re.compile(r"(\*|(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*)")
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RouteSpec(_Strict):
    """docs/edge.md, Routes: host exact, `*` or `*.domain`; path exact or `prefix/*`."""

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


# Limits travel as int64 in the gRPC deploy instruction, and as JSON numbers in
# the API, where 2**53 - 1 is the largest integer every reader holds exactly.
_JSON_INT_MAX = 2**53 - 1
Isolation = Literal["reuse", "per-request"]


def json_integer(value: Any) -> Any:
    if isinstance(value, bool | str | bytes):
        raise ValueError("must be an integer")
    return value


# A JSON integer: `5` or `5.0`, not `false` or `"5"`, which pydantic would convert.
# Bounds go before the validator in an Annotated (after it, the OpenAPI would
# show them as pydantic's `ge`/`le` instead of `minimum`/`maximum`).
JsonInt = Annotated[int, BeforeValidator(json_integer)]
HotInstances = Annotated[int, Field(ge=0, le=_JSON_INT_MAX), BeforeValidator(json_integer)]
IdleTimeout = Annotated[float, Strict(), Field(gt=0, allow_inf_nan=False)]
RequestBytes = Annotated[int, Field(ge=0, le=_JSON_INT_MAX), BeforeValidator(json_integer)]
_Limit = Annotated[int, Field(ge=1, le=_JSON_INT_MAX), BeforeValidator(json_integer)]
Count = Annotated[int, Field(ge=0, le=_JSON_INT_MAX), BeforeValidator(json_integer)]
# A JSON number of seconds (an integer is one too), not `false` or `"5"`.
CpuSeconds = Annotated[
    float, Field(ge=0, le=_JSON_INT_MAX, allow_inf_nan=False), BeforeValidator(json_integer)
]


# `HostAllowlist` decides what an entry may be, which no pattern states; the
# OpenAPI document names it as a format.
AllowEntry = Annotated[
    str,
    WithJsonSchema(
        {
            "type": "string",
            "format": "host-allowlist-entry",
            "description": "`*`, `*.example.com`, a host name, or an IP address in canonical form",
        }
    ),
]

# The absolute bounds of a function's engine limits: what no node and no control plane
# accepts, whatever its operator sets (the operator's `ResourceCaps` sit below them).
# The deploy instruction carries these three as int32.
# 4 GiB, all a wasm32 memory addresses
MemoryPages = Annotated[int, Field(ge=1, le=65536), BeforeValidator(json_integer)]
ExecutionMs = Annotated[int, Field(ge=1, le=600_000), BeforeValidator(json_integer)]  # 10 min
ResponseBytes = Annotated[int, Field(ge=1, le=64 * 1024 * 1024), BeforeValidator(json_integer)]


class KvPolicy(_Strict):
    enabled: StrictBool = False
    max_key_bytes: _Limit = 512
    max_value_bytes: _Limit = 64 * 1024
    max_keys: _Limit = 10_000
    max_ttl_seconds: _Limit = 30 * 86400


class HttpFetchPolicy(_Strict):
    # Hosts the function may reach; `*.example.com` matches subdomains. Empty: none.
    allow_hosts: tuple[AllowEntry, ...] = Field(default=(), max_length=256)
    # Asks for the non-public networks the node's operator opened (`edgefn edge serve
    # --allow-private-egress CIDR`); alone, on a node that opened none, it reaches nothing
    # more (docs/security.md, Egress).
    allow_private: StrictBool = False
    max_response_bytes: _Limit = 1024 * 1024
    max_redirects: JsonInt = Field(default=3, ge=0, le=10)

    @field_validator("allow_hosts")
    @classmethod
    def _allow_hosts(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        """`*`, `*.domain`, a name or an IP address; what `HostAllowlist` reads, checked by it."""
        normalized = tuple(entry.strip().lower() for entry in v)
        HostAllowlist(normalized)  # raises ValueError naming the bad entry
        return normalized


# A secret's name: what `secret_get` asks for and `POST /projects/{id}/secrets` stores.
SecretName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
MAX_SECRETS_PER_FUNCTION = 64


class FunctionPolicy(_Strict):
    """What a function may use and how its instances are kept, deny by default.

    The same fields in `function.json`, on a control-plane function and in its
    deploy instruction; the control plane validates them with this model.
    """

    max_request_bytes: RequestBytes | None = None
    kv: KvPolicy = KvPolicy()
    http_fetch: HttpFetchPolicy = HttpFetchPolicy()
    isolation: Isolation = "reuse"
    min_hot_instances: HotInstances = 1
    max_hot_instances: HotInstances = 10
    idle_timeout_s: IdleTimeout = 300.0
    # Names of the project's secrets the function may read with `secret_get`; values
    # never travel with the spec (docs/security.md, Secrets).
    secrets: tuple[SecretName, ...] = Field(default=(), max_length=MAX_SECRETS_PER_FUNCTION)

    @field_validator("secrets")
    @classmethod
    def _secrets(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(sorted(set(v)))


POLICY_FIELDS: tuple[str, ...] = tuple(FunctionPolicy.model_fields)


class FunctionSpec(FunctionPolicy):
    """One deployable function version and everything the node needs to run it
    (its policy fields are inherited from `FunctionPolicy`)."""

    id: str
    name: str = ""
    # The tenant whose routes, quotas, logs and metrics this function counts in;
    # "" for a function served from a local directory without one.
    project_id: str = ""
    version: str = "0.0.0"
    entrypoint: str = "handle"
    abi: Literal["edge-v1", "wagi", ""] = ""
    artifact: str = ""
    artifact_url: str = ""
    sha256: str = ""
    memory_pages: MemoryPages = DEFAULT_MEMORY_PAGES
    max_execution_ms: ExecutionMs = DEFAULT_MAX_EXECUTION_MS
    max_response_bytes: ResponseBytes = DEFAULT_MAX_RESPONSE_BYTES
    pop_selector: str = ""
    env: dict[str, str] = Field(default_factory=dict)
    config_dir: str | None = None
    routes: tuple[RouteSpec, ...] = ()

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not _ID.fullmatch(v):
            raise ValueError(f"invalid function id {v!r}")
        return v

    @field_validator("sha256")
    @classmethod
    def _sha(cls, v: str) -> str:
        v = v.lower()
        if v and not _SHA256.fullmatch(v):
            raise ValueError("sha256 must be 64 hex digits")
        return v

    @property
    def limits(self) -> Limits:
        return Limits(
            memory_pages=self.memory_pages,
            max_execution_ms=self.max_execution_ms,
            max_response_bytes=self.max_response_bytes,
        )

    @property
    def wasi(self) -> WasiOptions:
        return WasiOptions(env=tuple(sorted(self.env.items())), config_dir=self.config_dir)

    @property
    def key(self) -> SpecKey:
        """What identifies a loaded function: its module (id, version, sha256) and a
        digest of every setting it runs with, so the same version deployed again
        with a new policy, env or limit is loaded afresh. Routes are left out: they
        do not change how it runs. A few microseconds (a serialization): callers
        compute it once per state, never per request."""
        settings = self.model_dump_json(exclude={"routes"}).encode()
        return (self.id, self.version, self.sha256, hashlib.sha256(settings).hexdigest())


class ResourceCaps(_Strict):
    """The most a function may ask for where these caps apply, set by the operator of a
    node (`edgefn edge serve --cap-*`) or of a cluster (`edgefn cp serve --cap-*`).

    The defaults are sized for a node shared by many tenants; each cap can be raised
    up to the absolute bound of its field, never past it. A function over a cap is
    refused whole (400 at the control plane, a deploy error on a node), never
    silently clamped: it would then fail later in ways its author cannot see.
    """

    memory_pages: MemoryPages = 1024  # 64 MiB of linear memory per instance
    max_execution_ms: ExecutionMs = 30_000
    max_response_bytes: ResponseBytes = 8 * 1024 * 1024
    max_request_bytes: RequestBytes = 8 * 1024 * 1024
    # Per function and worker; also caps min_hot_instances, which are kept warm.
    max_hot_instances: HotInstances = 16
    # http_fetch.max_response_bytes: what one outgoing fetch may bring into memory.
    max_fetch_response_bytes: _Limit = 8 * 1024 * 1024

    @staticmethod
    def _asked(limits: Limits, policy: FunctionPolicy) -> tuple[tuple[str, int | None, str], ...]:
        """Each capped field of a function: its name, its value, the cap bounding it."""
        return (
            ("memory_pages", limits.memory_pages, "memory_pages"),
            ("max_execution_ms", limits.max_execution_ms, "max_execution_ms"),
            ("max_response_bytes", limits.max_response_bytes, "max_response_bytes"),
            ("max_request_bytes", policy.max_request_bytes, "max_request_bytes"),
            ("min_hot_instances", policy.min_hot_instances, "max_hot_instances"),
            ("max_hot_instances", policy.max_hot_instances, "max_hot_instances"),
            ("http_fetch.max_response_bytes", policy.http_fetch.max_response_bytes,
             "max_fetch_response_bytes"),
        )

    @model_validator(mode="after")
    def _not_below_the_defaults(self) -> ResourceCaps:
        """A cap below what a function gets when it leaves the field out would refuse
        every such function."""
        defaults = FunctionSpec(id="defaults")
        low = [
            f"{cap} {getattr(self, cap)} (functions default to {value})"
            for _, value, cap in self._asked(defaults.limits, defaults)
            if value is not None and getattr(self, cap) < value
        ]
        if low:
            raise ValueError("caps below the function defaults: " + ", ".join(dict.fromkeys(low)))
        return self

    def excess(self, limits: Limits, policy: FunctionPolicy) -> str:
        """What of a function (its engine limits and policy) is over these caps, as one
        clause per field; empty when nothing is."""
        return "; ".join(
            f"{name} {value} is over the cap of {getattr(self, cap)}"
            for name, value, cap in self._asked(limits, policy)
            if value is not None and value > getattr(self, cap)
        )


class QuotaSpec(_Strict):
    """A project's quotas as the admin set them; a field left out (None) takes the
    node's default (docs/edge.md, Quotas). Zero stops the project."""

    max_concurrency: Count | None = None
    invocations_per_minute: Count | None = None
    cpu_seconds_per_day: CpuSeconds | None = None


class NodeState(_Strict):
    """The node's desired state: functions with their local artifacts, and routes."""

    generation: int = 0
    functions: tuple[FunctionSpec, ...] = ()
    # The node's route table from the control plane (each route names its function);
    # functions from a local directory carry their own routes instead.
    route_table: tuple[RouteSpec, ...] = ()
    # Functions known to the node but not runnable (yet): routes to them answer 503.
    unavailable: dict[str, str] = Field(default_factory=dict)
    # Quotas the control plane set, by project id; other projects get the node's defaults.
    quotas: dict[str, QuotaSpec] = Field(default_factory=dict)

    def routes(self) -> list[RouteSpec]:
        out = list(self.route_table)
        for fn in self.functions:
            for r in fn.routes:
                # A function's own routes are its project's, whatever they say.
                update = {"function_id": r.function_id or fn.id, "project_id": fn.project_id}
                out.append(r.model_copy(update=update))
        return out


def load_function_dir(path: Path) -> FunctionSpec:
    """Read `function.json` from a function's folder; the artifact path becomes absolute."""
    manifest = path / "function.json"
    try:
        raw = json.loads(manifest.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{manifest}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"{manifest}: expected a JSON object")
    artifact = raw.get("artifact") or next((p.name for p in sorted(path.glob("*.wasm"))), "")
    if not artifact:
        raise ValueError(f"{path}: no artifact named and no .wasm file found")
    raw["artifact"] = str((path / artifact).resolve())
    raw.setdefault("id", path.name)
    raw.setdefault("name", raw["id"])
    return FunctionSpec.model_validate(raw)


def write_state(path: Path, state: NodeState) -> None:
    """Atomic replace: readers see the old file or the new one, never half of one."""
    write_atomic(path, [state.model_dump_json(indent=1).encode()])


def read_state(path: Path) -> NodeState:
    return NodeState.model_validate_json(path.read_bytes())
