"""`metrics_increment`: guest counters in Prometheus with bounded label cardinality.

A guest chooses names and tags, so a function could otherwise create series
without end; each function gets at most `max_series` (name, tags) pairs and
further ones are dropped and counted.
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


class MetricsCapability:
    __slots__ = ("_function_id", "_lock", "_series", "max_series")

    def __init__(self, function_id: str, max_series: int) -> None:
        self._function_id = function_id
        self._series: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self.max_series = max_series

    @classmethod
    def configure(
        cls, spec: FunctionSpec, max_series: int = MAX_SERIES_PER_FUNCTION
    ) -> MetricsCapability:
        return cls(spec.id, max_series)

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
        if key not in self._series:
            with self._lock:
                if key not in self._series:
                    if len(self._series) >= self.max_series:
                        return self._drop()
                    self._series.add(key)
        metrics.GUEST_METRIC.labels(self._function_id, key[0], key[1]).inc(value)
        return True

    def _drop(self) -> bool:
        metrics.GUEST_METRIC_DROPPED.labels(self._function_id).inc()
        return False
