"""Per-version invocation figures for the control plane's rollout gates, read from
the node's merged Prometheus registry at each heartbeat.

The workers count by function and version (a request refused before a version was
chosen counts under the version "", and no version's figures), from the start of the
process; the figures since the version a node serves began are the counters minus what they were at
the report before it began (a baseline taken when the version changes), so that a
version served again after a rollback starts afresh. During a traffic split both
versions are reported.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from prometheus_client.registry import Collector

from edgefn.contract import LATENCY_BOUNDS, VersionStats


@dataclass
class _Counts:
    count: float = 0.0
    errors: dict[str, float] = field(default_factory=dict)
    latency: list[float] = field(default_factory=lambda: [0.0] * len(LATENCY_BOUNDS))

    def minus(self, base: _Counts) -> _Counts:
        return _Counts(
            max(0.0, self.count - base.count),
            {k: max(0.0, v - base.errors.get(k, 0.0)) for k, v in self.errors.items()},
            [max(0.0, a - b) for a, b in zip(self.latency, base.latency, strict=True)],
        )


_INDEX = {bound: i for i, bound in enumerate(LATENCY_BOUNDS)}


_ANY = "\0any"
# The error code a guest's own 5xx answers are reported under.
GUEST_5XX = "http_5xx"


def read_counts(registry: Collector) -> dict[tuple[str, str], _Counts]:
    """Invocation counters per function and version, summed over their other labels;
    a series without a version (a request refused before one was chosen) is under
    the version ""."""
    out: dict[tuple[str, str], _Counts] = defaultdict(_Counts)
    for family in registry.collect():
        for sample in family.samples:
            fid = sample.labels.get("function_id")
            if fid is None:
                continue
            # No version label at all (a node of an earlier release): the serving one's.
            counts = out[(fid, sample.labels.get("version", _ANY))]
            if sample.name == "wasm_invoke_count_total":
                counts.count += sample.value
            elif sample.name == "wasm_invoke_errors_total":
                code = sample.labels.get("code", "error")
                counts.errors[code] = counts.errors.get(code, 0.0) + sample.value
            elif sample.name == "edge_guest_5xx_responses_total":
                counts.errors[GUEST_5XX] = counts.errors.get(GUEST_5XX, 0.0) + sample.value
            elif sample.name == "wasm_invoke_latency_seconds_bucket":
                i = _INDEX.get(float(sample.labels.get("le", "nan")))
                if i is not None:
                    counts.latency[i] += sample.value
    return out


class VersionFigures:
    """Figures of the versions a node serves (with a traffic split, both), since each
    began serving."""

    def __init__(self, read: Callable[[], dict[tuple[str, str], _Counts]]) -> None:
        self._read = read
        self._base: dict[tuple[str, str], _Counts] = {}
        # Every series as the previous report read it.
        self._seen: dict[tuple[str, str], _Counts] = {}

    def report(self, served: Iterable[dict[str, str]]) -> list[VersionStats]:
        now = self._read()
        base: dict[tuple[str, str], _Counts] = {}
        out = []
        for status in served:
            fid, version = status["id"], status["version"]
            # The version's own series only: a request that lingered on the version
            # before, or one refused before a version was chosen, is not this one's.
            key = (fid, version) if (fid, version) in now else (fid, _ANY)
            current = now.get(key) or _Counts()
            start = self._base.get((fid, version))
            if start is None:
                # First sight of this version: what its series counted since the
                # previous report is its own (it began serving in between); at the
                # node's start, everything counted.
                start = self._seen.get(key) or _Counts()
            base[fid, version] = start
            since = current.minus(start)
            # Every error is an invocation, but workers write their counts a flush
            # (metrics.FLUSH_S) after their errors: the count is at least the errors.
            since.count = max(since.count, sum(since.errors.values()))
            out.append(VersionStats(
                function_id=fid, version=version, count=int(since.count),
                errors={k: int(v) for k, v in since.errors.items() if v},
                latency=[int(v) for v in since.latency]))
        # A version no longer served starts afresh if it is served again.
        self._base = base
        self._seen = now
        return out
