"""Deploy propagation: from `POST /deploy` returning to the new version on every node,
over 20 deploys, with N nodes against one control plane (SQLite) or two replicas on
one PostgreSQL.

    python bench/deploy_propagation.py [--deploys 20] [--nodes 2 10]
    python bench/deploy_propagation.py --replicas 2 --postgres URL --nodes 10 --kill-replica
    python bench/deploy_propagation.py --replicas 2 --postgres URL --agents --nodes 100

Nodes are `edgefn edge serve` processes (a main process and one HTTP worker, about
134 MB together), and "done" is the first 200 carrying the new version's body from
each. With `--agents` they are node agents in this one process instead: each with
its own data directory, artifact cache, compile cache, gRPC stream and acks (the
download, sha256 check, compile and state write a node's main process does), but no
HTTP serving, so that 100 fit in memory; "done" is then the agent having applied
the version (a worker polling the state file serves it about 10 ms later), and the
time is split into the push (deploy returned to instruction received) and the
apply. With two replicas the nodes alternate which one they stream from, and the
deploys go through the first replica's API, so half the nodes hear of each deploy
through the other replica's wake-up (PostgreSQL LISTEN/NOTIFY).

`--kill-replica` ends the run with one more deploy, after which the first replica
(the API that took the deploy, the streams of half the nodes, and likely the
maintenance lease) is SIGKILLed: every node must still end on that version through
the second, with one instruction each, all acked.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import sqlalchemy as sa

from edgefn.cluster import (
    Cluster,
    ClusterError,
    Edge,
    Replica,
    fixed_response_module,
    grpc_targets,
    node_files,
    wait_until,
)
from edgefn.contract import Instruction, InstructionAck
from edgefn.edge.node.agent import Agent
from edgefn.edge.node.server import start_agent
from edgefn.edge.settings import EdgeSettings

POLL_S = 0.002
GOALS_S = {10: 0.5, 100: 2.0}  # served by all of N nodes, p99
LEASE_TTL_S = 3


def version_module(tag: str) -> bytes:
    """An edge-v1 module whose whole response is `200`, a blank line and `tag`."""
    return fixed_response_module(200, tag)


def first_200(edge: Edge, tag: bytes, start: float, out: dict[str, float],
              poll_s: float = POLL_S) -> None:
    with httpx.Client(base_url=edge.url, timeout=5) as client:
        while True:
            try:
                resp = client.get("/p")
                if resp.status_code == 200 and resp.content == tag:
                    out[edge.node_id] = time.perf_counter() - start
                    return
            except httpx.HTTPError:
                pass
            time.sleep(poll_s)


@dataclass
class Sample:
    total: float  # deploy returned -> the last node done
    api: float = 0.0  # the deploy call itself (sent -> returned)
    # deploy sent (the commit precedes its answer) -> each node received it (agents)
    push: list[float] = field(default_factory=list)
    apply: list[float] = field(default_factory=list)  # received -> applied (agents)
    # Per node (agents): the artifact's download and sha256 check (wall), and the
    # compile's CPU (0 when the host's shared compile cache already had it).
    fetch: list[float] = field(default_factory=list)
    compile_cpu: list[float] = field(default_factory=list)
    # CPU seconds every process of the cluster and this one used from the deploy
    # call to the last node done, and the 1-minute load average then.
    cpu: float = 0.0
    load: float = 0.0


class CpuMeter:
    """CPU time (user + system) of this process and of every process of the cluster
    (control planes, nodes and their workers): what a deploy costs beside how long
    it waits."""

    def __init__(self, cluster: Cluster) -> None:
        procs = [cluster.cp_proc, *(r.proc for r in cluster.replicas.values()),
                 *(e.proc for e in cluster.edges.values())]
        self._procs = [psutil.Process()]
        for proc in procs:
            if proc is None or proc.poll() is not None:
                continue
            with contextlib.suppress(psutil.Error):
                parent = psutil.Process(proc.pid)
                self._procs += [parent, *parent.children(recursive=True)]

    def seconds(self) -> float:
        total = 0.0
        for proc in self._procs:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        return total


# ---- nodes as processes --------------------------------------------------------


class NodeProcesses:
    """`edgefn edge serve` processes; done = serving the version."""

    def __init__(self, cluster: Cluster, poll_s: float = POLL_S) -> None:
        self.cluster = cluster
        self.edges: list[Edge] = []
        self.poll_s = poll_s

    def add(self, node_id: str, pop_id: str, grpc_url: str) -> None:
        token = self.cluster.register_node(node_id, pop_id, {})
        edge = Edge(node_id, pop_id, {}, token, self.cluster.root / node_id, grpc_url=grpc_url)
        self.cluster.edges[node_id] = edge
        self.cluster.start_edge(edge)
        self.edges.append(edge)

    def wait(self, tag: str, sent: float, start: float, timeout: float) -> Sample:
        seen: dict[str, float] = {}
        threads = [threading.Thread(target=first_200,
                                    args=(e, tag.encode(), start, seen, self.poll_s),
                                    daemon=True) for e in self.edges]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=timeout)
        if len(seen) != len(self.edges):
            missing = sorted({e.node_id for e in self.edges} - set(seen))
            raise RuntimeError(f"{tag}: {missing} did not serve it in {timeout} s")
        return Sample(max(seen.values()), api=start - sent)

    def close(self) -> None:
        pass  # the cluster stops them


# ---- nodes as agents in this process ------------------------------------------------


class NodeAgents:
    """Node agents in this process (`start_agent`, as a node's main process runs it),
    each with its own data directory; done = applied."""

    def __init__(self, cluster: Cluster, shared_compile_cache: bool = False) -> None:
        self.cluster = cluster
        self.shared_compile_cache = shared_compile_cache
        self.agents: list[Agent] = []
        self._lock = threading.Condition()
        # version -> node id -> (received, applied, fetch wall, compile CPU)
        self._times: dict[str, dict[str, tuple[float, float, float, float]]] = {}
        # What the apply running on this thread spent fetching and compiling.
        self._step = threading.local()

    def add(self, node_id: str, pop_id: str, grpc_url: str) -> None:
        token = self.cluster.register_node(node_id, pop_id, {})
        extra: dict[str, Any] = {}
        if self.cluster.mtls:
            tls = node_files(self.cluster.root, node_id)
            extra |= {"node_cert": tls.cert_file, "node_key": tls.key_file,
                      "cp_ca_file": tls.ca_file}
        if self.shared_compile_cache:
            extra |= shared_compile_cache(self.cluster.root)
        settings = EdgeSettings(
            node_id=node_id, pop_id=pop_id, data_dir=self.cluster.root / node_id,
            cp_url=self.cluster.node_url, grpc_url=grpc_url,
            node_token=token, heartbeat_interval_s=30, **extra,
        )
        agent = start_agent(settings)
        assert agent is not None
        controller = agent.controller
        controller.apply = self._timed(  # type: ignore[method-assign, assignment]
            node_id, controller.apply)
        controller._artifact = self._step_timer(  # type: ignore[method-assign]
            "fetch", controller._artifact, time.perf_counter)
        if controller.engine is not None:
            controller.engine.compile = self._step_timer(  # type: ignore[method-assign]
                "compile", controller.engine.compile, time.thread_time)
        self.agents.append(agent)

    def _step_timer(self, step: str, fn: Callable[..., Any],
                    clock: Callable[[], float]) -> Callable[..., Any]:
        def timed(*args: Any, **kw: Any) -> Any:
            began = clock()
            try:
                return fn(*args, **kw)
            finally:
                setattr(self._step, step, getattr(self._step, step, 0.0) + clock() - began)

        return timed

    def _timed(self, node_id: str, apply: Callable[[Instruction], InstructionAck]) -> Callable[
        [Instruction], InstructionAck
    ]:
        def timed(instr: Instruction) -> InstructionAck:
            received = time.perf_counter()
            self._step.fetch = self._step.compile = 0.0
            ack = apply(instr)
            version = getattr(instr, "version", "")
            if instr.type == "deploy" and ack.state == "cached" and version:
                with self._lock:
                    done = self._times.setdefault(version, {})
                    done.setdefault(node_id, (received, time.perf_counter(),
                                              self._step.fetch, self._step.compile))
                    self._lock.notify_all()
            return ack

        return timed

    def wait(self, version: str, sent: float, start: float, timeout: float) -> Sample:
        deadline = time.perf_counter() + timeout
        with self._lock:
            while len(self._times.get(version, {})) < len(self.agents):
                left = deadline - time.perf_counter()
                if left <= 0:
                    raise RuntimeError(f"{version}: only {len(self._times.get(version, {}))} "
                                       f"of {len(self.agents)} nodes applied it in {timeout} s")
                self._lock.wait(left)
            times = list(self._times[version].values())
        return Sample(max(a for _, a, _, _ in times) - start, api=start - sent,
                      push=[r - sent for r, _, _, _ in times],
                      apply=[a - r for r, a, _, _ in times],
                      fetch=[f for _, _, f, _ in times], compile_cpu=[c for *_, c in times])

    def close(self) -> None:
        stopping = [threading.Thread(target=a.stop) for a in self.agents]
        for t in stopping:
            t.start()
        for t in stopping:
            t.join()


# ---- the run -----------------------------------------------------------------------


@contextmanager
def pg_schema(url: str) -> Iterator[str]:
    """A fresh schema of the PostgreSQL at `url`, dropped afterwards: its URL."""
    schema = f"edgefn_bench_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        sep = "&" if "?" in url else "?"
        yield f"{url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        engine.dispose()


@dataclass
class Result:
    nodes: int
    samples: list[Sample]
    rss_mb_per_node: float | None = None


def run(args: argparse.Namespace, nodes: int, database_url: str | None) -> Result:
    with tempfile.TemporaryDirectory() as d:
        cluster = Cluster(Path(d), token="bench-token", project="bench",
                          heartbeat_interval_s=5.0, database_url=database_url)
        if args.shared_compile_cache:
            cluster.edge_args = [f"--{k.replace('_', '-')}={v}"
                                 for k, v in shared_compile_cache(cluster.root).items()]
        cluster.cp_env["EDGEFN_STREAM_RECHECK_S"] = str(args.recheck_s)
        cluster.cp_env["EDGEFN_LEASE_TTL_S"] = str(LEASE_TTL_S)
        fleet: NodeProcesses | NodeAgents = (
            NodeAgents(cluster, args.shared_compile_cache) if args.agents
            else NodeProcesses(cluster, args.poll_ms / 1000))
        try:
            cluster.start_cp()
            replicas: list[Replica] = [cluster.first_replica]
            if args.replicas == 2:
                replicas.append(cluster.add_replica("b"))
            rss_before = psutil.Process().memory_info().rss
            for i in range(nodes):
                # Half stream from each replica first.
                order = replicas if i % 2 == 0 else replicas[::-1]
                fleet.add(f"node-{i}", f"pop-{i}", grpc_targets(order))
            fid = cluster.function("propagation")
            cluster.route(fid, "/p")
            total = args.deploys + 1 + int(args.kill_replica)
            for i in range(total):
                cluster.upload(fid, f"1.0.{i}", version_module(f"v{i}"))
            now = time.perf_counter()
            cluster.deploy(fid, "1.0.0")  # warm: routes, first pull
            fleet.wait(tag_of(fleet, 0), now, now, 120)
            # What the agents hold with a version loaded (compiled module included).
            rss = (psutil.Process().memory_info().rss - rss_before) / nodes / 2**20
            samples = []
            meter = CpuMeter(cluster)
            for i in range(1, args.deploys + 1):
                sent = time.perf_counter()
                cpu = meter.seconds()
                cluster.deploy(fid, f"1.0.{i}")
                start = time.perf_counter()
                sample = fleet.wait(tag_of(fleet, i), sent, start, 60)
                sample.cpu = meter.seconds() - cpu
                sample.load = os.getloadavg()[0]
                samples.append(sample)
            result = Result(nodes, samples, rss_mb_per_node=rss if args.agents else None)
            report(args, result)
            if args.kill_replica:
                kill, checks = kill_mid_deploy(
                    cluster, fleet, fid, args.deploys + 1, replicas, database_url)
                print(f"{'':>6} replica killed mid-deploy: all done in "
                      f"{kill.total * 1000:.0f} ms; {checks}")
            return result
        except Exception:
            for log in sorted(Path(d).glob("*.log")):  # before the directory goes
                if log.stem in ("cp", *cluster.replicas):
                    print(f"--- {log.name}\n{log.read_text()[-3000:]}")
            raise
        finally:
            fleet.close()
            cluster.close()


def shared_compile_cache(root: Path) -> dict[str, Path]:
    """The settings that make the nodes of one host share their compiled code."""
    return {"compile_cache_dir": root / "compiled", "compile_key_file": root / "compile.key"}


def tag_of(fleet: NodeProcesses | NodeAgents, i: int) -> str:
    """What tells that deploy i is done: its body (processes) or its version (agents)."""
    return f"1.0.{i}" if isinstance(fleet, NodeAgents) else f"v{i}"


def kill_mid_deploy(cluster: Cluster, fleet: NodeProcesses | NodeAgents, fid: str, i: int,
                    replicas: list[Replica], database_url: str | None) -> tuple[Sample, str]:
    first, second = replicas
    sent = time.perf_counter()
    dep = cluster.deploy(fid, f"1.0.{i}")
    start = time.perf_counter()
    assert first.proc is not None
    os.killpg(first.proc.pid, signal.SIGKILL)
    cluster.use(second)
    sample = fleet.wait(tag_of(fleet, i), sent, start, 120)
    with contextlib.suppress(ClusterError):
        wait_until("the deployment done",
                   lambda: cluster.deployment(dep)["state"] != "in_progress", 60)
    described = cluster.deployment(dep)
    assert database_url is not None
    engine = sa.create_engine(database_url)
    try:
        def holder() -> Any:
            with engine.connect() as conn:
                return conn.execute(sa.text(
                    "SELECT holder FROM leases WHERE name = 'maintenance' "
                    "AND expires_at > now()")).scalar()

        wait_until("the lease on the second replica", lambda: holder() == second.name,
                   LEASE_TTL_S * 3)
        moved = time.perf_counter() - start
        with engine.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT node_id, state, ack_state FROM outbox WHERE deployment_id = :d"),
                {"d": dep}).all()
            pending = conn.execute(sa.text(
                "SELECT count(*) FROM outbox WHERE state = 'pending'")).scalar()
    finally:
        engine.dispose()
    per_node = {r.node_id for r in rows}
    problems = []
    if described["state"] != "succeeded":
        errors = [n for n in described["nodes"] if n["state"] != "cached"]
        problems.append(f"deployment {described['state']}: {errors[:3]}")
    if len(rows) != len(per_node) or len(per_node) != len(fleet_ids(fleet)):
        problems.append(f"{len(rows)} instructions for {len(per_node)} nodes")
    if {(r.state, r.ack_state) for r in rows} != {("acked", "cached")}:
        problems.append("not all acked cached")
    if pending:
        problems.append(f"{pending} instructions still pending")
    checks = "; ".join(problems) or (
        f"all {len(per_node)} nodes on 1.0.{i}, one instruction each, all acked, none "
        f"pending; the lease on {second.name!r}, seen {moved:.1f} s after the kill "
        f"(TTL {LEASE_TTL_S} s; looked for once every node was done)")
    return sample, checks


def fleet_ids(fleet: NodeProcesses | NodeAgents) -> list[str]:
    if isinstance(fleet, NodeAgents):
        return [a.node_id for a in fleet.agents]
    return [e.node_id for e in fleet.edges]


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms(value: float) -> str:
    return f"{value * 1000:>8.0f}"


def report(args: argparse.Namespace, result: Result) -> None:
    totals = [s.total for s in result.samples]
    kind = "agents" if args.agents else "processes"
    print(f"{result.nodes:>6} {kind:>10} {args.replicas:>8} {len(totals):>8} "
          f"{ms(pct(totals, 0.5))} {ms(pct(totals, 0.99))} {ms(max(totals))} "
          f"{ms(statistics.mean(totals))}")
    api = [s.api for s in result.samples]
    print(f"{'':>6} the deploy call: p50 {ms(pct(api, 0.5))} p99 {ms(pct(api, 0.99))} ms")
    cores = os.cpu_count() or 1
    cpu = [s.cpu for s in result.samples]
    busy = [s.cpu / (s.total + s.api) / cores for s in result.samples]
    loads = [s.load for s in result.samples]
    print(f"{'':>6} CPU of every process from the deploy call to the last node done: "
          f"p50 {ms(pct(cpu, 0.5))} ms, {pct(busy, 0.5):.0%} of {cores} cores over the "
          f"deploy (the floor it sets: {ms(pct(cpu, 0.5) / cores)} ms); "
          f"load average {min(loads):.1f}-{max(loads):.1f}")
    if args.agents:
        push = [p for s in result.samples for p in s.push]
        apply = [a for s in result.samples for a in s.apply]
        fetch = [f for s in result.samples for f in s.fetch]
        compiles = [sum(s.compile_cpu) for s in result.samples]
        compiled = [sum(c > 0.001 for c in s.compile_cpu) for s in result.samples]
        print(f"{'':>6} per node: push p50 {ms(pct(push, 0.5))} p99 {ms(pct(push, 0.99))} | "
              f"apply p50 {ms(pct(apply, 0.5))} p99 {ms(pct(apply, 0.99))} ms, of which "
              f"download+sha256 p50 {ms(pct(fetch, 0.5))} p99 {ms(pct(fetch, 0.99))} ms | "
              f"~{result.rss_mb_per_node:.0f} MB of RSS per agent")
        print(f"{'':>6} compiles per deploy: {statistics.median(compiled):.0f} of "
              f"{result.nodes} nodes compiled, CPU summed p50 {ms(pct(compiles, 0.5))} ms "
              f"(the rest loaded the host's compiled code)")
    goal = GOALS_S.get(result.nodes)
    if goal is not None:
        p99 = pct(totals, 0.99)
        verdict = "met" if p99 < goal else "NOT met"
        what = "applied by" if args.agents else "served by"
        print(f"{'':>6} goal: {what} all {result.nodes}, p99 < {goal * 1000:.0f} ms: "
              f"{verdict} ({p99 * 1000:.0f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deploys", type=int, default=20)
    parser.add_argument("--nodes", type=int, nargs="+", default=[2, 10])
    parser.add_argument("--replicas", type=int, choices=(1, 2), default=1)
    parser.add_argument("--postgres", default=os.environ.get("EDGEFN_TEST_POSTGRES_URL"),
                        help="PostgreSQL for the replicas (a schema is made per run)")
    parser.add_argument("--agents", action="store_true",
                        help="node agents in this process instead of node processes")
    parser.add_argument("--kill-replica", action="store_true",
                        help="SIGKILL the first replica right after a last deploy")
    parser.add_argument("--shared-compile-cache", action="store_true",
                        help="the nodes share one compiled-code cache, as nodes of one host "
                             "can (--compile-cache-dir and --compile-key-file)")
    parser.add_argument("--poll-ms", type=float, default=POLL_S * 1000,
                        help="how often each node is asked for the new version (processes)")
    parser.add_argument("--recheck-s", type=float, default=1.0,
                        help="the streams' periodic look at the outbox (EDGEFN_STREAM_RECHECK_S)")
    args = parser.parse_args()
    # Agents stopped at the end leave their streams' tasks behind; nothing to report.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    if (args.replicas == 2 or args.kill_replica) and not args.postgres:
        parser.error("two replicas need --postgres (or EDGEFN_TEST_POSTGRES_URL)")
    if args.kill_replica and args.replicas != 2:
        parser.error("--kill-replica needs --replicas 2")
    print(f"load average at the start: {' '.join(f'{x:.1f}' for x in os.getloadavg())} "
          f"on {os.cpu_count()} cores")
    print(f"{'nodes':>6} {'as':>10} {'replicas':>8} {'deploys':>8} {'p50 ms':>8} "
          f"{'p99 ms':>8} {'max ms':>8} {'mean ms':>8}")
    for n in args.nodes:
        if args.replicas == 2:
            with pg_schema(args.postgres) as url:
                run(args, n, url)
        else:
            run(args, n, None)


if __name__ == "__main__":
    main()
