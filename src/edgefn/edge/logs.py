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
from typing import Any, NamedTuple

_str = json.encoder.encode_basestring  # the C encoder: quotes and escapes a str


class Invocation(NamedTuple):
    """One invocation's outcome: the log line and the trace span are both made of it."""

    request_id: str
    function_id: str
    version: str
    node_id: str
    method: str
    path: str
    status: int
    start: float  # wall-clock seconds
    elapsed: float  # seconds
    trace_id: str
    span_id: str
    parent_span_id: str
    trace_flags: str
    error_message: str | None
    project_id: str = ""  # the function's tenant


def invocation_line(inv: Invocation) -> bytes:
    """The per-invocation record, formatted directly: it is written for every request."""
    start, elapsed = inv.start, inv.elapsed
    parts = [
        '{"type":"invocation","request_id":', _str(inv.request_id),
        ',"function_id":', _str(inv.function_id), ',"project_id":', _str(inv.project_id),
        ',"version":', _str(inv.version),
        ',"node_id":', _str(inv.node_id),
        f',"start":{start:.6f},"end":{start + elapsed:.6f},"duration_ms":{elapsed * 1000:.3f}',
        f',"status":{inv.status},"method":', _str(inv.method), ',"path":', _str(inv.path),
        ',"trace_id":"', inv.trace_id, '","span_id":"', inv.span_id, '"',
    ]
    if inv.parent_span_id:
        parts += [',"parent_span_id":"', inv.parent_span_id, '"']
    if inv.error_message is not None:
        parts += [',"error_message":', _str(inv.error_message)]
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
