"""What a worker process runs besides the HTTP front: its runtime and the state watcher."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from edgefn.edge.settings import EdgeSettings
from edgefn.edge.spec import read_state
from edgefn.edge.worker.dispatch import InlinePolicy
from edgefn.edge.worker.runtime import Runtime

log = logging.getLogger("edgefn.edge")


class StateWatcher:
    """Reloads the node state file when it changes (the agent or `serve` writes it)."""

    def __init__(self, runtime: Runtime, path: Path, interval_s: float) -> None:
        self.runtime = runtime
        self.path = path
        self.interval_s = interval_s
        self._mtime = -1
        self._stop = threading.Event()
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
        while not self._stop.wait(self.interval_s):
            try:
                self.check()
            except Exception:
                log.exception("applying node state failed")

    def stop(self) -> None:
        self._stop.set()


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
