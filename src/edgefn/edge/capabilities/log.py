"""`log` and captured stdout/stderr: into the node's JSON log, bounded per invocation."""

from __future__ import annotations

from edgefn.edge.logs import JsonLog
from edgefn.edge.spec import FunctionSpec

LEVELS = ("debug", "info", "notice", "warn", "error")


class LogCapability:
    """Per function: where guest log lines go, and how much one invocation may write."""

    __slots__ = ("_function_id", "_node_id", "_project_id", "_sink", "max_bytes")

    def __init__(
        self, sink: JsonLog, function_id: str, node_id: str, max_bytes: int, project_id: str = ""
    ) -> None:
        self._sink = sink
        self._function_id = function_id
        self._project_id = project_id
        self._node_id = node_id
        self.max_bytes = max_bytes

    @classmethod
    def configure(
        cls, spec: FunctionSpec, sink: JsonLog, node_id: str, max_bytes: int = 64 * 1024
    ) -> LogCapability:
        return cls(sink, spec.id, node_id, max_bytes, spec.project_id)

    def write(self, request_id: str, level: int, message: bytes, source: str = "log") -> None:
        self._sink.write(
            {
                "type": "function_log",
                "source": source,
                "level": LEVELS[min(max(level, 0), 4)],
                "function_id": self._function_id,
                "project_id": self._project_id,
                "node_id": self._node_id,
                "request_id": request_id,
                "message": message.decode("utf-8", "replace"),
            }
        )
