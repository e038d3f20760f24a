"""Structured JSON log lines: one per invocation (docs/edge.md, Observability) and guest logs.

Lines are buffered and flushed by the pool maintenance tick and at exit, so the
hot path pays for a `json.dumps` and a buffered write, not a syscall.
"""

from __future__ import annotations

import atexit
import io
import json
import os
import threading
from pathlib import Path
from typing import Any

_str = json.encoder.encode_basestring  # the C encoder: quotes and escapes a str


def invocation_line(
    *,
    request_id: str,
    function_id: str,
    version: str,
    node_id: str,
    start: float,
    elapsed: float,
    status: int,
    method: str,
    path: str,
    trace_id: str,
    span_id: str,
    parent_span_id: str,
    error_message: str | None,
) -> bytes:
    """The per-invocation record, formatted directly: it is written for every request."""
    parts = [
        '{"type":"invocation","request_id":', _str(request_id),
        ',"function_id":', _str(function_id), ',"version":', _str(version),
        ',"node_id":', _str(node_id),
        f',"start":{start:.6f},"end":{start + elapsed:.6f},"duration_ms":{elapsed * 1000:.3f}',
        f',"status":{status},"method":', _str(method), ',"path":', _str(path),
        ',"trace_id":"', trace_id, '","span_id":"', span_id, '"',
    ]
    if parent_span_id:
        parts += [',"parent_span_id":"', parent_span_id, '"']
    if error_message is not None:
        parts += [',"error_message":', _str(error_message)]
    parts.append("}\n")
    return "".join(parts).encode()


class JsonLog:
    def __init__(self, path: Path | None = None, *, buffer_bytes: int = 64 * 1024) -> None:
        if path is None:
            fd = os.dup(2)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._out = io.BufferedWriter(io.FileIO(fd, "wb"), buffer_size=buffer_bytes)
        self._lock = threading.Lock()
        self._dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
        atexit.register(self.flush)

    def write(self, record: dict[str, Any]) -> None:
        line = self._dumps(record).encode() + b"\n"
        with self._lock:
            self._out.write(line)

    def write_line(self, line: bytes) -> None:
        with self._lock:
            self._out.write(line)

    def flush(self) -> None:
        with self._lock:
            if not self._out.closed:
                self._out.flush()

    def close(self) -> None:
        with self._lock:
            if not self._out.closed:
                self._out.close()
