"""CPU cost of one request on a worker's full path, in process: front, runtime, guest.

Builds a worker the way `edgefn edge serve` does (`bootstrap.build_runtime`, the
Prometheus multiprocess files, the quota table, the JSON log file, a tenant's
echo function with quotas that never refuse), opens one connection of the
front's protocol on a fake transport inside a running uvloop, and feeds it the
request wrk sends (`POST /echo`, a 10-byte body): parsing, routing, limits,
quotas, the guest call, metrics, the log line and the serialized answer, all
but the sockets. The placement is warmed first, so calls run on the loop.

    python bench/request_cost.py [--requests 20000] [--profile]

Instructions per request (the figure to compare on a busy machine): callgrind
dumps its counts when the run marks the start and the end of the measured loop
(`os.getppid`, called nowhere else), one file per thread; the main thread's
second dump is the loop alone:

    valgrind --tool=callgrind --separate-threads=yes --dump-before=os_getppid \\
        --callgrind-out-file=/tmp/rc.%p python bench/request_cost.py --requests 2000 --callgrind
    # then: python bench/request_cost.py --report /tmp/rc.<pid> --requests 2000
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import os
import pstats
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ECHO = ROOT / "tests" / "fixtures" / "wasm" / "echo.wasm"
REQUEST = (b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
           b"Content-Length: 10\r\n\r\nhello edge")


class _Transport:
    """What the front's protocol calls on a uvloop transport; answers are kept, not sent."""

    def __init__(self) -> None:
        self.last = b""
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.last = data
        self.writes += 1

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 50000) if name == "peername" else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


def _settings(tmp: Path) -> Any:
    from edgefn.edge.settings import EdgeSettings

    functions = tmp / "functions" / "echo"
    functions.mkdir(parents=True)
    shutil.copy(ECHO, functions / "echo.wasm")
    (functions / "function.json").write_text(json.dumps({
        "id": "echo", "version": "1.0.0", "artifact": "echo.wasm", "project_id": "bench",
        "min_hot_instances": 2, "max_hot_instances": 2,
        # The deadline is wall time: under callgrind on a busy machine 500 ms can pass.
        "max_execution_ms": 30_000,
        "routes": [{"host": "*", "path": "/*"}],
    }))
    return EdgeSettings(functions_dir=tmp / "functions", data_dir=tmp / "data",
                        log_file=tmp / "edge.log", quota_invocations_per_minute=10**9,
                        quota_max_concurrency=1000, workers=1,
                        # Under callgrind a call takes 50 times its CPU: it must not
                        # lose its place on the loop for it.
                        inline_budget_ms=1000)


def start_worker(settings: Any, limiter: Any) -> tuple[Any, Any, Any, Any]:
    """A worker's runtime, state watcher, request pool and front, made as
    `edge/node/workers.py` makes them, from APIs older checkouts have too (the
    benches run against them through PYTHONPATH). Call it on the running loop."""
    from edgefn.edge import green
    from edgefn.edge.node.server import prepare_state
    from edgefn.edge.worker.app import start_runtime
    from edgefn.edge.worker.front import Front, FrontLimits, RequestPool

    prepare_state(settings)
    runtime, watcher = start_runtime(settings)
    gc.collect()
    gc.freeze()
    if hasattr(green, "track_collections"):  # a checkout from before it, through PYTHONPATH
        green.track_collections()
    pool = RequestPool(runtime, asyncio.get_running_loop(), settings.threads)
    front = Front(runtime, pool, FrontLimits.from_settings(settings), limiter,
                  scheme="http", server_port="8080", inline=True)
    return runtime, watcher, pool, front


