"""What route matching and building cost with tenancy: `Router.match` over a table of
many projects' routes (exact hosts, wildcards, `*` paths), and building that table.

The figures to compare are within one run: a match on a held host (falls back to
its project's `*` routes), on a host nobody routes, and a miss; the table build
per route. Matching does no tenancy work per request: it is decided at build.

    python bench/routing.py [--projects 200] [--routes-per-project 50] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

from edgefn.contract import RouteSpec
from edgefn.edge.worker.routing import Router


def table(projects: int, per_project: int) -> list[RouteSpec]:
    routes = []
    for p in range(projects):
        project = f"p{p}"
        for r in range(per_project):
            kind = r % 3
            if kind == 0:
                host, path = f"h{r}.p{p}.test", f"/api/v{r}/*"
            elif kind == 1:
                host, path = f"*.w{r}.p{p}.test", "/*"
            else:
                host, path = "*", f"/p{p}/r{r}/*"
            routes.append(
                RouteSpec(
                    id=f"{p}-{r}", host=host, path=path, function_id=f"f{p}", project_id=project
                )
            )
    return routes


def per_call_ns(fn: object, calls: int, rounds: int) -> float:
    call = fn  # type: ignore[assignment]
    samples = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for _ in range(calls):
            call()  # type: ignore[operator]
        samples.append((time.perf_counter_ns() - start) / calls)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--projects", type=int, default=200)
    parser.add_argument("--routes-per-project", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    routes = table(args.projects, args.routes_per_project)
    start = time.perf_counter()
    router = Router(routes)
    build_s = time.perf_counter() - start
    print(
        f"{len(routes)} routes of {args.projects} projects: built in {build_s * 1000:.1f} ms "
        f"({build_s / len(routes) * 1e6:.2f} us a route), {router.size} kept"
    )
    cases = {
        "held host, host route": ("h3.p7.test", "/api/v3/items/1"),
        "held host, wildcard": ("a.w1.p7.test", "/x"),
        "held host, own * route": ("h3.p7.test", "/p7/r2/x"),
        "unrouted host, * route": ("nobody.test", "/p7/r2/x/y"),
        "miss": ("nobody.test", "/none/of/these"),
    }
    for name, (host, path) in cases.items():
        ns = per_call_ns(lambda h=host, p=path: router.match(h, p, "GET"), 20_000, args.rounds)
        print(f"match, {name}: {ns:.0f} ns")


if __name__ == "__main__":
    main()
