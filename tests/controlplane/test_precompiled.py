"""Precompiled artifacts on the control plane: versions compiled ahead for the engine
tags nodes report, stored beside the `.wasm` (local directory and S3 over moto's
server), handed only to nodes whose tag matches, and only through signed URLs."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from edgefn.sandbox import Limits, WasiOptions, create_engine
from tests.controlplane.conftest import ADMIN, CP, bearer

OTHER_TAG = "wasmtime-0.0.1-speed-epoch-riscv64"


@pytest.fixture(scope="module")
def tag() -> Iterator[str]:
    """The tag this control plane's wasmtime produces (the same host, the same library)."""
    engine = create_engine("wasmtime")
    yield engine.tag
    engine.close()


def precompiled(cp: CP, headers: dict[str, str], fid: str, version: str) -> httpx.Response:
    return cp.call("GET", f"/functions/{fid}/versions/{version}/precompiled", headers)


def wait_ready(cp: CP, fid: str, version: str, tag: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = {r["engine_tag"]: r for r in precompiled(cp, ADMIN, fid, version).json()}
        if tag in rows:
            return rows[tag]
        time.sleep(0.1)
    raise AssertionError(f"{fid}@{version} was not precompiled for {tag}")


def deploy_of(instructions: list[dict[str, Any]]) -> dict[str, Any]:
    return next(i for i in instructions if i["type"] == "deploy")


def fetch(cp: CP, url: str) -> httpx.Response:
    """A signed URL: the control plane's own (local store) or S3's."""
    if url.startswith("http://testserver/"):
        return cp.client.get(url)
    return httpx.get(url)


S3 = {"artifact_store": "s3", "s3_access_key_id": "test", "s3_secret_access_key": "test",
      "s3_create_bucket": True}


@pytest.mark.parametrize("store_kind", ["local", "s3"])
def test_a_deploy_carries_the_code_compiled_for_the_nodes_tag_only(
    store_kind: str, cp_factory: Any, moto_url: str, wasm: SimpleNamespace, tag: str
) -> None:
    extra: dict[str, Any] = {"precompile_poll_s": 0.2}
    if store_kind == "s3":
        extra |= {**S3, "s3_bucket": "precompiled", "s3_endpoint_url": moto_url}
    cp: CP = cp_factory(**extra)
    project = cp.project("alpha")
    dev = cp.member("dev@a.test", project)
    tokyo, riscv = cp.node("jp-t1", "tokyo-1"), cp.node("jp-t1", "riscv-1")
    cp.heartbeat(tokyo, engine_tags=[tag])
    cp.heartbeat(riscv, engine_tags=[OTHER_TAG])
    fn = cp.function(dev, "shop", owner_project_id=project)
    assert cp.upload(dev, fn["id"], "1.0.0", wasm.edge_v1).status_code == 201

    row = wait_ready(cp, fn["id"], "1.0.0", tag)
    assert row["state"] == "ready" and row["size"] > 0 and row["error"] is None
    # This control plane cannot produce another library's or another CPU's code.
    time.sleep(0.5)
    tags = [r["engine_tag"] for r in precompiled(cp, dev, fn["id"], "1.0.0").json()]
    assert tags == [tag]

    cp.ok("POST", f"/functions/{fn['id']}/deploy", dev, 202, json={"version": "1.0.0"})
    mine = deploy_of(cp.heartbeat(tokyo))
    (entry,) = mine["precompiled"]
    assert entry["engine_tag"] == tag and entry["sha256"] == row["sha256"]
    assert deploy_of(cp.heartbeat(riscv))["precompiled"] == []
    # The key sits beside the module's, named by the tag and the code's digest.
    path = urlsplit(entry["url"]).path
    assert path.endswith(f"functions/{fn['id']}/1.0.0.{tag}.{row['sha256']}.cwasm")

    code = fetch(cp, entry["url"])
    assert code.status_code == 200
    assert hashlib.sha256(code.content).hexdigest() == entry["sha256"]
    # It is what an engine of that tag loads instead of compiling.
    engine = create_engine("wasmtime")
    try:
        engine.compile(wasm.edge_v1, Limits(), WasiOptions(), precompiled=code.content).close()
    finally:
        engine.close()


def test_only_nodes_get_the_code_and_only_readers_see_the_list(
    cp_factory: Any, team: SimpleNamespace, wasm: SimpleNamespace, tag: str
) -> None:
    cp: CP = cp_factory(precompile_poll_s=0.2)
    node = cp.node("jp-t1", "tokyo-1")
    cp.heartbeat(node, engine_tags=[tag])
    fn = cp.function(team.a_dev, "shop", owner_project_id=team.a)
    assert cp.upload(team.a_dev, fn["id"], "1.0.0", wasm.edge_v1).status_code == 201
    wait_ready(cp, fn["id"], "1.0.0", tag)

    # The list: the function's readers only; another tenant learns nothing.
    assert precompiled(cp, team.a_viewer, fn["id"], "1.0.0").status_code == 200
    assert precompiled(cp, team.b_dev, fn["id"], "1.0.0").status_code == 404
    assert precompiled(cp, {}, fn["id"], "1.0.0").status_code == 401
    listed = precompiled(cp, team.a_dev, fn["id"], "1.0.0").text
    assert "url" not in listed and "artifact_key" not in listed

    cp.ok("POST", f"/functions/{fn['id']}/deploy", team.a_dev, 202, json={"version": "1.0.0"})
    url = deploy_of(cp.heartbeat(node))["precompiled"][0]["url"]
    assert fetch(cp, url).status_code == 200
    # The signature is the credential: without it, or with another's, nothing.
    bare = url.split("?")[0]
    assert cp.client.get(bare).status_code in (400, 403)
    forged = url[:-4] + ("0000" if not url.endswith("0000") else "1111")
    assert cp.client.get(forged).status_code == 403
    for headers in (team.a_dev, team.b_dev, ADMIN):
        assert cp.client.get(bare, headers=headers).status_code in (400, 403)

    # A function deleted takes its precompiled code with it.
    store = cp.client.app.state.cp.store  # type: ignore[attr-defined]
    key = urlsplit(url).path.removeprefix("/api/v1/artifacts/")
    assert store.size(key) is not None
    assert cp.call("DELETE", f"/functions/{fn['id']}", team.a_owner).status_code == 204
    assert store.size(key) is None


def test_a_node_reports_its_tags_and_bad_ones_are_refused(cp: CP, tag: str) -> None:
    node = cp.node("jp-t1", "tokyo-1")
    cp.heartbeat(node, engine_tags=[tag])
    listed = cp.ok("GET", "/nodes", ADMIN)
    items = listed["items"] if isinstance(listed, dict) else listed
    assert next(n for n in items if n["id"] == "tokyo-1")["engine_tags"] == [tag]
    # A heartbeat that says nothing of its tags keeps them.
    cp.heartbeat(node)
    items = cp.ok("GET", "/nodes", ADMIN)
    items = items["items"] if isinstance(items, dict) else items
    assert next(n for n in items if n["id"] == "tokyo-1")["engine_tags"] == [tag]
    for bad in (["../../etc"], ["x" * 201], [tag] * 9, "wasmtime"):
        r = cp.call("POST", "/nodes/tokyo-1/heartbeat", bearer(node["token"]),
                    json={"node_id": "tokyo-1", "engine_tags": bad})
        assert r.status_code in (400, 422), (bad, r.text)
