"""Hot-path benchmark: wrk against an edge-v1 echo function, its ceiling and its peer.

Runs, in one go and on the same machine:
  1. `edgefn edge serve` with tests/fixtures/wasm/echo.wasm (the hot path);
  2. raw hello-world apps on the same server (Granian WSGI and ASGI): the ceiling;
  3. Cloudflare workerd serving a worker that calls the same echo.wasm: the peer;
then prints req/s, p50 and p99 for each, the CPU the node and workerd spent per
request (their processes' user + system time over the run) and the cores each kept
busy, followed by in-process figures for the cold start of a never-instantiated
module and the memory of an idle instance.

    python bench/hot_path.py [--duration 10] [--connections 50] [--workers N]
"""

from __future__ import annotations

import argparse
import importlib.machinery
import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from edgefn.cluster import free_port, spawn, stop_process

ROOT = Path(__file__).resolve().parent.parent
ECHO = ROOT / "tests" / "fixtures" / "wasm" / "echo.wasm"
WORKERD_DIR = ROOT / "bench" / "workerd"
LUA = 'wrk.method = "POST"\nwrk.body = "hello edge"\n'


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listening on {port}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    stop_process(proc)


def parse_wrk(out: str) -> dict[str, float]:
    if "Requests/sec" not in out or "50%" not in out:
        raise RuntimeError(f"unexpected wrk output:\n{out}")

    def ms(text: str) -> float:
        value, unit = re.match(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "req_s": rps, "p50_ms": p50, "p99_ms": p99,
        "non_2xx": float(non2xx.group(1)) if non2xx else 0.0,
        "socket_errors": 1.0 if errors else 0.0,
    }


