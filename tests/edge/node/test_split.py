"""A split function on a real node over HTTP: the share of clients, and stickiness."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from edgefn.edge.spec import NodeState, SplitState, load_function_dir, write_state
from tests.edge.node.test_server import metric_value, start_node, stop, write_function

ROUTES = [{"host": "*", "path": "/shop/*"}]


def split_state(tmp_path: Path, percent: int, key: str) -> None:
    """`shop` 2.0.0 (`headers`: answers `x-one`) split with 1.0.0 (`echo`)."""
    root = tmp_path / "functions"
    write_function(root / "new", "shop", "headers", ROUTES, version="2.0.0")
    write_function(root / "old", "shop", "echo", ROUTES, version="1.0.0")
    new, old = load_function_dir(root / "new" / "shop"), load_function_dir(root / "old" / "shop")
    state = NodeState(generation=1, functions=(new,),
                      splits={"shop": SplitState(percent=percent, key=key, previous=old)})
    (tmp_path / "data").mkdir()
    write_state(tmp_path / "data" / "state.json", state)


def test_ten_percent_of_clients_reach_the_new_version_each_always_the_same(
    tmp_path: Path,
) -> None:
    split_state(tmp_path, 10, "header:x-user")
    node = start_node(tmp_path, None)
    try:
        with httpx.Client(base_url=node.url, timeout=10) as c:
            def new(user: str) -> bool:
                r = c.get("/shop/x", headers={"x-user": user})
                assert r.status_code == 200
                return r.headers.get("x-one") == "1"

            chosen = [new(f"client-{i}") for i in range(2000)]
            assert 0.07 <= sum(chosen) / 2000 <= 0.13, sum(chosen)
            for user in ("client-1", "client-2", "client-3"):
                again = {new(user) for _ in range(20)}
                assert again == {chosen[int(user[7:])]}
                chosen += [*again] * 20
        # Metrics and log lines tell the versions apart.
        text = httpx.get(f"{node.metrics_url}/metrics").text
        count = {v: metric_value(text, "wasm_invoke_count_total", function_id="shop", version=v)
                 for v in ("1.0.0", "2.0.0")}
        assert count == {"1.0.0": chosen.count(False), "2.0.0": chosen.count(True)}
        versions = {json.loads(line)["version"] for line in node.log_file.read_text().splitlines()
                    if '"function_id"' in line}
        assert versions == {"1.0.0", "2.0.0"}
    finally:
        stop(node)
