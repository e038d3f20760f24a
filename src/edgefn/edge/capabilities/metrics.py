"""`metrics_increment`: guest counters in Prometheus with bounded label cardinality.

A guest chooses names and tags, so a function could otherwise create series
without end; each function gets at most `max_series` (name, tags) pairs and
further ones are dropped and counted. The pairs are remembered per function in
the process, not per loaded version: a redeploy or reload starts from the
series the function already made, since Prometheus keeps them too.
"""

from __future__ import annotations

import math
import re
import threading

from edgefn.edge import metrics
from edgefn.edge.spec import FunctionSpec

_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]{0,63}")
_TAG = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]{0,31}=[^,\n]{0,64}")
MAX_SERIES_PER_FUNCTION = 100
MAX_TAGS = 8


class _SeriesSet:
    """The (name, tags) pairs one function has made in this process."""

    __slots__ = ("lock", "series")

    def __init__(self) -> None:
        self.series: set[tuple[str, str]] = set()
        self.lock = threading.Lock()


_by_function: dict[str, _SeriesSet] = {}
_by_function_lock = threading.Lock()


def _series_of(function_id: str) -> _SeriesSet:
    with _by_function_lock:
        found = _by_function.get(function_id)
        if found is None:
            found = _by_function[function_id] = _SeriesSet()
        return found


class MetricsCapability:
    __slots__ = ("_dropped", "_function_id", "_labels", "_set", "max_series")

    def __init__(self, function_id: str, max_series: int, project_id: str = "") -> None:
        self._function_id = function_id
        self._labels = (function_id, project_id)
        self._set = _series_of(function_id)
        self._dropped = metrics.GUEST_METRIC_DROPPED.labels(function_id, project_id)
        self.max_series = max_series

    @classmethod
    def configure(
        cls, spec: FunctionSpec, max_series: int = MAX_SERIES_PER_FUNCTION
    ) -> MetricsCapability:
        return cls(spec.id, max_series, spec.project_id)

    def increment(self, name: bytes, value: float, tags: bytes) -> bool:
        """Count `value` under (name, tags); False when refused (bad input or over the cap)."""
        try:
            text = name.decode("ascii")
            tag_lines = [t for t in tags.decode("utf-8").split("\n") if t]
        except UnicodeDecodeError:
            return self._drop()
        if (
            not _NAME.fullmatch(text)
            or not math.isfinite(value)
            or value < 0
            or len(tag_lines) > MAX_TAGS
            or not all(_TAG.fullmatch(t) for t in tag_lines)
        ):
            return self._drop()
        key = (text, ",".join(sorted(tag_lines)))
        known = self._set
        if key not in known.series:
            with known.lock:
                if key not in known.series:
                    if len(known.series) >= self.max_series:
                        return self._drop()
                    known.series.add(key)
        metrics.GUEST_METRIC.labels(*self._labels, key[0], key[1]).inc(value)
        return True

    def _drop(self) -> bool:
        self._dropped.inc()
        return False
