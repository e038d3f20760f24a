"""CPU cost of a request that waits in `http_fetch`, in process: what bounds a burst.

A burst of waiting requests (`bench/waiting.py`) ends when the last one has its
answer. Each worker's loop takes its share of the burst one request after the
other up to the guest's fetch, so the last fetch leaves after the CPU of all the
requests before it on that worker (the **dispatch** phase), and each answer is
then read and sent back (the **answer** phase). This measures both phases in one
worker built as `edgefn edge serve` builds it (as `bench/request_cost.py` does):
`--concurrency` requests at once on the front's protocol over fake transports,
the guest (hostcalls.wasm `/fetch`) in green tasks, its fetches over real sockets
to a local keep-alive server that answers after `--delay-ms`. The figures are the
loop thread's CPU time, which a busy machine slows down less than wall time.

    python bench/fetch_cost.py [--rounds 30] [--concurrency 50] [--hot-instances 16]

With `--hot-instances` below `--concurrency`, the rest of each round's requests
find no idle instance and instantiate one (and destroy it after), as a burst
larger than a function's hot pool does on a node.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from edgefn.cluster import free_port, spawn, stop_process
from hot_path import wait_port
from request_cost import ROOT, _Transport, start_worker
from waiting import SLOW_SERVER


def _settings(tmp: Path, hot: int) -> Any:
    from edgefn.edge.settings import EdgeSettings

    folder = tmp / "functions" / "wait"
    folder.mkdir(parents=True)
    shutil.copy(ROOT / "tests" / "fixtures" / "wasm" / "hostcalls.wasm", folder / "hostcalls.wasm")
    (folder / "function.json").write_text(json.dumps({
        "id": "wait", "version": "1.0.0", "artifact": "hostcalls.wasm", "project_id": "bench",
        "max_hot_instances": hot, "max_execution_ms": 30_000,
        "http_fetch": {"allow_hosts": ["127.0.0.1"], "allow_private": True},
        "routes": [{"host": "*", "path": "/fetch"}],
    }))
    return EdgeSettings(functions_dir=tmp / "functions", data_dir=tmp / "data",
                        log_file=tmp / "edge.log", quota_invocations_per_minute=10**9,
                        quota_max_concurrency=10_000, workers=1,
                        allow_private_egress=("127.0.0.0/8",),
                        caps={"max_hot_instances": max(16, hot)})


class _Counted(_Transport):
    """Counts answers for the round under way, which waits on `done`."""

    left = 0
    done: asyncio.Future[None] | None = None

    def write(self, data: bytes) -> None:
        super().write(data)
        _Counted.left -= 1
        if not _Counted.left and _Counted.done is not None:
            _Counted.done.set_result(None)


async def _measure(settings: Any, args: argparse.Namespace, slow_port: int) -> dict[str, float]:
    # Every fake connection comes from one address: no per-client limit (as with
    # `--max-connections-per-client 0`).
    runtime, watcher, pool, front = start_worker(settings, None)
    loop = asyncio.get_running_loop()
    body = f"GET http://127.0.0.1:{slow_port}/slow\n\n".encode()
    request = b"POST /fetch HTTP/1.1\r\nHost: bench\r\ncontent-length: %d\r\n\r\n%s" % (
        len(body), body)

    async def round_() -> tuple[float, float]:
        conns = []
        for _ in range(args.concurrency):
            conn = front.protocol()
            conn.connection_made(_Counted())  # type: ignore[arg-type]
            conns.append(conn)
        _Counted.left, _Counted.done = len(conns), loop.create_future()
        t0 = time.thread_time()
        for conn in conns:
            conn.data_received(request)  # each runs until its guest waits in http_fetch
        t1 = time.thread_time()
        await asyncio.wait_for(_Counted.done, 30)
        t2 = time.thread_time()
        for conn in conns:
            if not conn.transport.last.startswith(b"HTTP/1.1 200 "):  # type: ignore[union-attr]
                raise RuntimeError(f"unexpected answer: {conn.transport.last[:200]!r}")
            conn.connection_lost(None)
        return t1 - t0, t2 - t1

    # Until the function has earned its place on the loop, its calls go to threads.
    for _ in range(50):
        await round_()
        if all(loaded.placement.on_loop for loaded in runtime._loaded.values()):
            break
    else:
        raise RuntimeError("the function never reached the loop")
    watcher.stop()
    rounds, off_loop = [], 0
    for _ in range(args.rounds):
        rounds.append(await round_())
        # A round after which the function is off the loop ran (some of) its calls on
        # the request threads, whose CPU this does not count: said, not hidden.
        off_loop += not all(loaded.placement.on_loop for loaded in runtime._loaded.values())
    runtime.close()
    pool.close(timeout=1.0)
    n = args.concurrency
    return {"dispatch_us": median(d for d, _ in rounds) / n * 1e6,
            "answer_us": median(a for _, a in rounds) / n * 1e6, "off_loop": off_loop}


class _Leaves(logging.Handler):
    """The placement's log lines: why the function left the loop, when it did."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--concurrency", type=int, default=50, help="requests at once per round")
    p.add_argument("--hot-instances", type=int, default=16,
                   help="the function's max_hot_instances (16: the default cap)")
    p.add_argument("--delay-ms", type=float, default=100)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="edgefn-fetch-cost-"))
    slow = None
    try:
        (tmp / "metrics").mkdir()
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(tmp / "metrics")
        slow_port = free_port()
        (tmp / "slow.py").write_text(SLOW_SERVER)
        slow = spawn([sys.executable, str(tmp / "slow.py"), str(slow_port),
                      str(args.delay_ms / 1000)], stdout=subprocess.DEVNULL)
        wait_port(slow_port, slow)
        import uvloop

        leaves = _Leaves()
        placement_log = logging.getLogger("edgefn.edge.worker.dispatch")
        placement_log.addHandler(leaves)
        placement_log.setLevel(logging.INFO)
        figures = uvloop.run(_measure(_settings(tmp, args.hot_instances), args, slow_port))
        total = figures["dispatch_us"] + figures["answer_us"]
        print(f"{args.concurrency} requests at once, {args.hot_instances} hot instances, "
              f"fetches answered after {args.delay_ms:.0f} ms (median of {args.rounds} rounds)")
        print(f"loop CPU a request: dispatch {figures['dispatch_us']:.0f} us, "
              f"answer {figures['answer_us']:.0f} us, {total:.0f} us in all")
        if figures["off_loop"]:
            print(f"the function was off the loop after {figures['off_loop']:.0f} of "
                  f"{args.rounds} rounds (sent to the request threads): those rounds' "
                  "figures leave out the threads' CPU")
            for line in leaves.lines:
                print(f"  {line}")
        print(f"the last of the {args.concurrency} fetches leaves "
              f"{figures['dispatch_us'] * args.concurrency / 1000:.1f} ms after the first")
    finally:
        if slow is not None:
            stop_process(slow)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
