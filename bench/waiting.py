"""Functions that wait: 100 requests parked in `http_fetch` (or KV) must not hold back the rest.

A real `edgefn edge serve --functions DIR` with two functions: `echo`
(echo.wasm, which imports nothing and so runs on the event loop) and `wait`
(hostcalls.wasm, whose `/fetch` calls `http_fetch` on a local server that
answers after `--delay-ms`, 100 by default). With `--redis-url`, a third,
`kv` (hostcalls.wasm `/kv/get`, KV on that Redis), is measured the same way.

1. Bursts: `--concurrency` (100) requests to `wait` sent at once; the figure is
   the time until the last one has its answer (median of `--bursts`). Since the
   fetches overlap, it should be about one delay, not a hundred. First the same
   bursts go straight to the slow server, without the node: what the client and
   the slow server take by themselves on this machine, the floor. Beside each
   figure, the node's CPU and context switches per request (all its processes).
2. The echo with wrk (`-c50`) alone, then while a burst of waiting requests
   starts every `--every` seconds (0.5); its req/s and p99 in both phases. The
   load generator and the slow server share the machine with the node.

The node runs with `--max-connections-per-client 0` (every client here is
127.0.0.1) and `--allow-private-egress 127.0.0.0/8` (the slow server is local).
At the end it prints every line of the node's log saying that a function left
the event loop (for the request threads), since that changes what the figures
mean.

    python bench/waiting.py [--duration 5] [--concurrency 100] [--delay-ms 100]
    python bench/waiting.py --redis-url redis://127.0.0.1:6379/0
    python bench/waiting.py --hot-instances 64   # an instance for every request in a burst
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from statistics import median
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from edgefn.cluster import free_port, spawn, stop_process
from hot_path import checkout_src, parse_wrk, wait_port

ROOT = Path(__file__).resolve().parent.parent
WASM = ROOT / "tests" / "fixtures" / "wasm"

# A keep-alive HTTP/1.1 server on asyncio that answers every request after a delay.
SLOW_SERVER = textwrap.dedent('''
    import asyncio, sys

    DELAY = float(sys.argv[2])

    async def serve(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\\r\\n\\r\\n")
                length = 0
                for line in head.split(b"\\r\\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if length:
                    await reader.readexactly(length)
                await asyncio.sleep(DELAY)
                writer.write(b"HTTP/1.1 200 OK\\r\\ncontent-length: 4\\r\\n\\r\\nslow")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main():
        server = await asyncio.start_server(serve, "127.0.0.1", int(sys.argv[1]), backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(main())
''')


def write_functions(root: Path, kv: bool, hot: int = 16) -> None:
    """`hot`: the waiting functions' max_hot_instances (16, the node's default cap)."""
    # hostcalls.wasm serves `/fetch` and `/kv/get` exactly: those are the routes.
    functions: list[tuple[str, str, str, dict[str, Any]]] = [
        ("echo", "echo", "/echo/*", {"min_hot_instances": 4, "max_hot_instances": 8}),
        ("wait", "hostcalls", "/fetch", {"max_hot_instances": hot, "max_execution_ms": 5000,
                                         "http_fetch": {"allow_hosts": ["127.0.0.1"],
                                                        "allow_private": True}}),
    ]
    if kv:
        functions.append(("kv", "hostcalls", "/kv/get",
                          {"max_hot_instances": hot, "kv": {"enabled": True}}))
    for fid, module, path, extra in functions:
        folder = root / fid
        folder.mkdir(parents=True)
        shutil.copy(WASM / f"{module}.wasm", folder / f"{module}.wasm")
        (folder / "function.json").write_text(json.dumps({
            "id": fid, "version": "1.0.0", "artifact": f"{module}.wasm",
            "routes": [{"host": "*", "path": path}], **extra,
        }))


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    request: bytes) -> int:
    """One request on an open keep-alive connection; the answer's status."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return int(head.split(b" ", 2)[1])


