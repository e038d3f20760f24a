"""A node's invocation figures for one version of a function, as it reports them in
its heartbeats and the control plane's rollouts compare them."""

from __future__ import annotations

from pydantic import Field

from edgefn.contract._base import Record

# Upper bounds of the latency histogram, seconds (the edge's buckets, then +Inf).
LATENCY_BOUNDS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, float("inf"),
)
MAX_ERROR_CLASSES = 32


class VersionStats(Record):
    """Counts since the node began serving this version: invocations, errors by code,
    and the cumulative latency histogram (one count per bound of LATENCY_BOUNDS)."""

    function_id: str = Field(min_length=1, max_length=64)
    version: str = Field(min_length=1, max_length=100)
    count: int = Field(ge=0)
    errors: dict[str, int] = Field(default_factory=dict, max_length=MAX_ERROR_CLASSES)
    latency: list[int] = Field(default_factory=list, max_length=len(LATENCY_BOUNDS))

    @property
    def key(self) -> str:
        return f"{self.function_id}@{self.version}"


def p99(latency: list[int]) -> float | None:
    """The 99th percentile's bucket bound from a cumulative histogram; None if empty."""
    if not latency or latency[-1] <= 0:
        return None
    wanted = 0.99 * latency[-1]
    for bound, seen in zip(LATENCY_BOUNDS, latency, strict=False):
        if seen >= wanted:
            return bound
    return LATENCY_BOUNDS[len(latency) - 1]
