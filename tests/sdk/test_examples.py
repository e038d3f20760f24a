"""Every SDK example, compiled from source, answers its golden.json: in-process through
the edge runtime (KV in SQLite and in Redis), and over HTTP from `edgefn edge serve`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest

from edgefn.cli.golden import (
    Upstream,
    compare,
    read_golden,
    run_golden,
    stub_upstream,
    with_upstream,
)
from tests.edge.conftest import Namespaces, drop_redis_namespaces
from tests.edge.node.test_server import start_node, stop
from tests.sdk.conftest import EXAMPLE_LIST, BuiltExamples

NAMES = [e.name for e in EXAMPLE_LIST]
KV_EXAMPLES = [e.name for e in EXAMPLE_LIST if e.name.endswith("-kv-counter")]


@pytest.mark.parametrize("name", NAMES)
def test_example_answers_its_golden_responses(name: str, built_example: BuiltExamples) -> None:
    results = run_golden(built_example(name))
    assert results
    assert [(r.name, r.failures) for r in results if not r.ok] == []


@pytest.mark.parametrize("name", KV_EXAMPLES)
def test_kv_counter_over_redis(name: str, built_example: BuiltExamples, tmp_path: Path,
                               redis_url: str, new_namespace: Namespaces) -> None:
    # A function id of its own: the Redis is shared, the golden count starts at 1.
    folder = tmp_path / name
    shutil.copytree(built_example(name), folder)
    manifest = json.loads((folder / "function.json").read_text())
    fid = new_namespace()
    manifest["id"] = fid
    (folder / "function.json").write_text(json.dumps(manifest))
    try:
        results = run_golden(folder, kv_url=redis_url)
        assert [(r.name, r.failures) for r in results if not r.ok] == []
    finally:
        drop_redis_namespaces(redis_url, new_namespace.prefix)


def test_examples_over_http(built_example: BuiltExamples, tmp_path: Path) -> None:
    """One node serves every example as `edgefn edge serve --functions` does; each
    answers its golden responses over real HTTP, fetches reach a loopback upstream."""
    root = tmp_path / "functions"
    goldens = {}
    stub = Upstream(body="hello from upstream\n")
    with stub_upstream(stub) as upstream_url:
        for name in NAMES:
            folder = root / name
            shutil.copytree(built_example(name), folder)
            golden = read_golden(folder)
            if golden.upstream is not None:
                assert golden.upstream == stub
                manifest = json.loads((folder / "function.json").read_text())
                patched = with_upstream(manifest, golden.upstream.env, upstream_url)
                (folder / "function.json").write_text(json.dumps(patched))
            goldens[name] = golden
        node = start_node(tmp_path, root, "--allow-private-egress", "127.0.0.0/8")
        try:
            failures = []
            with httpx.Client(base_url=node.url, timeout=10) as client:
                for name, golden in goldens.items():
                    for case in golden.cases:
                        req = case.request
                        r = client.request(req.method, req.path, content=req.body.encode(),
                                           headers={"host": req.host, **req.headers})
                        diff = compare(case.response, r.status_code,
                                       list(r.headers.items()), r.content)
                        if diff:
                            failures.append((name, case.name, diff))
            assert failures == []
        finally:
            stop(node)
