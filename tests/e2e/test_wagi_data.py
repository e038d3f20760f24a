"""A WAGI application's volumes shipped through the control plane, with real
processes: `edgefn deploy --modules-toml` packs them into each version's data
archive, an edge node unpacks and mounts it read-only, and the application answers
as under `edgefn edge serve --modules-toml`. Other tenants cannot reach the archive;
a tampered one is refused by the node."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgefn.cluster import Cluster, Edge, wait_until
from edgefn.data_archive import pack
from tests.conftest import wasm_path
from tests.e2e.conftest import edgefn, module
from tests.e2e.test_route_tenancy import Intruder
from tests.edge.node.test_server import start_node, stop

pytestmark = pytest.mark.e2e

GREETING = "greetings from a volume\n"
# What the application is asked, the same on both nodes.
REQUESTS = [
    "/volume",
    "/site?case=read&path=/index.html",
    "/site?case=read&path=/sub/page.txt",
    "/site?case=list&path=/sub",
    # Read-only, and `..` does not leave the volume.
    "/site?case=write&path=/new.txt",
    "/site?case=read&path=/../../../../etc/hostname",
    "/site?case=read&path=/missing.txt",
]


def write_app(root: Path) -> Path:
    """A WAGI application folder: two C programs, their folders, the modules.toml."""
    app = root / "app"
    (app / "static").mkdir(parents=True)
    (app / "site" / "sub").mkdir(parents=True)
    for name in ("wagi_volume", "wagi_cases"):
        shutil.copy(wasm_path(name), app / f"{name}.wasm")
    (app / "static" / "greeting.txt").write_text(GREETING)
    (app / "site" / "index.html").write_text("<h1>served from the archive</h1>\n")
    (app / "site" / "sub" / "page.txt").write_text("a page below\n")
    (app / "modules.toml").write_text("""
[[module]]
route = "/volume"
module = "wagi_volume.wasm"
volumes = { "/data" = "static" }

