"""How much a function may ask for: the absolute bounds of its engine limits, the
operator's `ResourceCaps` below them, and a project's `QuotaSpec`.

The bounds are one set, enforced by both sides: the control plane refuses a function
past them with 400 and a node refuses a deploy past them; each operator's caps sit
below them. The deploy instruction carries the three engine limits as int32.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Field, model_validator

from edgefn.contract._base import Record
from edgefn.contract.numbers import (
    Count,
    CpuSeconds,
    HotInstances,
    Limit,
    RequestBytes,
    json_integer,
)
from edgefn.contract.policy import FunctionPolicy
from edgefn.sandbox.engine import (
    DEFAULT_MAX_EXECUTION_MS,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_MEMORY_PAGES,
    Limits,
)

__all__ = [
    "DEFAULT_MAX_EXECUTION_MS",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_MEMORY_PAGES",
    "ExecutionMs",
    "Limits",
    "MemoryPages",
    "QuotaSpec",
    "ResourceCaps",
    "ResponseBytes",
]

# 4 GiB, all a wasm32 memory addresses
MemoryPages = Annotated[int, Field(ge=1, le=65536), BeforeValidator(json_integer)]
ExecutionMs = Annotated[int, Field(ge=1, le=600_000), BeforeValidator(json_integer)]  # 10 min
ResponseBytes = Annotated[int, Field(ge=1, le=64 * 1024 * 1024), BeforeValidator(json_integer)]


class ResourceCaps(Record):
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
    max_fetch_response_bytes: Limit = 8 * 1024 * 1024

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
        low = [
            f"{cap} {getattr(self, cap)} (functions default to {value})"
            for _, value, cap in self._asked(Limits(), FunctionPolicy())
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


class QuotaSpec(Record):
    """A project's quotas as the admin set them; a field left out (None) takes the
    node's default (docs/edge.md, Quotas). Zero stops the project."""

    max_concurrency: Count | None = None
    invocations_per_minute: Count | None = None
    cpu_seconds_per_day: CpuSeconds | None = None