async def _drive(settings: Any, requests: int, *, mark: bool, profile: bool) -> float:
    """CPU seconds per request of the measured loop."""
    from edgefn.edge.worker.limiter import ClientLimiter, new_key, shared_counts

    limiter = ClientLimiter(shared_counts(1), new_key(), 0, 1, settings.max_connections_per_client)
    runtime, watcher, pool, front = start_worker(settings, limiter)
    conn = front.protocol()
    transport = _Transport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    feed = conn.data_received
    # Until the function has earned its place on the loop, its calls go to a thread.
    for _ in range(200):
        before = transport.writes
        feed(REQUEST)
        while transport.writes == before:
            await asyncio.sleep(0.001)
    if not transport.last.startswith(b"HTTP/1.1 200 ") or not transport.last.endswith(
            b"hello edge"):
        raise RuntimeError(f"unexpected answer: {transport.last!r}")
    watcher.stop()
    profiler = cProfile.Profile() if profile else None
    if mark:
        os.getppid()
    if profiler:
        profiler.enable()
    t0 = time.thread_time()
    off_loop = 0
    for _ in range(requests):
        before = transport.writes
        feed(REQUEST)
        if transport.writes == before:
            # Sent to a thread after all (callgrind slows calls down 50 times): wait.
            off_loop += 1
            while transport.writes == before:
                await asyncio.sleep(0.001)
    cpu = time.thread_time() - t0
    if profiler:
        profiler.disable()
    if mark:
        os.getppid()
    if off_loop:
        print(f"{off_loop} of {requests} requests were answered on a thread, not the loop")
    if profiler:
        stats = pstats.Stats(profiler)
        rows = int(os.environ.get("EDGEFN_PROFILE_ROWS", "30"))
        stats.sort_stats("tottime").print_stats(rows)
        _print_parts(stats)
    conn.connection_lost(None)
    front.close_idle()
    pool.close(timeout=1.0)
    runtime.close()
    return cpu / requests


# The parts of a request, as (label, [(file suffix, function name)]): each part is the
# cumulative time of those functions (the profiler's, so only the shares mean much).
_PARTS = [
    ("guest call: pool checkout, engine, CPU clock", [("runtime.py", "_run")]),
    ("request to the guest's bytes (edge-v1 codec)", [("dispatch.py", "request")]),
    ("guest's bytes to the response", [("dispatch.py", "response")]),
    ("JSON log line", [("logs.py", "write_invocation")]),
    ("quota table", [("quotas.py", "enter"), ("quotas.py", "leave")]),
    ("metrics", [("metrics.py", "_add"), ("metrics.py", "_write")]),
    ("routing", [("runtime.py", "route")]),
    ("answer serialized", [("front.py", "serialize")]),
    ("runtime, the rest (ids, limits, records)", [("runtime.py", "_serve")]),
    ("front, the rest (parse, request object, write)", [("front.py", "data_received")]),
]


def _print_parts(stats: pstats.Stats) -> None:
    cum: dict[tuple[str, str], float] = {}
    for (file, _line, name), row in stats.stats.items():  # type: ignore[attr-defined]
        for _label, keys in _PARTS:
            for suffix, fn in keys:
                if file.endswith(suffix) and name == fn:
                    cum[(suffix, fn)] = cum.get((suffix, fn), 0.0) + row[3]
    total = cum.get(("front.py", "data_received"), 0.0)
    if not total:
        return
    shares = {label: sum(cum.get(k, 0.0) for k in keys) for label, keys in _PARTS}
    # The two "rest" rows are what their entry point spent outside the parts above.
    inner = sum(v for label, v in shares.items() if "the rest" not in label)
    serve = shares["runtime, the rest (ids, limits, records)"]
    serve_parts = sum(v for label, v in shares.items()
                      if "the rest" not in label and label not in ("routing", "answer serialized"))
    shares["runtime, the rest (ids, limits, records)"] = serve - serve_parts
    shares["front, the rest (parse, request object, write)"] = (
        total - inner - shares["runtime, the rest (ids, limits, records)"])
    print("share of a request (cProfile, cumulative):")
    for label, _keys in _PARTS:
        print(f"  {shares[label] / total:6.1%}  {label}")


def _report(prefix: str, requests: int) -> None:
    """Instructions per request from the main thread's loop dump (`<prefix>.2-01`)."""
    path = Path(f"{prefix}.2-01")
    text = path.read_text()
    m = re.search(r"^summary:\s+(\d+)", text, re.M) or re.search(r"^totals:\s+(\d+)", text, re.M)
    if m is None:
        raise SystemExit(f"no totals in {path}")
    print(f"{int(m.group(1)) / requests:,.0f} instructions per request ({path})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--callgrind", action="store_true",
                        help="mark the measured loop for callgrind's --dump-before=os_getppid")
    parser.add_argument("--profile", action="store_true", help="cProfile the measured loop")
    parser.add_argument("--report", metavar="PREFIX", help="read a callgrind run's dumps")
    args = parser.parse_args()
    if args.report:
        _report(args.report, args.requests)
        return
    tmp = Path(tempfile.mkdtemp(prefix="edgefn-cost-"))
    try:
        # As the node's main process does before spawning workers.
        (tmp / "metrics").mkdir()
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(tmp / "metrics")
        import uvloop

        settings = _settings(tmp)
        per = uvloop.run(_drive(settings, args.requests, mark=args.callgrind,
                                profile=args.profile))
        print(f"{per * 1e6:.2f} us CPU per request ({args.requests} requests)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
