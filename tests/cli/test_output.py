"""The command line's progress bar: drawn on a terminal (a real pseudo-terminal
here), absent when stderr is a pipe; and an upload read through it in chunks."""

from __future__ import annotations

import os
import pty
import select
import sys

import pytest

from edgefn.cli._output import Progress, ProgressReader, Status, human_size


def _drawn(leader: int) -> str:
    """Everything written to the terminal so far: one read may return only the first
    of the writes the pseudo-terminal has passed on, so read until it is quiet."""
    chunks = []
    while select.select([leader], [], [], 0.2)[0]:
        chunks.append(os.read(leader, 4096))
    return b"".join(chunks).decode()


def test_the_bar_is_drawn_on_a_terminal_only(monkeypatch: pytest.MonkeyPatch) -> None:
    leader, follower = pty.openpty()
    with os.fdopen(follower, "w", closefd=True) as tty:
        monkeypatch.setattr(sys, "stderr", tty)
        bar = Progress("nodes", 4)
        bar.update(1)
        bar.update(4)
        bar.finish()
        tty.flush()
        drawn = _drawn(leader)
    os.close(leader)
    assert "\rnodes [" in drawn and "] 1/4" in drawn and "] 4/4" in drawn
    assert "#" * 10 in drawn

    read_end, write_end = os.pipe()
    with os.fdopen(write_end, "w") as pipe:
        monkeypatch.setattr(sys, "stderr", pipe)
        quiet = Progress("nodes", 4)
        quiet.update(4)
        quiet.finish()
    with os.fdopen(read_end) as out:
        assert out.read() == ""
    assert not Progress("x", 1, enabled=False).enabled


def test_a_status_line_shows_the_state_and_the_time_so_far(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    leader, follower = pty.openpty()
    with os.fdopen(follower, "w", closefd=True) as tty:
        monkeypatch.setattr(sys, "stderr", tty)
        status = Status("build b1")
        status.started -= 7  # as if it began seven seconds ago
        status.update("queued")
        status.update("running")
        status.finish()
        tty.flush()
        drawn = _drawn(leader)
    os.close(leader)
    assert "\rbuild b1: queued / 7s\x1b[K" in drawn
    assert "build b1: running - 7s" in drawn and drawn.endswith("\n")
    assert not Status("x", enabled=False).enabled


def test_an_upload_moves_the_bar_as_it_is_read() -> None:
    bar = Progress("upload", 10, enabled=False)
    reader = ProgressReader(b"0123456789", bar)
    assert reader.read(4) == b"0123" and bar.done == 4
    assert reader.read() == b"456789" and bar.done == 10


def test_sizes_read_as_people_write_them() -> None:
    assert [human_size(n) for n in (512, 2048, 5 * 1024 * 1024)] == [
        "512 B", "2.0 KiB", "5.0 MiB"]