[[module]]
route = "/site"
module = "wagi_cases.wasm"
volumes = { "/" = "site" }
""")
    return app / "modules.toml"


def answers(get: Any) -> list[tuple[int, str]]:
    out = []
    for path in REQUESTS:
        r = get(path)
        out.append((r.status_code, r.text))
    return out


def test_a_wagi_app_through_the_control_plane_answers_as_it_does_locally(
    cluster: Cluster, tmp_path: Path,
) -> None:
    toml = write_app(tmp_path)
    edge = cluster.add_edge("tokyo-1", "jp-t1", region="tokyo")
    result = edgefn(cluster, "deploy", "--modules-toml", str(toml), "--timeout", "120")
    assert result.returncode == 0, result.stdout + result.stderr
    wait_until("the volume", lambda: edge.get("/volume").text == GREETING, 120)
    shipped = answers(edge.get)
    assert shipped[0] == (200, GREETING)
    assert shipped[1] == (200, "<h1>served from the archive</h1>\n")
    assert shipped[3][0] == 200 and "page.txt" in shipped[3][1].split()
    assert shipped[4][1].startswith("denied errno=")
    assert not shipped[5][1].startswith("<") and "denied errno=" in shipped[5][1]
    assert not list(edge.data_dir.rglob("new.txt"))

    # Each version's archive, unpacked once under its digest in the node's cache.
    versions = {f["name"]: cluster.call("GET", f"/functions/{f['id']}/versions")[0]
                for f in cluster.call("GET", "/functions")}
    # Named after their files, as the control plane names functions.
    for name, mount in (("wagi-volume", "/data"), ("wagi-cases", "/")):
        data = versions[name]["data"]
        assert list(data["mounts"]) == [mount]
        assert (edge.data_dir / "cache" / "_data" / data["sha256"]).is_dir()

    # The same map served by a node of its own, the volumes from the host.
    (tmp_path / "local").mkdir()
    local = start_node(tmp_path / "local", None, "--modules-toml", str(toml),
                       "--workers", "1", start_timeout_s=120)
    try:
        with httpx.Client(base_url=local.url, timeout=10) as c:
            wait_until("the local node", lambda: c.get("/volume").status_code == 200, 60)
            assert answers(c.get) == shipped
    finally:
        stop(local)

    # Deploying again uploads nothing and creates nothing.
    again = edgefn(cluster, "deploy", "--modules-toml", str(toml), "--timeout", "120")
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("already uploaded, skipped") == 2


def upload(cluster: Cluster, headers: dict[str, str], fid: str, version: str,
           greeting: str) -> httpx.Response:
    folder = cluster.root / f"static-{version}"
    folder.mkdir()
    (folder / "greeting.txt").write_text(greeting)
    archive, mounts = pack({"/data": folder})
    return httpx.post(f"{cluster.api}/functions/{fid}/versions", headers=headers, timeout=30,
                      data={"version": version, "mounts": json.dumps(mounts)},
                      files={"artifact": ("m.wasm", module("wagi_volume"), "application/wasm"),
                             "data": ("data.tar.gz", archive, "application/gzip")})


def serves(edge: Edge, text: str) -> bool:
    r = edge.get("/volume")
    return r.status_code == 200 and r.text == text


# Both node streams: the gRPC message and the JSON form carry the archive alike.
@pytest.mark.parametrize("transport", ["grpc", "websocket"])
def test_a_tampered_archive_is_refused_and_the_old_version_keeps_serving(
    cluster: Cluster,
) -> None:
    edge = cluster.add_edge("tokyo-1", "jp-t1", region="tokyo")
    fid = cluster.function("site", entrypoint="_start")
    assert upload(cluster, cluster.headers, fid, "1.0.0", "v1\n").status_code == 201
    v2 = upload(cluster, cluster.headers, fid, "2.0.0", "v2\n").json()
    cluster.route(fid, "/volume")
    cluster.deploy(fid, "1.0.0")
    wait_until("v1", lambda: serves(edge, "v1\n"), 60)

    stored = cluster.root / "cp" / "artifacts" / "functions" / fid / "2.0.0.data.tar.gz"
    data = bytearray(stored.read_bytes())
    data[-12] ^= 0xFF
    stored.write_bytes(bytes(data))
    assert hashlib.sha256(data).hexdigest() != v2["data"]["sha256"]

    dep = cluster.deploy(fid, "2.0.0")
    wait_until("error reported", lambda: cluster.node_states(dep) == {"tokyo-1": "error"}, 60)
    (node,) = cluster.deployment(dep)["nodes"]
    assert "sha256 mismatch for data archive" in node["message"]
    assert serves(edge, "v1\n")
    assert not (edge.data_dir / "cache" / "_data" / v2["data"]["sha256"]).exists()


def test_another_tenant_cannot_reference_or_fetch_the_archive(cluster: Cluster) -> None:
    fid = cluster.function("site", entrypoint="_start")
    assert upload(cluster, cluster.headers, fid, "1.0.0", "mine\n").status_code == 201
    assert cluster.call("GET", f"/functions/{fid}/versions")[0]["data"] is not None
    intruder = Intruder(cluster)
    for method, path in (("GET", f"/functions/{fid}/versions/1.0.0/data"),
                         ("GET", f"/functions/{fid}/versions"),
                         ("POST", f"/functions/{fid}/deploy")):
        r = intruder.call(method, path, json={"version": "1.0.0"} if method == "POST" else None)
        assert r.status_code == 404, (path, r.text)
    # Nor through an upload: to the victim's function, 404; its own version's mount
    # map names directories of the archive it sends, and without one it is refused.
    assert upload(cluster, intruder.headers, fid, "2.0.0", "theirs\n").status_code == 404
    own = intruder.ok("POST", "/functions", json={"name": "copy", "entrypoint": "_start"})
    r = intruder.call("POST", f"/functions/{own['id']}/versions",
                      data={"version": "1.0.0", "mounts": json.dumps({"/data": "volume-0"})},
                      files={"artifact": ("m.wasm", module("wagi_volume"), "application/wasm")})
    assert r.status_code == 400 and "both or neither" in r.text
    # The stored archive answers a signed URL only.
    url = f"{cluster.api}/artifacts/functions/{fid}/1.0.0.data.tar.gz"
    r = httpx.get(url, params={"expires": 4102444800, "sig": "0" * 64}, timeout=10)
    assert r.status_code == 403
