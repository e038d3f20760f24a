"""A version's data archive through the API: uploaded with the version, checked as
the build service checks sources, stored (local disk and S3), carried by deploys
with a fresh URL, and out of other tenants' reach."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from edgefn.controlplane.app import create_app
from tests.builder.sources import tgz
from tests.controlplane.conftest import ADMIN, CP, make_settings
from tests.controlplane.test_artifacts import free_port
from tests.test_data_archive import HOSTILE

SITE = tgz({"site/index.html": b"<p>hello</p>\n", "site/css/a.css": b"p{}\n"})
MOUNTS = {"/static": "site", "/css/": "site/css"}


def upload(client: Any, fid: str, version: str, wasm: bytes, data: bytes | None,
           mounts: Any, headers: dict[str, str] | None = None,
           prefix: str = "/api/v1") -> httpx.Response:
    """POST a version (`client`: the API's base URL, or the app's with `prefix`)."""
    fields: dict[str, str] = {"version": version}
    files: dict[str, Any] = {"artifact": ("m.wasm", wasm, "application/wasm")}
    if data is not None:
        files["data"] = ("data.tar.gz", data, "application/gzip")
    if mounts is not None:
        fields["mounts"] = mounts if isinstance(mounts, str) else json.dumps(mounts)
    response: httpx.Response = client.post(f"{prefix}/functions/{fid}/versions", data=fields,
                                           files=files, headers=headers)
    return response


@pytest.mark.parametrize("store_kind", ["local", "s3"])
def test_a_data_archive_travels_with_its_version(
    store_kind: str, tmp_path: Path, database_url: str, moto_url: str, serve_app: Any,
    wasm: SimpleNamespace,
) -> None:
    port = free_port()
    extra: dict[str, Any] = {"public_url": f"http://127.0.0.1:{port}"}
    if store_kind == "s3":
        extra |= {"artifact_store": "s3", "s3_bucket": "data-flow", "s3_endpoint_url": moto_url,
                  "s3_access_key_id": "test", "s3_secret_access_key": "test",
                  "s3_create_bucket": True}
    serve_app(create_app(make_settings(tmp_path, database_url, **extra)), port)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1", headers=ADMIN) as api:
        project = api.post("/projects", json={"name": "p"}).json()["id"]
        fn = api.post("/functions", json={"name": "site", "owner_project_id": project}).json()
        created = upload(api, fn["id"], "1.0.0", wasm.wagi, SITE, MOUNTS, prefix="")
        assert created.status_code == 201, created.text
        data = created.json()["data"]
        assert data == {"sha256": hashlib.sha256(SITE).hexdigest(), "size": len(SITE),
                        "mounts": {"/static": "site", "/css": "site/css"}}
        assert api.get(f"/functions/{fn['id']}/versions").json()[0]["data"] == data
        got = api.get(f"/functions/{fn['id']}/versions/1.0.0/data")
        assert got.status_code == 200 and got.content == SITE
        # A version without an archive has none to give.
        plain = upload(api, fn["id"], "2.0.0", wasm.wagi, None, None, prefix="")
        assert plain.json()["data"] is None
        assert api.get(f"/functions/{fn['id']}/versions/2.0.0/data").status_code == 404

        node = api.post("/nodes", json={"pop_id": "jp-t1"}).json()
        assert api.post(f"/functions/{fn['id']}/deploy",
                        json={"version": "1.0.0"}).status_code == 202
        beat = httpx.post(f"http://127.0.0.1:{port}/api/v1/nodes/{node['id']}/heartbeat",
                          headers={"Authorization": f"Bearer {node['token']}"},
                          json={"node_id": node["id"]})
        deploy = next(i for i in beat.json()["instructions"] if i["type"] == "deploy")
        carried = deploy["data"]
        assert {k: carried[k] for k in ("sha256", "size", "mounts")} == data
        fetched = httpx.get(carried["url"])  # the signed URL is the credential
        assert fetched.status_code == 200 and fetched.content == SITE
        # A node that lost its copy asks for a fresh URL, as for the module.
        grant = httpx.get(
            f"http://127.0.0.1:{port}/api/v1/nodes/{node['id']}/artifacts/{fn['id']}/1.0.0",
            headers={"Authorization": f"Bearer {node['token']}"})
        assert grant.status_code == 200, grant.text
        assert httpx.get(grant.json()["data_url"]).content == SITE


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_archive_is_refused(cp: CP, team: SimpleNamespace, wasm: SimpleNamespace,
                                      name: str) -> None:
    fid = cp.function(team.a_dev, "site")["id"]
    r = upload(cp.client, fid, "1.0.0", wasm.wagi, HOSTILE[name], {"/": "site"}, team.a_dev)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"].startswith("data archive refused")
    assert cp.ok("GET", f"/functions/{fid}/versions", team.a_dev) == []


@pytest.mark.parametrize(("data", "mounts", "why"), [
    (SITE, None, "both or neither"),
    (None, {"/": "site"}, "both or neither"),
    (SITE, "not json", "mounts: not JSON"),
    (SITE, ["/", "site"], "a JSON object"),
    (SITE, {"/": "missing"}, "no directory 'missing'"),
    (SITE, {"/": "/etc"}, "absolute"),
    (SITE, {"/": "../x"}, "leads out of the archive"),
    (SITE, {"data": "site"}, "not an absolute path"),
])
def test_a_bad_mount_map_is_refused(cp: CP, team: SimpleNamespace, wasm: SimpleNamespace,
                                    data: bytes | None, mounts: Any, why: str) -> None:
    fid = cp.function(team.a_dev, "site")["id"]
    r = upload(cp.client, fid, "1.0.0", wasm.wagi, data, mounts, team.a_dev)
    assert r.status_code == 400 and why in r.json()["error"]["message"], r.text
    assert cp.ok("GET", f"/functions/{fid}/versions", team.a_dev) == []


def test_the_archive_limits_hold(cp_factory: Any, wasm: SimpleNamespace) -> None:
    cp = cp_factory(max_data_bytes=4096, max_data_unpacked_bytes=64 * 1024, max_data_files=3)
    project = cp.project("p")
    fid = cp.ok("POST", "/functions", ADMIN, 201,
                json={"name": "site", "owner_project_id": project})["id"]
    r = upload(cp.client, fid, "1.0.0", wasm.wagi, SITE + bytes(4096), {"/": "site"}, ADMIN)
    assert r.status_code == 413 and "data is over the limit of 4096 bytes" in r.text
    many = tgz({f"site/{i}.txt": b"x" for i in range(4)})
    r = upload(cp.client, fid, "1.0.0", wasm.wagi, many, {"/": "site"}, ADMIN)
    assert r.status_code == 400 and "more than 3 files" in r.text
    bomb = tgz({"site/zeros.bin": bytes(1024 * 1024)})
    assert len(bomb) < 4096
    r = upload(cp.client, fid, "1.0.0", wasm.wagi, bomb, {"/": "site"}, ADMIN)
    assert r.status_code == 400 and "unpacks to more than" in r.text
    assert cp.ok("GET", f"/functions/{fid}/versions", ADMIN) == []


def test_another_tenant_cannot_reach_a_versions_archive(
    cp: CP, team: SimpleNamespace, wasm: SimpleNamespace,
) -> None:
    fid = cp.function(team.a_dev, "site")["id"]
    assert upload(cp.client, fid, "1.0.0", wasm.wagi, SITE, MOUNTS, team.a_dev).status_code == 201
    # A's viewer may read it; B learns nothing of the function, its versions or its files.
    assert cp.call("GET", f"/functions/{fid}/versions/1.0.0/data", team.a_viewer).content == SITE
    for path in (f"/functions/{fid}/versions/1.0.0/data", f"/functions/{fid}/versions"):
        r = cp.call("GET", path, team.b_dev)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = upload(cp.client, fid, "2.0.0", wasm.wagi, SITE, MOUNTS, team.b_dev)
    assert r.status_code == 404
    # The store's URL of it answers only with a valid signature.
    r = cp.call("GET", f"/artifacts/functions/{fid}/1.0.0.data.tar.gz?expires=9999999999&sig=0")
    assert r.status_code == 403
    # Nor can B's own version name A's files: its mount map names directories inside
    # the archive B sends, never one stored elsewhere.
    fb = cp.function(team.b_dev, "copy")["id"]
    r = upload(cp.client, fb, "1.0.0", wasm.wagi, None, MOUNTS, team.b_dev)
    assert r.status_code == 400
