"""Per-project quotas at the edge: 429 with retry-after at the configured figures, counted
once per node across worker processes, and across nodes through Redis."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import httpx
import pytest
import redis

from edgefn.contract import QuotaSpec
from edgefn.edge import metrics
from edgefn.edge.bootstrap import build_runtime
from edgefn.edge.logs import JsonLog
from edgefn.edge.quotas import QuotaLimits, open_table
from edgefn.edge.settings import EdgeSettings
from edgefn.edge.spec import NodeState
from edgefn.edge.worker.runtime import HttpRequest, HttpResponse, Runtime
from tests.edge.conftest import fn
from tests.edge.node.test_server import metric_value, start_node, stop, write_function
from tests.loopback import QuietHandler, loopback


def _get(runtime: Runtime, path: str) -> HttpResponse:
    return runtime.handle(HttpRequest(method="GET", host="edge.test", path=path, query="",
                                      headers=[], read_body=BytesIO(b"").read,
                                      content_length=0))


def _one_window(seconds: float = 15) -> None:
    """Wait for the next minute when fewer than `seconds` are left in this one."""
    if time.time() % 60 > 60 - seconds:
        time.sleep(60.5 - time.time() % 60)


def _runtime(tmp_path: Path, node_id: str, **settings: object) -> Runtime:
    data = tmp_path / node_id
    config = EdgeSettings(data_dir=data, node_id=node_id, **settings)  # type: ignore[arg-type]
    return build_runtime(config, log_sink=JsonLog(data / "edge.log"))


@pytest.fixture
def project() -> Iterator[str]:
    """A project id unique to the test; its Redis keys are removed after it."""
    pid = f"p-{uuid.uuid4().hex[:12]}"
    yield pid
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        for key in client.scan_iter(match=f"edgefn:quota:{{{pid}}}*"):
            client.delete(key)
    except redis.RedisError:
        pass
    finally:
        client.close()


# -- one runtime ---------------------------------------------------------------------

def test_per_minute_quota_answers_429_with_retry_after(tmp_path: Path, project: str) -> None:
    rt = _runtime(tmp_path, "n1", quota_invocations_per_minute=5)
    try:
        rt.apply_state(NodeState(generation=1, functions=(
            fn("e", "echo", project_id=project),
            fn("free", "echo", path="/free/*"),
        )))
        before = metrics.QUOTA_REJECTIONS.labels(project, "rate")._value.get()
        _one_window()
        assert [_get(rt, "/e/x").status for _ in range(5)] == [200] * 5
        refused = _get(rt, "/e/x")
        assert refused.status == 429
        body = json.loads(refused.body)
        assert body["error"]["code"] == "quota_exceeded"
        assert "quota" in body["error"]["message"]
        assert project not in body["error"]["message"]
        retry = int(dict(refused.headers)["retry-after"])
        assert 1 <= retry <= 60
        assert abs(retry - (60 - time.time() % 60)) <= 2
        assert metrics.QUOTA_REJECTIONS.labels(project, "rate")._value.get() - before >= 1
        # A function without a project (a local functions directory) is not counted,
        # and another tenant is not affected.
        assert all(_get(rt, "/free/x").status == 200 for _ in range(10))
    finally:
        rt.close()


def test_admin_quota_overrides_the_node_default_and_zero_stops(
    tmp_path: Path, project: str
) -> None:
    rt = _runtime(tmp_path, "n1", quota_invocations_per_minute=1000)
    other = project + "-b"
    try:
        functions = (fn("a", "echo", project_id=project),
                     fn("b", "echo", project_id=other))
        rt.apply_state(NodeState(generation=1, functions=functions,
                                 quotas={project: QuotaSpec(invocations_per_minute=0)}))
        assert _get(rt, "/a/x").status == 429
        assert _get(rt, "/b/x").status == 200
        rt.apply_state(NodeState(generation=2, functions=functions, quotas={}))
        assert _get(rt, "/a/x").status == 200
    finally:
        rt.close()


def test_cpu_quota_counts_guest_cpu_time(tmp_path: Path, project: str) -> None:
    rt = _runtime(tmp_path, "n1", quota_cpu_seconds_per_day=0.15)
    try:
        rt.apply_state(NodeState(generation=1, functions=(
            fn("spin", "loop", project_id=project, max_execution_ms=100),
        )))
        table = rt.quotas
        assert table is not None
        statuses = []
        for _ in range(30):
            r = _get(rt, "/spin/x")
            statuses.append(r.status)
            if r.status == 429:
                break
        assert statuses[0] == 504 and statuses[-1] == 429, statuses
        assert table.usage(project)["cpu_us"] >= 150_000
        retry = int(dict(r.headers)["retry-after"])
        assert abs(retry - (86400 - time.time() % 86400)) <= 2
        assert "CPU seconds a day" in json.loads(r.body)["error"]["message"]
    finally:
        rt.close()


def test_concurrency_quota(tmp_path: Path, project: str) -> None:
    rt = _runtime(tmp_path, "n1", quota_max_concurrency=2)
    try:
        rt.apply_state(NodeState(generation=1, functions=(
            fn("slow", "loop", project_id=project, max_execution_ms=1500),
            fn("fast", "echo", project_id=project),
        )))
        results: list[int] = []
        threads = [threading.Thread(target=lambda: results.append(_get(rt, "/slow/x").status))
                   for _ in range(2)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 5
        assert rt.quotas is not None
        while rt.quotas.usage(project)["concurrency"] < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        refused = _get(rt, "/fast/x")
        assert refused.status == 429 and dict(refused.headers)["retry-after"] == "1"
        for t in threads:
            t.join()
        assert results == [504, 504]
        assert rt.quotas.usage(project)["concurrency"] == 0
        assert _get(rt, "/fast/x").status == 200
    finally:
        rt.close()


# -- across worker processes -------------------------------------------------------

_CHILD = """
import sys
from pathlib import Path
from edgefn.edge.quotas import QuotaLimits, open_table
table = open_table(Path(sys.argv[1]), node_id="n")
limits = QuotaLimits(100, int(sys.argv[3]), 10**12)
admitted = sum(table.enter(sys.argv[2], limits) is None for _ in range(int(sys.argv[4])))
print(admitted, table.worker)
"""


def test_processes_sharing_a_node_table_count_a_project_once(
    tmp_path: Path, project: str
) -> None:
    path = tmp_path / "quotas.bin"
    table = open_table(path, node_id="n")
    limits = QuotaLimits(100, 10, 10**12)
    assert sum(table.enter(project, limits) is None for _ in range(4)) == 4
    out = subprocess.run([sys.executable, "-c", _CHILD, str(path), project, "10", "10"],
                         capture_output=True, text=True, check=True).stdout.split()
    admitted, worker = int(out[0]), int(out[1])
    assert admitted == 6  # the other process saw the 4 this one counted
    assert worker != table.worker
    assert table.enter(project, limits) is not None
    # The child's executions never ended: they die with it, and its column is
    # zeroed by the next process that claims it; this process's own stay counted.
    assert table.usage(project)["concurrency"] == 4 + 6
    out = subprocess.run([sys.executable, "-c", _CHILD, str(path), project + "x", "10", "0"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert int(out[1]) == worker
    assert table.usage(project)["concurrency"] == 4


@dataclass
class _Held:
    """A local HTTP server whose answers wait until the test releases them: a guest
    fetching from it runs for as long as the test says, burning no CPU (a looping
    guest would hold both cores of a small machine, and the node's answers with them)."""

    url: str = ""
    release: threading.Event = field(default_factory=threading.Event)
    waiting: int = 0


@pytest.fixture
def held() -> Iterator[_Held]:
    state = _Held()

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            state.waiting += 1
            state.release.wait(30)
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

    with loopback(Handler) as url:
        state.url = url + "/"
        yield state
        state.release.set()


@pytest.fixture
def quota_functions(tmp_path: Path) -> Path:
    root = tmp_path / "functions"
    write_function(root, "echo", "echo", [{"host": "*", "path": "/echo/*"}],
                   project_id="tenant-a")
    # hostcalls.wasm's `/fetch` fetches what its body names: here, the held server.
    write_function(root, "slow", "hostcalls", [{"host": "*", "path": "/fetch"}],
                   project_id="tenant-b", max_execution_ms=30_000,
                   http_fetch={"allow_hosts": ["127.0.0.1"], "allow_private": True})
    write_function(root, "mine", "echo", [{"host": "*", "path": "/mine/*"}])
    return root


def test_served_node_with_two_workers_enforces_quotas(
    tmp_path: Path, quota_functions: Path, held: _Held
) -> None:
    node = start_node(tmp_path, quota_functions, "--quota-invocations-per-minute", "5",
                      "--quota-max-concurrency", "2", "--allow-private-egress", "127.0.0.0/8",
                      "--cap-execution-ms", "60000")
    try:
        # A fresh connection per request: the two workers share them out.
        _one_window(20)
        statuses = [httpx.get(node.url + "/echo/x", timeout=10).status_code for _ in range(12)]
        assert statuses.count(200) == 5 and statuses.count(429) == 7, statuses
        last = httpx.get(node.url + "/echo/x", timeout=10)
        assert last.status_code == 429 and 1 <= int(last.headers["retry-after"]) <= 60
        # Without a project: not counted.
        assert all(httpx.get(node.url + "/mine/x", timeout=10).status_code == 200
                   for _ in range(8))

        # Concurrency 2 with a function that waits: the third request at once is 429.
        fetch = f"GET {held.url}\n\n".encode()
        slow: list[int] = []
        threads = [threading.Thread(target=lambda: slow.append(
            httpx.post(node.url + "/fetch", content=fetch, timeout=30).status_code))
            for _ in range(2)]
        for t in threads:
            t.start()
        # Both are running once both fetches wait at the server, and stay so until
        # it answers: the third is sent while the node's table counts two.
        deadline = time.monotonic() + 20
        while held.waiting < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        table = open_table(tmp_path / "data" / "quotas.bin", node_id="observer")
        assert table.usage("tenant-b")["concurrency"] == 2, held.waiting
        third = httpx.post(node.url + "/fetch", content=fetch, timeout=30)
        held.release.set()
        for t in threads:
            t.join()
        assert slow == [200, 200]
        assert third.status_code == 429 and third.headers["retry-after"] == "1"
        assert held.waiting == 2  # the third never ran
        assert table.usage("tenant-b")["concurrency"] == 0

        text = httpx.get(node.metrics_url + "/metrics", timeout=10).text
        assert metric_value(text, "edge_quota_rejections_total", project_id="tenant-a",
                            kind="rate") >= 8
        assert metric_value(text, "edge_quota_rejections_total", project_id="tenant-b",
                            kind="concurrency") == 1
        assert metric_value(text, "wasm_invoke_count_total", function_id="echo",
                            project_id="tenant-a") == 5
        assert metric_value(text, "wasm_invoke_errors_total", function_id="echo",
                            project_id="tenant-a", code="quota_exceeded") >= 8
        # Each worker writes its own lines: wait for those of both functions.
        lines = _log_lines(node.log_file, {"echo": 5, "mine": 8})
        assert {x["project_id"] for x in lines if x["function_id"] == "echo"} == {"tenant-a"}
        assert {x["project_id"] for x in lines if x["function_id"] == "mine"} == {""}
    finally:
        stop(node)


def _log_lines(path: Path, at_least: dict[str, int]) -> list[dict[str, object]]:
    """The invocation lines, once there are `at_least` of each function's (or 10 s on)."""
    deadline = time.monotonic() + 10
    lines: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        if path.exists():
            lines = [json.loads(x) for x in path.read_text().splitlines() if x]
            lines = [x for x in lines if x.get("type") == "invocation"]
            if all(sum(x.get("function_id") == fid for x in lines) >= n
                   for fid, n in at_least.items()):
                break
        time.sleep(0.2)
    return lines


# -- across nodes ----------------------------------------------------------------------

def test_two_nodes_sharing_redis_count_a_project_once(
    tmp_path: Path, project: str, redis_url: str
) -> None:
    a = _runtime(tmp_path, "node-a", quota_invocations_per_minute=6, quota_redis_url=redis_url)
    b = _runtime(tmp_path, "node-b", quota_invocations_per_minute=6, quota_redis_url=redis_url)
    try:
        state = NodeState(generation=1, functions=(fn("e", "echo", project_id=project),))
        a.apply_state(state)
        b.apply_state(state)
        _one_window()
        assert [_get(a, "/e/x").status for _ in range(4)] == [200] * 4
        assert a.quotas is not None and b.quotas is not None
        assert a.quotas.sync() and b.quotas.sync()
        # Node b sees a's 4: two more, then 429 on b, and on a once it has synced.
        assert [_get(b, "/e/x").status for _ in range(3)] == [200, 200, 429]
        assert b.quotas.sync() and a.quotas.sync()
        assert _get(a, "/e/x").status == 429
    finally:
        a.close()
        b.close()


def test_redis_down_each_node_still_enforces_alone(
    tmp_path: Path, project: str, closed_port: int
) -> None:
    rt = _runtime(tmp_path, "n1", quota_invocations_per_minute=3,
                  quota_redis_url=f"redis://127.0.0.1:{closed_port}/0")
    try:
        rt.apply_state(NodeState(generation=1, functions=(fn("e", "echo", project_id=project),)))
        _one_window()
        failures = metrics.QUOTA_SYNC_FAILURES._value.get()
        assert rt.quotas is not None and rt.quotas.sync()
        assert metrics.QUOTA_SYNC_FAILURES._value.get() == failures + 1
        assert [_get(rt, "/e/x").status for _ in range(4)] == [200, 200, 200, 429]
    finally:
        rt.close()
