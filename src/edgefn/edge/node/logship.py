"""Functions' log lines on their way to the control plane (`edgefn logs`).

A worker's `LogTap` takes every line its JSON log writes and, on a thread of its
own every `FORWARD_INTERVAL_S`, sends what gathered as one datagram to the node's
main process on a Unix socket (`{data_dir}/logs.sock`); the main process's
`LogInbox` keeps the newest lines, tagged with their function and project, until
the agent sends them on its control stream. Both ends are bounded and never wait:
a line that finds the tap or the inbox full, or a datagram the socket refuses, is
dropped and counted, so a slow or absent control plane costs the hot path a
`deque.append` and nothing more.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import socket
import threading
from pathlib import Path
from typing import NamedTuple

log = logging.getLogger("edgefn.edge.node.agent")

FORWARD_INTERVAL_S = 0.1
TAP_MAX_LINES = 5000
INBOX_MAX_LINES = 10000
# One datagram: under the default Unix socket send buffer (212 KiB on Linux).
DATAGRAM_MAX = 192 * 1024
BATCH_MAX_LINES = 500
# A batch's text: well under the control plane's frame and message limits (8 MiB, 4 MiB).
BATCH_MAX_BYTES = 512 * 1024


def log_socket(data_dir: Path) -> Path:
    return data_dir / "logs.sock"


class LogTap:
    """In a worker: lines in, datagrams out on a background thread."""

    def __init__(self, path: Path, *, max_lines: int = TAP_MAX_LINES,
                 interval_s: float = FORWARD_INTERVAL_S) -> None:
        self.path = str(path)
        self.max_lines = max_lines
        self.dropped = 0
        self._lines: collections.deque[bytes] = collections.deque()
        self._interval_s = interval_s
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edgefn-logtap", daemon=True)
        self._thread.start()

    def __call__(self, line: bytes) -> None:
        # The hot path: one length check and an append (a deque's are thread-safe).
        if len(self._lines) >= self.max_lines:
            self._drop(1)
            return
        self._lines.append(line)

    def _drop(self, n: int) -> None:
        from edgefn.edge import metrics

        self.dropped += n
        metrics.LOG_LINES_FORWARD_DROPPED.inc(n)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.flush()

    def flush(self) -> None:
        chunk: list[bytes] = []
        size = 0
        while self._lines:
            line = self._lines.popleft()
            if size + len(line) > DATAGRAM_MAX and chunk:
                self._send(chunk)
                chunk, size = [], 0
            chunk.append(line)
            size += len(line)
        if chunk:
            self._send(chunk)

    def _send(self, chunk: list[bytes]) -> None:
        try:
            self._sock.sendto(b"".join(chunk), self.path)
        except OSError:  # no agent, its buffer full, or a line over the datagram size
            self._drop(len(chunk))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1)
        self.flush()
        self._sock.close()


class Tagged(NamedTuple):
    function_id: str
    project_id: str
    line: str


def tagged(line: str) -> Tagged | None:
    """A log line with its function and project, None for one that names no function."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    function_id = record.get("function_id")
    if not isinstance(function_id, str) or not function_id:
        return None
    project_id = record.get("project_id")
    return Tagged(function_id, project_id if isinstance(project_id, str) else "", line)


class LogInbox:
    """In the main process: the workers' datagrams in, the newest lines kept."""

    def __init__(self, path: Path, *, max_lines: int = INBOX_MAX_LINES) -> None:
        self.path = path
        self.max_lines = max_lines
        self.dropped = 0  # since the last `take`
        self._lines: collections.deque[Tagged] = collections.deque()
        self._lock = threading.Lock()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.settimeout(0.5)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edgefn-loginbox", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(DATAGRAM_MAX + 65536)
            except TimeoutError:
                continue
            except OSError:
                return
            self.put(data.decode("utf-8", "replace").splitlines())

    def put(self, lines: list[str]) -> None:
        found = [t for t in map(tagged, lines) if t is not None]
        with self._lock:
            self._lines.extend(found)
            over = len(self._lines) - self.max_lines
            for _ in range(max(over, 0)):  # the oldest go
                self._lines.popleft()
            self.dropped += max(over, 0)

    def take(self, limit: int = BATCH_MAX_LINES,
             max_bytes: int = BATCH_MAX_BYTES) -> tuple[list[Tagged], int]:
        """The oldest lines kept, up to `limit` of them and `max_bytes` of text (one at
        least), and the count dropped since the last take."""
        lines: list[Tagged] = []
        size = 0
        with self._lock:
            while self._lines and len(lines) < limit:
                size += len(self._lines[0].line)
                if lines and size > max_bytes:
                    break
                lines.append(self._lines.popleft())
            dropped, self.dropped = self.dropped, 0
        return lines, dropped

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        self._thread.join(timeout=1)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
