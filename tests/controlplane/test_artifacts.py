"""Both artifact stores, behind one protocol: S3 against moto's server on loopback
(the real wire protocol), the local store behind a real uvicorn server; signed
URLs used with a plain HTTP client."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from edgefn.cluster import free_port
from edgefn.controlplane.app import create_app
from edgefn.controlplane.artifacts import ArtifactStore, LocalArtifactStore, UrlSigner
from edgefn.controlplane.artifacts.s3 import S3ArtifactStore
from edgefn.controlplane.errors import ArtifactStoreError, NotFound
from tests.controlplane.conftest import ADMIN, make_settings


def s3_store(moto_url: str, bucket: str) -> S3ArtifactStore:
    return S3ArtifactStore(
        bucket=bucket,
        endpoint_url=moto_url,
        region="us-east-1",
        access_key_id="test",
        secret_access_key="test",
        create_bucket=True,
    )


def _exercise(store: ArtifactStore) -> None:
    key = "functions/f1/1.0.0.wasm"
    assert store.size(key) is None
    url = store.put(key, b"\0asm-bytes")
    assert url.endswith(key)
    assert store.get(key) == b"\0asm-bytes" and store.size(key) == 10
    with pytest.raises(NotFound):
        store.get("functions/f1/missing.wasm")
    store.delete(key)
    assert store.size(key) is None


def test_local_store_protocol(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path, signer=UrlSigner("k" * 32), public_url="http://x")
    _exercise(store)
    with pytest.raises(NotFound):
        store.get("../../etc/passwd")


def test_s3_store_protocol_and_presigned_urls(moto_url: str) -> None:
    store = s3_store(moto_url, "artifacts-proto")
    _exercise(store)
    key = "functions/f2/staging/upload.wasm"
    put = httpx.put(store.presign_put(key, 60), content=b"uploaded")
    assert put.status_code == 200, put.text
    get = httpx.get(store.presign_get(key, 60))
    assert get.status_code == 200 and get.content == b"uploaded"
    # moto does not check presigned signatures, so a forged one is not tested here;
    # the local store's own signatures are (test_functions, test_deployments).


def test_s3_errors_do_not_leak_botocore() -> None:
    port = free_port()  # nothing listens there
    store = S3ArtifactStore(
        bucket="b",
        endpoint_url=f"http://127.0.0.1:{port}",
        access_key_id="x",
        secret_access_key="y",
    )
    store._client.meta.config.retries = {"max_attempts": 0}
    with pytest.raises(ArtifactStoreError):
        store.put("functions/x/1.0.0.wasm", b"data")


@pytest.mark.parametrize("store_kind", ["local", "s3"])
def test_full_flow_over_real_http(
    store_kind: str,
    tmp_path: Path,
    database_url: str,
    moto_url: str,
    serve_app: Any,
    wasm: SimpleNamespace,
) -> None:
    """Upload through upload_url, register a version, deploy, and let a node fetch the
    module through the URL its instruction carries, all with a plain HTTP client."""
    port = free_port()
    extra: dict[str, Any] = {"public_url": f"http://127.0.0.1:{port}"}
    if store_kind == "s3":
        extra |= {
            "artifact_store": "s3",
            "s3_bucket": "artifacts-flow",
            "s3_endpoint_url": moto_url,
            "s3_access_key_id": "test",
            "s3_secret_access_key": "test",
            "s3_create_bucket": True,
        }
    serve_app(create_app(make_settings(tmp_path, database_url, **extra)), port)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1", headers=ADMIN) as api:
        project = api.post("/projects", json={"name": "p"}).json()["id"]
        fn = api.post("/functions", json={"name": "hello", "owner_project_id": project}).json()
        assert httpx.put(fn["upload_url"], content=wasm.edge_v1).status_code == 200
        version = api.post(f"/functions/{fn['id']}/versions", data={"version": "1.0.0"})
        assert version.status_code == 201, version.text
        prefix = "s3://artifacts-flow/" if store_kind == "s3" else "local:"
        assert version.json()["artifact_url"] == f"{prefix}functions/{fn['id']}/1.0.0.wasm"
        node = api.post("/nodes", json={"pop_id": "jp-t1"}).json()
        deploy = api.post(f"/functions/{fn['id']}/deploy", json={"version": "1.0.0"})
        assert deploy.status_code == 202
        beat = httpx.post(
            f"http://127.0.0.1:{port}/api/v1/nodes/{node['id']}/heartbeat",
            headers={"Authorization": f"Bearer {node['token']}"},
            json={"node_id": node["id"]},
        )
        url = next(i for i in beat.json()["instructions"] if i["type"] == "deploy")["artifact_url"]
        fetched = httpx.get(url)  # no credentials: the URL is the credential
        assert fetched.status_code == 200 and fetched.content == wasm.edge_v1