async def burst(port: int, path: str, body: bytes, n: int) -> tuple[float, dict[int, int]]:
    """`n` requests at once on `n` connections opened beforehand; the time until the
    last answer. Raw HTTP/1.1 on asyncio streams: a client library would spend more
    CPU than the node on a burst like this."""
    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(n)]
    request = (f"POST {path} HTTP/1.1\r\nhost: bench\r\ncontent-length: {len(body)}\r\n\r\n"
               .encode() + body)
    try:
        t0 = time.perf_counter()
        answers = await asyncio.gather(*(_exchange(r, w, request) for r, w in conns),
                                       return_exceptions=True)
        elapsed = time.perf_counter() - t0
    finally:
        for _, w in conns:
            w.close()
    statuses: dict[int, int] = {}
    for a in answers:
        code = a if isinstance(a, int) else 0
        statuses[code] = statuses.get(code, 0) + 1
    return elapsed, statuses


def node_cpu(pid: int) -> float:
    """CPU seconds (user + system) of the node's process and its workers."""
    parent = psutil.Process(pid)
    total = 0.0
    for proc in [parent, *parent.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def node_switches(pid: int) -> int:
    """Context switches (voluntary and not) of every thread of the node's process and its
    workers (/proc/PID/status counts the main thread's only)."""
    parent = psutil.Process(pid)
    total = 0
    for proc in [parent, *parent.children(recursive=True)]:
        for status in Path(f"/proc/{proc.pid}/task").glob("*/status"):
            with contextlib.suppress(OSError):
                for line in status.read_text().splitlines():
                    if "ctxt_switches:" in line:
                        total += int(line.split(":")[1])
    return total


def wrk(url: str, duration: int, connections: int) -> dict[str, float]:
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", url],
                         capture_output=True, text=True, check=True).stdout
    return parse_wrk(out)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=int, default=5, help="seconds per echo phase")
    p.add_argument("--concurrency", type=int, default=100)
    p.add_argument("--delay-ms", type=float, default=100)
    p.add_argument("--bursts", type=int, default=5)
    p.add_argument("--every", type=float, default=0.5,
                   help="seconds between bursts while the echo is measured")
    p.add_argument("--connections", type=int, default=50, help="the echo's wrk -c")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--redis-url", default="", help="also measure KV reads on this Redis")
    p.add_argument("--hot-instances", type=int, default=16,
                   help="the waiting functions' max_hot_instances; over 16 raises the "
                        "node's cap to it (--cap-hot-instances). A burst larger than a "
                        "worker's hot instances instantiates the rest")
    p.add_argument("--src", type=Path, help="run the edge from this checkout's src/")
    p.add_argument("edge_args", nargs="*", help="more `edgefn edge serve` flags, after --")
    return p


