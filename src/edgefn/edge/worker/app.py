"""What a worker process runs besides the HTTP front: its runtime and the state watcher."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import struct
import sys
import threading
import time
from pathlib import Path

from edgefn.edge.settings import EdgeSettings
from edgefn.edge.spec import read_state
from edgefn.edge.worker.dispatch import InlinePolicy
from edgefn.edge.worker.runtime import Runtime

log = logging.getLogger("edgefn.edge")


class StateWatcher:
    """Reloads the node state file when it changes (the agent or `serve` writes it).

    Where the kernel tells (Linux's inotify, `_DirectoryEvents`), the thread sleeps
    until the file is written or renamed into place and looks at once, and otherwise
    every `RECHECK_S`; elsewhere it looks every `interval_s`. A thread that woke every
    10 ms took the GIL from the requests a hundred times a second: about 7% of a
    saturated node's requests (a node of two workers, wrk -c50, A B alternating three
    times: 32.3 to 33.7k req/s polling, 34.8 to 35.9k with a poll of a second).
    """

    RECHECK_S = 1.0

    def __init__(self, runtime: Runtime, path: Path, interval_s: float) -> None:
        self.runtime = runtime
        self.path = path
        self.interval_s = interval_s
        self._mtime = -1
        self._stop = threading.Event()
        self._events = _DirectoryEvents.open(path)
        self._thread = threading.Thread(target=self._run, name="edgefn-state", daemon=True)

    def check(self) -> bool:
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except FileNotFoundError:
            return False
        if mtime == self._mtime:
            return False
        self._mtime = mtime
        try:
            state = read_state(self.path)
        except (OSError, ValueError) as exc:
            log.error("cannot read node state %s: %s", self.path, exc)
            return False
        self.runtime.apply_state(state)
        return True

    def start(self) -> None:
        self.check()
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._events is not None:
                self._events.wait(self.path.name, self.RECHECK_S)
            elif self._stop.wait(self.interval_s):
                break
            if self._stop.is_set():
                break
            try:
                self.check()
            except Exception:
                log.exception("applying node state failed")

    def stop(self) -> None:
        self._stop.set()
        if self._events is not None:
            self._events.close()


# inotify(7): what a finished write or a rename into the directory says.
_IN_CLOSE_WRITE, _IN_MOVED_TO, _IN_CREATE = 0x8, 0x80, 0x100
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then `len` bytes of name


class _DirectoryEvents:
    """The files written or renamed into one directory, from inotify; `wait` blocks
    (without the GIL) until one of them is `name` or `timeout_s` has passed."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._wake_r, self._wake_w = os.pipe()

    @classmethod
    def open(cls, path: Path) -> _DirectoryEvents | None:
        """None where inotify is not there (not Linux) or the directory cannot be watched."""
        if not sys.platform.startswith("linux"):
            return None
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.inotify_init1(os.O_CLOEXEC | os.O_NONBLOCK)
        except (OSError, AttributeError):
            return None
        if fd < 0:
            return None
        mask = _IN_CLOSE_WRITE | _IN_MOVED_TO | _IN_CREATE
        if libc.inotify_add_watch(fd, os.fsencode(path.parent), mask) < 0:
            os.close(fd)
            return None
        return cls(fd)

    def wait(self, name: str, timeout_s: float) -> None:
        want = os.fsencode(name)
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self._fd, self._wake_r], [], [], left)
            if self._wake_r in ready:
                return
            if self._fd in ready and want in self._names():
                return

    def _names(self) -> list[bytes]:
        try:
            data = os.read(self._fd, 64 * 1024)
        except BlockingIOError:
            return []
        names, at = [], 0
        while at + _EVENT.size <= len(data):
            _, _, _, size = _EVENT.unpack_from(data, at)
            at += _EVENT.size
            names.append(data[at : at + size].rstrip(b"\0"))
            at += size
        return names

    def close(self) -> None:
        """Wake a `wait` under way; the descriptors go with the process."""
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")


def start_runtime(settings: EdgeSettings) -> tuple[Runtime, StateWatcher]:
    """A worker's runtime, loaded with the current node state and following its changes."""
    from edgefn.edge.bootstrap import build_runtime

    runtime = build_runtime(settings)
    # Set before any function is loaded: each placement keeps the policy it was made with.
    runtime.inline = InlinePolicy(enabled=settings.inline,
                                  budget_s=settings.inline_budget_ms / 1000)
    watcher = StateWatcher(runtime, settings.state_path, settings.state_poll_s)
    watcher.start()
    runtime.pools.start()
    return runtime, watcher
