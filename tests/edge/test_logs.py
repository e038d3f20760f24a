"""The JSON log: one line per record whatever a guest writes, rotation by size across
writers, reopening after logrotate (SIGHUP on a real node), sampling with its counter."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import httpx

from edgefn.edge.logs import Invocation, JsonLog, invocation_line
from tests.edge.node.test_server import functions, metric_value, start_node, stop

__all__ = ["functions"]  # the fixture, shared with test_server

SEPARATORS = "a\u2028b\u2029c\u0085d\x0be\x0cf\x1cg\x1dh\x1ei\rj\nk"


def invocation(status: int = 200, error: str | None = None, path: str = "/p") -> Invocation:
    return Invocation("rid", "fn", "1.0.0", "node", "GET", path, status, 1.0, 0.001,
                      "0" * 32, "0" * 16, "", "01", error)


def lines(path: Path) -> list[str]:
    # str.splitlines splits on every Unicode line boundary, as strict log readers do.
    return path.read_text(encoding="utf-8").splitlines()


def test_no_line_separator_survives_in_a_record(tmp_path: Path) -> None:
    log = JsonLog(tmp_path / "log")
    log.write({"type": "function_log", "message": SEPARATORS})
    log.write_line(invocation_line(invocation(500, error=SEPARATORS, path="/\u2028")))
    log.flush()
    got = lines(tmp_path / "log")
    assert len(got) == 2
    assert json.loads(got[0])["message"] == SEPARATORS
    assert json.loads(got[1])["error_message"] == SEPARATORS
    assert json.loads(got[1])["path"] == "/\u2028"
    log.close()


def test_rotation_by_size_keeps_the_configured_count_across_writers(tmp_path: Path) -> None:
    path = tmp_path / "edge.log"
    # Two writers on one file, as two worker processes are.
    a = JsonLog(path, buffer_bytes=1024, max_bytes=10_000, backups=2)
    b = JsonLog(path, buffer_bytes=1024, max_bytes=10_000, backups=2)
    for i in range(2000):
        (a if i % 2 else b).write({"i": i, "pad": "x" * 40})
    a.flush()
    b.flush()
    files = sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock"))
    assert files == ["edge.log", "edge.log.1", "edge.log.2"]
    for name in files:
        size = (tmp_path / name).stat().st_size
        # A file grows past the limit by at most a buffer per writer before it rotates.
        assert size < 10_000 + 2 * 1100, (name, size)
        assert all(json.loads(x)["pad"] for x in lines(tmp_path / name))
    # The newest records are in the current file.
    assert 1999 in {json.loads(x)["i"] for x in lines(path)} | {
        json.loads(x)["i"] for x in lines(tmp_path / "edge.log.1")}
    a.close()
    b.close()


def test_reopen_follows_a_file_moved_away(tmp_path: Path) -> None:
    path = tmp_path / "edge.log"
    log = JsonLog(path)
    log.write({"n": 1})
    log.flush()
    path.rename(tmp_path / "edge.log.old")
    log.write({"n": 2})
    log.reopen()  # what SIGHUP does: the buffered line goes to the old file, then a new one
    log.write({"n": 3})
    log.flush()
    assert [json.loads(x)["n"] for x in lines(tmp_path / "edge.log.old")] == [1, 2]
    assert [json.loads(x)["n"] for x in lines(path)] == [3]
    log.close()


def test_sampling_keeps_errors_and_counts_what_it_drops(tmp_path: Path) -> None:
    from edgefn.edge import metrics

    before = metrics.LOG_LINES_SAMPLED_OUT._value.get()
    log = JsonLog(tmp_path / "log", sample_success=0.0)
    for _ in range(10):
        log.write_invocation(invocation(200))
    log.write_invocation(invocation(404))  # the guest's own answer: a success
    log.write_invocation(invocation(504, error="timeout"))
    log.write_invocation(invocation(502))
    log.flush()
    kept = [json.loads(x)["status"] for x in lines(tmp_path / "log")]
    assert kept == [504, 502]
    assert metrics.LOG_LINES_SAMPLED_OUT._value.get() - before == 11
    log.close()


def wait_for(predicate, timeout: float = 10) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_a_node_rotates_reopens_on_sighup_and_counts_sampled_lines(
    tmp_path: Path, functions: Path
) -> None:
    node = start_node(tmp_path, functions, "--log-max-bytes", "20000", "--log-backups", "2",
                      "--log-sample-success", "0.5")
    log = node.log_file
    try:
        with httpx.Client(base_url=node.url, timeout=10) as c:
            for i in range(600):
                assert c.post(f"/echo/{i}", content=b"x").status_code == 200
            for _ in range(3):
                assert c.get("/slow").status_code == 504
        text = httpx.get(node.metrics_url + "/metrics", timeout=10).text
        dropped = metric_value(text, "edge_log_lines_sampled_out_total")
        assert 150 < dropped < 450  # about half of 600
        rotated = [log.with_name(f"{log.name}.{i}") for i in (1, 2, 3)]
        assert wait_for(lambda: rotated[0].exists() and rotated[1].exists())
        assert not rotated[2].exists()

        def records() -> list[dict]:
            out = []
            for p in [log, *rotated[:2]]:
                if p.exists():
                    out += [json.loads(x) for x in lines(p)]
            return out

        # Every error is logged: the timeouts are in the newest files.
        assert wait_for(lambda: sum(r.get("status") == 504 for r in records()) == 3)

        # logrotate's way: move the file, then SIGHUP the node; new lines go to a new file.
        moved = tmp_path / "moved.log"
        log.rename(moved)
        os.kill(node.proc.pid, signal.SIGHUP)
        time.sleep(1)
        with httpx.Client(base_url=node.url, timeout=10) as c:
            ids = {c.get("/slow").headers["x-request-id"] for _ in range(2)}
        assert wait_for(lambda: log.exists() and ids <= {
            json.loads(x)["request_id"] for x in lines(log)})
        assert node.proc.poll() is None
    finally:
        stop(node)