def measure(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Run the node and both phases, printing as it goes; the figures, for the goals.

    `waiting`: per waiting function, its median burst (s), its node CPU (s) and
    context switches per request; `floor_s`; `alone` and `busy`: the echo's wrk
    figures without and with the bursts."""
    figures: dict[str, Any] = {"waiting": {}}
    slow_port, port, mport = free_port(), free_port(), free_port()
    (tmp / "slow.py").write_text(SLOW_SERVER)
    slow = spawn([sys.executable, str(tmp / "slow.py"), str(slow_port),
                  str(args.delay_ms / 1000)], stdout=subprocess.DEVNULL)
    write_functions(tmp / "functions", bool(args.redis_url), args.hot_instances)
    cmd = [sys.executable, "-m", "edgefn", "edge", "serve",
           "--functions", str(tmp / "functions"), "--port", str(port),
           "--metrics-port", str(mport), "--data-dir", str(tmp / "data"),
           "--workers", str(args.workers), "--log-file", str(tmp / "edge.log"),
           "--max-connections-per-client", "0", "--allow-private-egress", "127.0.0.0/8",
           *(["--cap-hot-instances", str(args.hot_instances)] if args.hot_instances > 16
             else []),
           *args.edge_args]
    env = {**os.environ}
    if args.src:
        env["PYTHONPATH"] = str(checkout_src(args.src))
    if args.redis_url:
        env["EDGEFN_KV_URL"] = args.redis_url
    # The node's own log lines (a function leaving the event loop, say): kept, and the
    # placement's printed at the end, since they change what the figures mean.
    node_log = (tmp / "node.err").open("wb")
    node = spawn(cmd, stdout=subprocess.DEVNULL, stderr=node_log, env=env)
    base = f"http://127.0.0.1:{port}"
    waiting = [("http_fetch", "/fetch",
                f"GET http://127.0.0.1:{slow_port}/slow\n\n".encode())]
    if args.redis_url:
        waiting.append(("kv_get on Redis", "/kv/get?key=k", b""))
    try:
        wait_port(port, node)
        wait_port(slow_port, slow)
        time.sleep(1)
        wrk(base + "/echo/", 2, args.connections)  # warm up
        print(f"{args.workers} workers; bursts of {args.concurrency} concurrent requests; "
              f"the slow server answers after {args.delay_ms:.0f} ms; "
              f"{args.hot_instances} hot instances per waiting function and worker")
        floor_times = [asyncio.run(burst(slow_port, "/slow", b"", args.concurrency))[0]
                       for _ in range(args.bursts)]
        figures["floor_s"] = median(floor_times)
        print(f"floor: the same bursts straight to the slow server, no node: "
              f"{median(floor_times) * 1000:.0f} ms (median of {args.bursts})")
        for name, path, body in waiting:
            # Warm up: threads, instances, outgoing connections.
            asyncio.run(burst(port, path, body, args.concurrency))
            times, statuses = [], {}
            cpu_before = node_cpu(node.pid)
            switches_before = node_switches(node.pid)
            for _ in range(args.bursts):
                elapsed, got = asyncio.run(burst(port, path, body, args.concurrency))
                times.append(elapsed)
                for k, v in got.items():
                    statuses[k] = statuses.get(k, 0) + v
            requests = args.bursts * args.concurrency
            per_request = (node_cpu(node.pid) - cpu_before) / requests
            switches = (node_switches(node.pid) - switches_before) / requests
            figures["waiting"][name] = {"burst_s": median(times), "cpu_s": per_request,
                                        "switches": switches, "statuses": statuses}
            print(f"{name}: {args.concurrency} concurrent requests done in "
                  f"{median(times) * 1000:.0f} ms (median of {args.bursts}; "
                  f"min {min(times) * 1000:.0f}, max {max(times) * 1000:.0f}); "
                  f"statuses {statuses}")
            # What the node's processes spend per request, waits aside: a burst
            # cannot end before its CPU is spent on the cores there are.
            floor = per_request * args.concurrency / (os.cpu_count() or 1)
            print(f"{'':>4}node CPU {per_request * 1e6:.0f} us and {switches:.1f} context "
                  f"switches a request; a burst's CPU on {os.cpu_count()} cores takes at "
                  f"least {floor * 1000:.0f} ms, beside the {args.delay_ms:.0f} ms wait")
        alone = wrk(base + "/echo/", args.duration, args.connections)
        stop = threading.Event()
        counts = {"bursts": 0}

        def keep_waiting() -> None:
            # A burst every `--every` seconds (or as soon as the last one ends): the
            # same load whatever the node, so that nodes can be compared.
            while not stop.is_set():
                t0 = time.monotonic()
                asyncio.run(burst(port, waiting[0][1], waiting[0][2], args.concurrency))
                counts["bursts"] += 1
                stop.wait(max(0.0, args.every - (time.monotonic() - t0)))

        loader = threading.Thread(target=keep_waiting, daemon=True)
        loader.start()
        time.sleep(0.5)
        busy = wrk(base + "/echo/", args.duration, args.connections)
        stop.set()
        loader.join(30)
        figures["alone"], figures["busy"] = alone, busy
        print(f"echo alone:                 {alone['req_s']:8.0f} req/s, p50 "
              f"{alone['p50_ms']:.2f} ms, p99 {alone['p99_ms']:.2f} ms")
        print(f"echo with waiting requests: {busy['req_s']:8.0f} req/s, p50 "
              f"{busy['p50_ms']:.2f} ms, p99 {busy['p99_ms']:.2f} ms "
              f"({counts['bursts']} bursts of {args.concurrency} meanwhile); kept "
              f"{busy['req_s'] / alone['req_s']:.0%}")
    finally:
        stop_process(node)
        stop_process(slow)
        node_log.close()
    moves = [line for line in (tmp / "node.err").read_text(errors="replace").splitlines()
             if "leaves the event loop" in line]
    figures["placement"] = moves
    for line in moves:
        print(f"the node moved a function off its event loop: {line.strip()}")
    return figures


def main() -> None:
    args = parser().parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (Debian: apt-get install wrk)")
    with tempfile.TemporaryDirectory() as d:
        measure(args, Path(d))


if __name__ == "__main__":
    main()
