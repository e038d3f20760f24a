"""The worker's state watcher: a state written (atomically, as the agent writes it)
is applied at once where the kernel says so, and by looking where it does not."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from edgefn.edge.spec import NodeState, write_state
from edgefn.edge.worker.app import StateWatcher


class _Runtime:
    def __init__(self) -> None:
        self.applied: list[int] = []
        self.changed = threading.Event()

    def apply_state(self, state: NodeState) -> None:
        self.applied.append(state.generation)
        self.changed.set()


def _watch(tmp_path: Path, interval_s: float) -> tuple[StateWatcher, _Runtime, Path]:
    path = tmp_path / "state.json"
    write_state(path, NodeState(generation=1))
    runtime = _Runtime()
    watcher = StateWatcher(runtime, path, interval_s)  # type: ignore[arg-type]
    watcher.RECHECK_S = 60.0  # only an event can wake it within the test
    watcher.start()
    assert runtime.applied == [1]
    runtime.changed.clear()
    return watcher, runtime, path


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux's")
def test_a_written_state_wakes_the_watcher(tmp_path: Path) -> None:
    watcher, runtime, path = _watch(tmp_path, interval_s=60.0)
    assert watcher._events is not None
    try:
        write_state(path, NodeState(generation=2))
        assert runtime.changed.wait(10), "the watcher was not woken by the write"
        assert runtime.applied == [1, 2]
    finally:
        watcher.stop()
        watcher._thread.join(5)
    assert not watcher._thread.is_alive()


def test_without_events_it_looks_every_interval(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("edgefn.edge.worker.app._DirectoryEvents.open",
                        lambda path: None)
    watcher, runtime, path = _watch(tmp_path, interval_s=0.05)
    try:
        write_state(path, NodeState(generation=2))
        assert runtime.changed.wait(10)
        assert runtime.applied == [1, 2]
    finally:
        watcher.stop()
        watcher._thread.join(5)
    assert not watcher._thread.is_alive()


