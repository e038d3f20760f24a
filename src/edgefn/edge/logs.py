"""Structured JSON log lines: one per invocation (CONTRACT section 6) and guest logs.

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

    def flush(self) -> None:
        with self._lock:
            if not self._out.closed:
                self._out.flush()

    def close(self) -> None:
        with self._lock:
            if not self._out.closed:
                self._out.close()
