"""The cap on JSON request bodies (`max_json_body_bytes`) of a real CP under uvicorn
on loopback, on SQLite and PostgreSQL: 413 in the contract's shape before the body
is read (Content-Length) or as soon as a chunked body passes it, while uploads keep
their own, larger artifact cap."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from edgefn.cluster import free_port
from edgefn.controlplane.app import create_app
from tests.controlplane.conftest import ADMIN, make_settings

LIMIT = 1024
TOO_LARGE = {
    "error": {
        "code": "payload_too_large",
        "message": f"request body is over the limit of {LIMIT} bytes",
    }
}


@pytest.fixture
def base(tmp_path: Path, database_url: str, serve_app: Any) -> str:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = make_settings(tmp_path, database_url, public_url=url, max_json_body_bytes=LIMIT)
    serve_app(create_app(settings), port)
    return url


def raw_exchange(base: str, head: str, body: bytes) -> tuple[int, dict[str, Any]]:
    """Send `head` and `body` on a socket, never finishing the body, and read the
    answer: one that arrives proves the server did not wait for the rest."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.encode() + b"\r\n" + body)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    _, _, payload = rest.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in rest.lower().partition(b"\r\n\r\n")[0]:
        payload = payload.split(b"\r\n", 1)[1].rsplit(b"\r\n0", 1)[0]
    return int(status_line.split()[1]), json.loads(payload)


def padded(module: bytes, size: int) -> bytes:
    """`module` with a custom section of `size` zero bytes: still a valid module."""
    content = b"\x03pad" + bytes(size)
    length, leb = len(content), bytearray()
    while True:
        byte, length = length & 0x7F, length >> 7
        leb.append(byte | (0x80 if length else 0))
        if not length:
            break
    return module + b"\x00" + bytes(leb) + content


def headers(token: str, **more: str) -> str:
    lines = [f"Authorization: {token}", "Content-Type: application/json", "Host: cp"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in more.items()]
    return "\r\n".join(lines) + "\r\n"


def test_a_declared_size_over_the_cap_is_413_before_the_body(base: str) -> None:
    head = "POST /api/v1/projects HTTP/1.1\r\n" + headers(
        ADMIN["Authorization"], content_length=str(50 * 1024 * 1024))
    assert raw_exchange(base, head, b'{"name": "') == (413, TOO_LARGE)


def test_a_chunked_body_is_cut_at_the_cap(base: str) -> None:
    """The endpoint reads the body chunk by chunk; the one past the cap ends it."""
    chunk = b"x" * (LIMIT + 1)
    head = "POST /api/v1/projects HTTP/1.1\r\n" + headers(
        ADMIN["Authorization"], transfer_encoding="chunked")
    sent = b'{"name": "' + chunk
    body = f"{len(sent):x}\r\n".encode() + sent + b"\r\n"  # no last chunk follows
    assert raw_exchange(base, head, body) == (413, TOO_LARGE)
    # Nothing was made of it, and the server goes on serving.
    with httpx.Client(base_url=base + "/api/v1", headers=ADMIN, timeout=10) as api:
        assert api.get("/projects").json() == []


def test_under_the_cap_and_uploads_are_served(base: str, wasm: SimpleNamespace) -> None:
    with httpx.Client(base_url=base + "/api/v1", headers=ADMIN, timeout=10) as api:
        project = api.post("/projects", json={"name": "a" * 60})
        assert project.status_code == 201, project.text
        body = {"name": "hello", "owner_project_id": project.json()["id"],
                "env": {"K": "v" * (LIMIT - 200)}}
        assert len(json.dumps(body)) <= LIMIT
        fn = api.post("/functions", json=body)
        assert fn.status_code == 201, fn.text
        over = api.post("/functions", json={**body, "name": "big", "env": {"K": "v" * LIMIT}})
        assert (over.status_code, over.json()) == (413, TOO_LARGE)
        # A version upload is bounded by max_artifact_bytes, not by the JSON cap.
        module = padded(wasm.edge_v1, 4 * LIMIT)
        up = api.post(f"/functions/{fn.json()['id']}/versions", data={"version": "1.0.0"},
                      files={"artifact": ("m.wasm", module, "application/wasm")})
        assert up.status_code == 201, up.text
