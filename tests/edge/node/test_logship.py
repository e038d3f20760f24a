"""Forwarding functions' log lines from a worker to the node's agent over a real Unix
datagram socket: tagged with function and project, bounded at both ends, and never
waiting when nobody reads."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgefn.edge.logs import Invocation, JsonLog
from edgefn.edge.node.logship import LogInbox, LogTap, Tagged, log_socket


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # A Unix socket's path holds at most 107 bytes; pytest's tmp_path may be longer.
    with tempfile.TemporaryDirectory(prefix="ls") as d:
        yield Path(d)


def line(function_id: str, n: int = 0, **extra: object) -> bytes:
    record = {"type": "function_log", "function_id": function_id, "project_id": "p1",
              "n": n, **extra}
    return json.dumps(record).encode() + b"\n"


def wait_for(inbox: LogInbox, count: int) -> list[Tagged]:
    got: list[Tagged] = []
    deadline = time.monotonic() + 5
    while len(got) < count and time.monotonic() < deadline:
        lines, _ = inbox.take()
        got += lines
        time.sleep(0.02)
    return got


def test_lines_of_the_json_log_reach_the_inbox_tagged(short_dir: Path) -> None:
    inbox = LogInbox(log_socket(short_dir))
    tap = LogTap(log_socket(short_dir), interval_s=0.02)
    sink = JsonLog(short_dir / "edge.log", tap=tap)
    try:
        sink.write_invocation(Invocation(
            "rid-1", "fn-a", "1.0.0", "node-1", "GET", "/x", 200, time.time(), 0.001,
            "0" * 32, "0" * 16, "", "01", None, project_id="proj-a"))
        sink.write({"type": "function_log", "function_id": "fn-b", "project_id": "proj-b",
                    "message": "hi"})
        sink.write({"type": "node", "message": "not a function's line"})
        got = wait_for(inbox, 2)
    finally:
        tap.close()
        inbox.close()
        sink.close()
    assert [(t.function_id, t.project_id) for t in got] == [("fn-a", "proj-a"),
                                                            ("fn-b", "proj-b")]
    assert json.loads(got[0].line)["request_id"] == "rid-1"
    # The file gets every line as before.
    assert len((short_dir / "edge.log").read_text().splitlines()) == 3


def test_without_an_agent_the_tap_drops_and_counts(short_dir: Path) -> None:
    tap = LogTap(log_socket(short_dir), max_lines=100, interval_s=60)
    try:
        for n in range(1000):
            tap(line("fn", n))
        assert tap.dropped == 900  # the queue holds 100
        tap.flush()  # nobody listens: the 100 go too, counted
        assert tap.dropped == 1000
    finally:
        tap.close()


def test_the_inbox_keeps_the_newest_and_counts_the_rest(short_dir: Path) -> None:
    inbox = LogInbox(log_socket(short_dir), max_lines=10)
    try:
        inbox.put([line("fn", n).decode() for n in range(25)])
        lines, dropped = inbox.take(limit=4)
        assert dropped == 15
        assert [json.loads(t.line)["n"] for t in lines] == [15, 16, 17, 18]
        rest, dropped = inbox.take()
        assert dropped == 0 and len(rest) == 6
        # A batch stays under its byte bound, one line at least.
        big = "x" * 1000
        inbox.put([line("fn", n, pad=big).decode() for n in range(5)])
        batch, _ = inbox.take(max_bytes=2500)
        assert len(batch) == 2
        one, _ = inbox.take(max_bytes=10)
        assert len(one) == 1
    finally:
        inbox.close()