def median(runs: list[dict[str, float]]) -> dict[str, float]:
    """Each figure's median over the runs (the middle run's for an odd count)."""
    return {k: sorted(r[k] for r in runs)[len(runs) // 2] for k in runs[0]}


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and all its descendants."""
    import psutil

    total = 0.0
    root = psutil.Process(pid)
    for p in [root, *root.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def run_wrk(url: str, duration: int, connections: int, tmp: Path,
            server_pid: int | None = None) -> dict[str, float]:
    """wrk's figures; with `server_pid`, also the server's CPU per request (in µs), a figure a
    busy machine disturbs much less than req/s and latency."""
    script = tmp / "post.lua"
    script.write_text(LUA)
    # Warm up (instances, connections), then measure.
    subprocess.run(["wrk", "-t2", f"-c{connections}", "-d2s", "-s", str(script), url],
                   capture_output=True, check=True)
    cpu0 = cpu_seconds(server_pid) if server_pid else 0.0
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = parse_wrk(out)
    served = max(1, int(re.search(r"(\d+) requests in", out).group(1)))  # type: ignore[union-attr]
    # wrk's own CPU (the only child reaped meanwhile): what the load costs the machine.
    result["client_us"] = (children1.ru_utime + children1.ru_stime - children0.ru_utime
                           - children0.ru_stime) / served * 1e6
    if server_pid:
        result["cpu_us"] = (cpu_seconds(server_pid) - cpu0) / served * 1e6
    return result


# Builds another checkout's native parts in place, by `setup.py`'s rule: every `_*.c`
# under `edgefn/` is the extension of the same dotted name.
_BUILD_NATIVE = (
    "from pathlib import Path; from setuptools import Extension, setup; import sys; "
    "setup(script_args=['build_ext', '--inplace', '--build-temp', sys.argv[1], "
    "'--build-lib', sys.argv[1]], "
    "ext_modules=[Extension('.'.join(c.with_suffix('').parts), [c.as_posix()], "
    "extra_compile_args=['-O2', '-ffp-contract=off']) "
    "for c in sorted(Path('edgefn').glob('**/_*.c'))])"
)


def checkout_src(src: Path) -> Path:
    """Another checkout's `src/` (a `git archive` holds no built files) with its native
    parts built in place: without them that node ticks its guests' deadlines from a
    Python thread (about 10% of a request's CPU) and reads the guests' answers in
    Python, and a before/after comparison measures that rather than the change."""
    src = src.resolve()
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    missing = [c for c in (src / "edgefn").glob("**/_*.c")
               if not c.with_suffix(suffix).exists()]
    if missing:
        with tempfile.TemporaryDirectory() as build:
            subprocess.run([sys.executable, "-c", _BUILD_NATIVE, build], cwd=src, check=True,
                           capture_output=True)
        print(f"built {', '.join(str(c.with_suffix(suffix)) for c in missing)}",
              file=sys.stderr)
    return src


def bench_edgefn(args: argparse.Namespace, tmp: Path, engine: str = "wasmtime",
                 threads: int | None = None, src: Path | None = None,
                 env: dict[str, str] | None = None) -> dict[str, float]:
    """`src`: run the edge from another checkout's `src/` (a before/after comparison);
    `threads`: `--threads` (None: the node's default); `env`: more `EDGEFN_*` settings."""
    threads = threads or args.threads
    name = f"edgefn-{engine}-{threads}-{'base' if src else 'this'}-{time.monotonic_ns()}"
    tmp = tmp / name
    functions = tmp / "functions" / "echo"
    functions.mkdir(parents=True)
    shutil.copy(ECHO, functions / "echo.wasm")
    # As many hot instances as requests can run at once (at most the node's cap, 16).
    hot = min(threads or 16, 16)
    # A tenant's function, so that its project's quotas are counted on every request
    # (the full path); the quotas themselves are set high enough never to refuse.
    (functions / "function.json").write_text(json.dumps({
        "id": "echo", "version": "1.0.0", "artifact": "echo.wasm", "project_id": "bench",
        "min_hot_instances": hot, "max_hot_instances": hot,
        "routes": [{"host": "*", "path": "/*"}],
    }))
    port, mport = free_port(), free_port()
    cmd = [sys.executable, "-m", "edgefn", "edge", "serve", "--functions", str(tmp / "functions"),
           "--port", str(port), "--metrics-port", str(mport), "--data-dir", str(tmp / "data"),
           "--workers", str(args.workers), "--log-file", str(tmp / "edge.log"),
           "--engine", engine,
           "--quota-invocations-per-minute", str(10**9), "--quota-max-concurrency", "1000"]
    if threads:
        cmd += ["--threads", str(threads)]
    env = {**os.environ, **(env or {})}
    if src:
        env["PYTHONPATH"] = str(src)
    proc = spawn(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        wait_port(port, proc)
        time.sleep(1)
        return run_wrk(f"http://127.0.0.1:{port}/echo", args.duration, args.connections, tmp,
                       server_pid=proc.pid)
    finally:
        stop(proc)


HELLO = textwrap.dedent('''
    def wsgi(environ, start_response):
        start_response("200 OK", [("content-type", "text/plain")])
        return [b"hello"]

    async def asgi(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"hello"})
''')


def bench_raw(interface: str, args: argparse.Namespace, tmp: Path) -> dict[str, float]:
    (tmp / "hello_app.py").write_text(HELLO)
    port = free_port()
    cmd = [sys.executable, "-m", "granian", "--interface", interface, "--port", str(port),
           "--workers", str(args.workers), "--no-log"]
    if interface == "wsgi" and args.threads:
        cmd += ["--blocking-threads", str(args.threads)]
    cmd.append(f"hello_app:{interface}")
    proc = spawn(cmd, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc)
        return run_wrk(f"http://127.0.0.1:{port}/", args.duration, args.connections, tmp)
    finally:
        stop(proc)


def bench_workerd(args: argparse.Namespace, tmp: Path) -> dict[str, float] | str:
    binary = WORKERD_DIR / "node_modules" / ".bin" / "workerd"
    if not binary.exists():
        if shutil.which("npm") is None:
            return "npm not found"
        subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=WORKERD_DIR,
                       capture_output=True, check=False)
        if not binary.exists():
            return "workerd could not be installed (npm install failed)"
    port = free_port()
    proc = spawn(
        [str(binary), "serve", "config.capnp", "--socket-addr", f"http=127.0.0.1:{port}"],
        cwd=WORKERD_DIR, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, proc)
        return run_wrk(f"http://127.0.0.1:{port}/echo", args.duration, args.connections, tmp,
                       server_pid=proc.pid)
    finally:
        stop(proc)


def cold_and_memory(tmp: Path) -> dict[str, float]:
    """First request of never-instantiated modules, and the RSS of idle instances."""
    import psutil

    sys.path.insert(0, str(ROOT))
    from edgefn.edge.cache import ArtifactCache
    from edgefn.edge.logs import JsonLog
    from edgefn.edge.spec import FunctionSpec, NodeState
    from edgefn.edge.worker.pool import PoolManager
    from edgefn.edge.worker.runtime import HttpRequest, Runtime
    from edgefn.sandbox import Limits, WasiOptions, create_engine
    from edgefn.sandbox.compilecache import CompileCache

    engine = create_engine(compile_cache=CompileCache.open(tmp / "compiled", tmp / "compile.key"))
    wasm = ECHO.read_bytes()
    # What a node does when an artifact arrives: compile it ahead of the first request.
    engine.compile(wasm, Limits(), WasiOptions())
    runtime = Runtime(engine=engine, cache=ArtifactCache(tmp / "cache"),
                      pools=PoolManager(memory_budget_bytes=1 << 30),
                      log_sink=JsonLog(tmp / "cold.log"), node_id="bench",
                      max_request_body_bytes=1 << 20)
    samples = []
    for i in range(200):
        spec = FunctionSpec(id=f"cold{i}", artifact=str(ECHO), min_hot_instances=0,
                            routes=({"host": "*", "path": f"/cold{i}"},))  # type: ignore[arg-type]
        runtime.apply_state(NodeState(generation=i, functions=(spec,)))
        t0 = time.perf_counter()
        resp = runtime.handle(HttpRequest("POST", "b", f"/cold{i}", "", [], lambda n: b"hi", 2))
        samples.append(time.perf_counter() - t0)
        assert resp.status == 200, resp
    samples.sort()
    module = engine.compile((ROOT / "tests/fixtures/wasm/echo16.wasm").read_bytes(), Limits(),
                            WasiOptions())
    proc = psutil.Process()
    keep = [module.instantiate() for _ in range(20)]
    before = proc.memory_info().rss
    keep += [module.instantiate() for _ in range(500)]
    per_instance = (proc.memory_info().rss - before) / 500
    for inst in keep:
        inst.close()
    return {
        "cold_p50_ms": samples[len(samples) // 2] * 1000,
        "cold_p99_ms": samples[int(len(samples) * 0.99) - 1] * 1000,
        "idle_instance_kib": per_instance / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--threads", type=int, default=None,
                        help="edgefn --threads [the node's default]")
    parser.add_argument("--also-threads", type=int, nargs="*", default=[],
                        help="extra edgefn runs with these thread counts")
    parser.add_argument("--also-threaded", action="store_true",
                        help="also run edgefn with every call on a request thread "
                             "(EDGEFN_INLINE=false), as before calls ran on the event loop")
    parser.add_argument("--wasmedge", action="store_true",
                        help="also run the edge on WasmEdge (needs libwasmedge)")
    parser.add_argument("--skip-workerd", action="store_true")
    parser.add_argument("--skip-ceiling", action="store_true",
                        help="do not run the raw Granian hello-world ceilings")
    parser.add_argument("--baseline-src", type=Path,
                        help="also run the edge from this other checkout's src/ directory, "
                             "alternating with this one (A B A B), for a before/after figure")
    parser.add_argument("--all-goals", action="store_true",
                        help="also measure the other goals of the hot path in this run: the "
                             "looping neighbour (bench/neighbour.py, the default node), "
                             "the functions that wait (bench/waiting.py) and, where "
                             "libwasmedge has its AOT compiler, the node on WasmEdge")
    parser.add_argument("--redis-url", default="",
                        help="with --all-goals, also KV reads on this Redis")
    parser.add_argument("--rounds", type=int, default=2,
                        help="rounds alternating the node with --baseline-src and/or "
                             "--also-threaded; the median of each is printed")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (Debian: apt-get install wrk)")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        rows: list[tuple[str, dict[str, float] | str]] = []
        # Alternated in rounds (A B A B), each printed as its median: the node before
        # (--baseline-src), the node now, the node now with every call on a thread.
        variants: list[tuple[str, Path | None, dict[str, str] | None]] = []
        if args.baseline_src:
            variants.append(("baseline echo", checkout_src(args.baseline_src), None))
        variants.append((EDGEFN_ROW, None, None))
        if args.also_threaded:
            variants.append(("edgefn echo, all calls on threads", None,
                             {"EDGEFN_INLINE": "false"}))
        rounds = args.rounds if len(variants) > 1 else 1
        runs: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in variants}
        for _ in range(rounds):
            for name, src, env in variants:
                runs[name].append(bench_edgefn(args, tmp, src=src, env=env))
        rows += [(name + (" (median)" if rounds > 1 else ""), median(runs[name]))
                 for name, _, _ in variants]
        for threads in args.also_threads:
            rows.append((f"edgefn echo (wasmtime, {threads} thr)",
                         bench_edgefn(args, tmp, threads=threads)))
        # With --all-goals, WasmEdge's goal too where its AOT compiler is here.
        without = wasmedge_aot() if args.all_goals and not args.wasmedge else None
        if args.wasmedge or (args.all_goals and without is None):
            rows.append((f"{WASMEDGE_ROW}, {args.threads} thr)",
                         bench_edgefn(args, tmp, engine="wasmedge")))
        elif without:
            rows.append((WASMEDGE_ROW + ")", without))
        if not args.skip_ceiling:
            rows += [
                ("ceiling: Granian WSGI hello", bench_raw("wsgi", args, tmp)),
                ("ceiling: Granian ASGI hello", bench_raw("asgi", args, tmp)),
            ]
        if not args.skip_workerd:
            rows.append((WORKERD_ROW, bench_workerd(args, tmp)))
        print(f"wrk -t2 -c{args.connections} -d{args.duration}s, POST 10-byte body; "
              f"edgefn/Granian workers={args.workers}, threads={args.threads or 'default'}; "
              f"{os.cpu_count()} CPUs")
        print(f"{'target':40} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8} "
              f"{'CPU µs/req':>10}")
        for name, r in rows:
            if isinstance(r, str):
                print(f"{name:40} skipped: {r}")
            else:
                cpu = f"{r['cpu_us']:>10.1f}" if "cpu_us" in r else f"{'':>10}"
                print(f"{name:40} {r['req_s']:>10.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
                      f"{r['non_2xx']:>8.0f} {cpu}")
        cold = cold_and_memory(tmp)
        others = other_goals(args, tmp) if args.all_goals else {}
    print("cold start, first request of a never-instantiated echo: "
          f"p50 {cold['cold_p50_ms']:.2f} ms, p99 {cold['cold_p99_ms']:.2f} ms (200 functions)")
    print(f"idle hot instance of a 16-page function: {cold['idle_instance_kib']:.0f} KiB RSS")
    print_goals(dict(rows), cold, **others)


def other_goals(args: argparse.Namespace, tmp: Path) -> dict[str, dict[str, Any]]:
    """The neighbour bound and the functions that wait, measured by their own benches
    (which print their figures as they go) on the node with its defaults."""
    import neighbour
    import waiting

    print(f"neighbour: the echo with wrk -c{args.connections}, alone and beside a looping "
          "function hammered by 8 connections (2 rounds, medians)")
    near_args = neighbour.parser().parse_args(["--rounds", "2"])
    near_args.connections, near_args.workers = args.connections, args.workers
    near_args.threads, near_args.duration = args.threads, min(args.duration, 5)
    near = neighbour.measure(near_args, tmp / "neighbour", 1)
    print(f"  alone {near['alone_req_s']:.0f} req/s p99 {near['alone_p99_ms']:.1f} ms; beside "
          f"it {near['busy_req_s']:.0f} req/s p99 {near['busy_p99_ms']:.1f} ms")
    wait_args = waiting.parser().parse_args([])
    wait_args.connections, wait_args.workers = args.connections, args.workers
    wait_args.redis_url = args.redis_url
    (tmp / "waiting").mkdir()
    waits = waiting.measure(wait_args, tmp / "waiting")
    waits["delay_s"] = wait_args.delay_ms / 1000
    return {"neighbour": near, "waits": waits}


EDGEFN_ROW = "edgefn echo (wasmtime)"
WORKERD_ROW = "peer: workerd echo.wasm"
WASMEDGE_ROW = "edgefn echo (wasmedge"


def wasmedge_aot() -> str | None:
    """None where the node's WasmEdge would run AOT code (libwasmedge with its LLVM
    compiler), else why not."""
    from edgefn.sandbox import WasmEdgeOptions, create_engine
    from edgefn.sandbox.errors import EngineUnavailable

    try:
        engine = create_engine("wasmedge", options=WasmEdgeOptions(aot=True))
    except EngineUnavailable as exc:
        return f"WasmEdge unavailable: {exc}"
    try:
        compiler = engine.describe()["compiler"]
    finally:
        engine.close()
    return None if compiler.startswith("LLVM AOT") else f"WasmEdge without AOT: {compiler}"


def cpu_comparison(ours: dict[str, float], peer: dict[str, float],
                   cores: int | None = None) -> str:
    """What each server spent per request and how many cores it kept busy; and the CPU
    per request at which the node would serve 3 times the peer: on the cores it had,
    and on the machine's `cores` with wrk given its own CPU per request at that rate."""
    cores = cores or os.cpu_count() or 1
    our_cores = ours["req_s"] * ours["cpu_us"] / 1e6
    peer_cores = peer["req_s"] * peer["cpu_us"] / 1e6
    target = 3 * peer["req_s"]
    needed = our_cores / target * 1e6
    line = (f"CPU: edgefn {ours['cpu_us']:.0f} us a request on {our_cores:.2f} cores, workerd "
            f"{peer['cpu_us']:.0f} us on {peer_cores:.2f} cores; 3x workerd ({target:.0f} req/s) "
            f"on those {our_cores:.2f} cores needs {needed:.0f} us a request "
            f"({1 - needed / ours['cpu_us']:.0%} less)")
    if "client_us" in ours:
        # wrk costs the machine the same per request at any rate, so more requests
        # leave the node fewer cores.
        left = cores - target * ours["client_us"] / 1e6
        beside = left / target * 1e6
        line += (f"; on {cores} cores beside wrk ({ours['client_us']:.0f} us a request, "
                 f"{target * ours['client_us'] / 1e6:.2f} cores at that rate) "
                 f"{beside:.0f} us ({1 - beside / ours['cpu_us']:.0%} less)")
    return line


def print_goals(rows: dict[str, dict[str, float] | str], cold: dict[str, float],
                neighbour: dict[str, Any] | None = None,
                waits: dict[str, Any] | None = None) -> None:
    """The hot path's goals (docs/performance.md), met or not in this run; with
    `--all-goals`, the neighbour's and the waiting functions' too."""
    ours = rows.get(EDGEFN_ROW) or rows.get(EDGEFN_ROW + " (median)")
    peer = rows.get(WORKERD_ROW)
    goals: list[tuple[str, bool | None, str]] = []
    if isinstance(ours, dict) and isinstance(peer, dict):
        ratio = ours["req_s"] / peer["req_s"]
        goals.append(("req/s at least 3x workerd's", ratio >= 3, f"{ratio:.2f}x"))
        if "cpu_us" in ours and "cpu_us" in peer:
            print(cpu_comparison(ours, peer))
    else:
        goals.append(("req/s at least 3x workerd's", None, "workerd not measured"))
    if isinstance(ours, dict):
        goals.append(("p99 at most 2 ms", ours["p99_ms"] <= 2, f"{ours['p99_ms']:.2f} ms"))
    goals.append(("cold start p99 at most 1.1 ms", cold["cold_p99_ms"] <= 1.1,
                  f"{cold['cold_p99_ms']:.2f} ms"))
    goals.append(("idle instance at most 14 KiB", cold["idle_instance_kib"] <= 14.5,
                  f"{cold['idle_instance_kib']:.0f} KiB"))
    if neighbour:
        goals.append(("neighbour: echo keeps 80% of req/s", neighbour["ratio"] >= 0.8,
                      f"{neighbour['ratio']:.0%}"))
        goals.append(("neighbour: echo p99 at most 5 ms", neighbour["busy_p99_ms"] <= 5,
                      f"{neighbour['busy_p99_ms']:.1f} ms"))
    if waits:
        # "About one delay": within a fifth of it.
        fetch, delay = waits["waiting"]["http_fetch"], waits["delay_s"]
        goals.append((f"100 fetches of {delay * 1000:.0f} ms in about that",
                      fetch["burst_s"] <= 1.2 * delay,
                      f"{fetch['burst_s'] * 1000:.0f} ms (floor {waits['floor_s'] * 1000:.0f})"))
        kept = waits["busy"]["req_s"] / waits["alone"]["req_s"]
        goals.append(("echo beside them keeps 90%", kept >= 0.9,
                      f"{kept:.0%}, p99 {waits['busy']['p99_ms']:.1f} ms"))
    wasmedge = next((r for name, r in rows.items() if name.startswith(WASMEDGE_ROW)), None)
    if isinstance(wasmedge, dict) and isinstance(ours, dict):
        ratio = wasmedge["req_s"] / ours["req_s"]
        goals.append(("WasmEdge AOT within 1.5x of wasmtime", ratio >= 1 / 1.5,
                      f"{ratio:.2f}x wasmtime's req/s"))
    elif isinstance(wasmedge, str):
        goals.append(("WasmEdge AOT within 1.5x of wasmtime", None, "not measured"))
    print("goals:")
    for what, met, figure in goals:
        verdict = "n/a" if met is None else ("met" if met else "NOT met")
        print(f"  {what:36} {figure:>24}  {verdict}")


if __name__ == "__main__":
    main()
