"""Structured JSON log lines: one per invocation (docs/edge.md, Observability) and guest logs.

Lines are buffered and flushed by the pool maintenance tick and at exit, so the
hot path pays for a `json.dumps` and a buffered write, not a syscall. The file
is rotated by size (every worker process appends to it; whichever finds it full
rotates it under a file lock, the others follow the new inode), reopened on
SIGHUP for logrotate, and successful invocations' lines can be sampled.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import io
import json
import os
import random
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from edgefn import native
from edgefn.edge import metrics

_str = json.encoder.encode_basestring  # the C encoder: quotes and escapes a str

# JSON leaves these unescaped, but readers that split on Unicode line boundaries
# (str.splitlines, JavaScript before ES2019, many log shippers) would cut the line.
_LINE_SEPARATORS = {0x85: "\\u0085", 0x2028: "\\u2028", 0x2029: "\\u2029"}


def one_line(text: str) -> str:
    """`text` (JSON) with the Unicode line separators JSON allows raw escaped."""
    return text if text.isascii() else text.translate(_LINE_SEPARATORS)


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
    """The per-invocation record: `_logline.c`'s, where it was built, else Python's."""
    if _line_native is not None:
        line = _line_native(inv)
        if line is not None:
            return line
    return invocation_line_py(inv)


def invocation_line_py(inv: Invocation) -> bytes:
    """The per-invocation record, formatted directly: it is written for every request.
    The line of record, which `_logline.c` must match byte for byte."""
    # Timestamps in whole microseconds, formatted as integers: float formatting with a
    # precision costs several times more, and this runs for every request.
    s, s_us = divmod(int(inv.start * 1e6 + 0.5), 1_000_000)
    e, e_us = divmod(int((inv.start + inv.elapsed) * 1e6 + 0.5), 1_000_000)
    ms, ms_us = divmod(int(inv.elapsed * 1e6 + 0.5), 1000)
    parts = [
        '{"type":"invocation","request_id":', _str(inv.request_id),
        ',"function_id":', _str(inv.function_id), ',"project_id":', _str(inv.project_id),
        ',"version":', _str(inv.version),
        ',"node_id":', _str(inv.node_id),
        f',"start":{s}.{s_us:06d},"end":{e}.{e_us:06d},"duration_ms":{ms}.{ms_us:03d}'
        f',"status":{inv.status},"method":',
        _str(inv.method), ',"path":', _str(inv.path),
        ',"trace_id":"', inv.trace_id, '","span_id":"', inv.span_id, '"',
    ]
    if inv.parent_span_id:
        parts += [',"parent_span_id":"', inv.parent_span_id, '"']
    if inv.error_message is not None:
        parts += [',"error_message":', _str(inv.error_message)]
    parts.append("}\n")
    return one_line("".join(parts)).encode()


_LOGLINE = native.part("edgefn.edge._logline")
_line_native: Callable[[Invocation], bytes | None] | None = (
    _LOGLINE and _LOGLINE.invocation_line)


def _is_error(inv: Invocation) -> bool:
    return inv.error_message is not None or inv.status >= 500


class JsonLog:
    """A log file (or stderr) shared by the threads of a worker and by the workers of a node."""

    def __init__(
        self,
        path: Path | None = None,
        *,
        buffer_bytes: int = 64 * 1024,
        max_bytes: int = 0,
        backups: int = 5,
        sample_success: float = 1.0,
        tap: Callable[[bytes], None] | None = None,
    ) -> None:
        self.path = path
        # Also given every line written (the node's forwarding to the control plane).
        self.tap = tap
        self.max_bytes = max_bytes if path is not None else 0
        self.backups = backups
        self.sample_success = sample_success
        self._buffer_bytes = buffer_bytes
        self._since_check = 0
        self._lock = threading.Lock()
        self._dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
        self._out, self._ino = self._open()
        self._sampled_out = metrics.LOG_LINES_SAMPLED_OUT
        atexit.register(self.flush)

    def _open(self) -> tuple[io.BufferedWriter[io.FileIO], int]:
        if self.path is None:
            fd = os.dup(2)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        out = io.BufferedWriter(io.FileIO(fd, "wb"), buffer_size=self._buffer_bytes)
        return out, os.fstat(fd).st_ino

    def write(self, record: dict[str, Any]) -> None:
        self.write_line(one_line(self._dumps(record)).encode() + b"\n")

    def write_invocation(self, inv: Invocation) -> None:
        """The invocation's line, unless it succeeded and sampling leaves it out."""
        if self.sample_success < 1.0 and not _is_error(inv) and (
                random.random() >= self.sample_success):
            self._sampled_out.inc()
            return
        self.write_line(invocation_line(inv))

    def write_line(self, line: bytes) -> None:
        if self.tap is not None:
            self.tap(line)
        with self._lock:
            self._out.write(line)
            if self.max_bytes:
                # The size is looked at once per buffer's worth of lines, not per line.
                self._since_check += len(line)
                if self._since_check >= self._buffer_bytes:
                    self._rotate_if_full()

    def flush(self) -> None:
        with self._lock:
            if not self._out.closed:
                self._out.flush()
                if self.max_bytes:
                    self._rotate_if_full()

    def reopen(self) -> None:
        """Open the path afresh (SIGHUP, after logrotate moved the file away)."""
        with self._lock:
            self._reopen()

    def _reopen(self) -> None:
        if self._out.closed:
            return
        with contextlib.suppress(OSError):
            self._out.flush()
        self._out.close()
        self._out, self._ino = self._open()

    def _rotate_if_full(self) -> None:
        # Called with the lock held and a file path.
        assert self.path is not None
        self._since_check = 0
        if self._out.closed:
            return
        self._out.flush()
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._reopen()  # moved away without a SIGHUP
            return
        if st.st_ino != self._ino:
            self._reopen()  # another worker rotated it
            return
        if st.st_size < self.max_bytes:
            return
        lock_path = self.path.with_name(self.path.name + ".lock")
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                st = os.stat(self.path)
                if st.st_ino == self._ino and st.st_size >= self.max_bytes:
                    self._shift()
            except FileNotFoundError:
                pass
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        self._reopen()

    def _shift(self) -> None:
        """file -> file.1 -> ... -> file.N; the oldest goes."""
        assert self.path is not None
        name = self.path.name
        if self.backups == 0:
            self.path.unlink()
            return
        for i in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{name}.{i}")
            if older.exists():
                older.replace(self.path.with_name(f"{name}.{i + 1}"))
        self.path.replace(self.path.with_name(f"{name}.1"))

    def close(self) -> None:
        with self._lock:
            if not self._out.closed:
                self._out.close()
