"""Version uploads against a real uvicorn server on loopback, sent over a raw
socket so that the test sees how much of a body had gone out when the answer came:
strangers and oversize bodies are answered early, and nothing is left on disk."""

from __future__ import annotations

import select
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from edgefn.cluster import free_port
from edgefn.controlplane.app import create_app
from tests.controlplane.conftest import ADMIN, PASSWORD, bearer, make_settings

MB = 1024 * 1024
BOUNDARY = "edgefn-test-boundary"


@pytest.fixture
def server(
    tmp_path: Path, database_url: str, serve_app: Any, monkeypatch: pytest.MonkeyPatch
) -> SimpleNamespace:
    """A CP with a 1 MB artifact limit, a project with a developer, a viewer and a
    function, and a private temp dir (so that the test sees every temp file)."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    settings = make_settings(tmp_path, database_url, max_artifact_bytes=MB)
    port = free_port()
    serve_app(create_app(settings), port)
    api = httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1", timeout=30)

    def ok(method: str, path: str, headers: dict[str, str], **kw: Any) -> Any:
        r = api.request(method, path, headers=headers, **kw)
        assert r.is_success, r.text
        return r.json()

    project = ok("POST", "/projects", ADMIN, json={"name": "p"})["id"]
    other = ok("POST", "/projects", ADMIN, json={"name": "q"})["id"]
    tokens = {}
    for email, pid, role in (
        ("dev@p.test", project, "developer"),
        ("viewer@p.test", project, "viewer"),
        ("dev@q.test", other, "developer"),
    ):
        uid = ok("POST", "/users", ADMIN, json={"email": email, "password": PASSWORD})["id"]
        ok("POST", f"/projects/{pid}/members", ADMIN, json={"user_id": uid, "role": role})
        body = ok("POST", "/auth/login", {}, json={"email": email, "password": PASSWORD})
        tokens[email] = bearer(body["token"])
    fid = ok("POST", "/functions", tokens["dev@p.test"], json={"name": "hello"})["id"]
    return SimpleNamespace(
        port=port, api=api, settings=settings, temp=temp, fid=fid, tokens=tokens
    )


def _form_head(version: str) -> bytes:
    return (
        f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"version\"\r\n\r\n{version}\r\n"
        f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"artifact\"; "
        f"filename=\"m.wasm\"\r\nContent-Type: application/wasm\r\n\r\n"
    ).encode()


FORM_TAIL = f"\r\n--{BOUNDARY}--\r\n".encode()


def _zeros(total: int, chunk: int = 64 * 1024) -> Iterator[bytes]:
    block = b"\0" * chunk
    while total > 0:
        yield block[: min(chunk, total)]
        total -= chunk


def _chunked(chunks: Iterator[bytes]) -> Iterator[bytes]:
    for chunk in chunks:
        yield f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    yield b"0\r\n\r\n"


def _send_until_answered(
    port: int, fid: str, headers: dict[str, str], body: Iterator[bytes], *, length: int | None
) -> tuple[int, int]:
    """Send the request until the server answers; the status and the body bytes
    that had gone out by then."""
    lines = [
        f"POST /api/v1/functions/{fid}/versions HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}",
        "Connection: close",
        *(f"{k}: {v}" for k, v in headers.items()),
        f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked",
    ]
    sock = socket.create_connection(("127.0.0.1", port))
    try:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        sock.setblocking(False)
        sent = 0
        pending = b""
        answer = b""
        while True:
            readable, writable, _ = select.select([sock], [sock] if body else [], [], 20)
            assert readable or writable, "no answer and the socket takes no more"
            if readable:
                data = sock.recv(65536)
                answer += data
                if b"\r\n" in answer or not data:
                    break
                continue
            if not pending:
                pending = next(body, b"")
                if not pending:
                    body = iter(())
                    continue
            try:
                n = sock.send(pending)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += n
            pending = pending[n:]
        sock.setblocking(True)
        sock.settimeout(20)
        while b"\r\n" not in answer:
            data = sock.recv(65536)
            assert data, "connection closed without an answer"
            answer += data
        return int(answer.split(b" ", 2)[1]), sent
    finally:
        sock.close()


def _upload_body(size: int) -> Iterator[bytes]:
    yield _form_head("9.0.0")
    yield from _zeros(size)
    yield FORM_TAIL


def _length(size: int) -> int:
    return len(_form_head("9.0.0")) + size + len(FORM_TAIL)


@pytest.mark.parametrize(
    ("who", "status"),
    [(None, 401), ("viewer@p.test", 403), ("dev@q.test", 404)],
)
def test_stranger_upload_answered_before_the_body(
    server: SimpleNamespace, who: str | None, status: int
) -> None:
    """A 50 MB upload by nobody, by a viewer, by another project: answered while
    most of the body is still unsent (what went out is what the socket buffers hold)."""
    size = 50 * MB
    headers = server.tokens[who] if who else {}
    got, sent = _send_until_answered(
        server.port, server.fid, headers, _upload_body(size), length=_length(size)
    )
    assert got == status
    assert sent < size // 2, f"{sent} bytes had been sent"
    assert list(server.temp.iterdir()) == []


@pytest.mark.parametrize("declared", [True, False])
def test_oversize_upload_is_413_early(server: SimpleNamespace, declared: bool) -> None:
    """Over the 1 MB limit: refused from Content-Length at once, or, chunked, as
    soon as the stream passes the limit."""
    size = 50 * MB
    body = _upload_body(size)
    length = _length(size) if declared else None
    got, sent = _send_until_answered(
        server.port,
        server.fid,
        server.tokens["dev@p.test"],
        body if declared else _chunked(body),
        length=length,
    )
    assert got == 413
    assert sent < 12 * MB, f"{sent} bytes had been sent"
    assert list(server.temp.iterdir()) == []
    versions = server.api.get(f"/functions/{server.fid}/versions", headers=ADMIN).json()
    assert versions == []


def test_upload_at_the_limit_leaves_no_temp_files(
    server: SimpleNamespace, wasm: SimpleNamespace
) -> None:
    dev = server.tokens["dev@p.test"]
    r = server.api.post(
        f"/functions/{server.fid}/versions",
        headers=dev,
        data={"version": "1.0.0"},
        files={"artifact": ("m.wasm", wasm.edge_v1, "application/wasm")},
    )
    assert r.status_code == 201, r.text
    # Exactly at the limit passes the size check (and then fails as a module).
    r = server.api.post(
        f"/functions/{server.fid}/versions",
        headers=dev,
        data={"version": "1.1.0"},
        files={"artifact": ("m.wasm", b"\0" * MB, "application/wasm")},
    )
    assert r.status_code == 400 and "WebAssembly" in r.json()["error"]["message"], r.text
    r = server.api.post(
        f"/functions/{server.fid}/versions",
        headers=dev,
        data={"version": "1.2.0"},
        files={"artifact": ("m.wasm", b"\0" * (MB + 1), "application/wasm")},
    )
    assert r.status_code == 413, r.text
    assert r.json()["error"]["message"] == f"artifact is over the limit of {MB} bytes"
    assert list(server.temp.iterdir()) == []
    stored = server.settings.resolved_artifact_dir() / "functions" / server.fid
    assert [p.name for p in stored.iterdir()] == ["1.0.0.wasm"]


@pytest.mark.parametrize(
    ("form", "words"),
    [
        ({"data": {"version": "1.0.0", "extra": "x"}}, "unknown form field 'extra'"),
        ({"data": {"version": "1" * 101}}, "longer than 100"),
        ({"files": {"artifact": ("m.wasm", b"\0asm", "application/wasm")}}, "version"),
        ({"content": b"--x\r\nbroken", "headers": {"content-type": "multipart/form-data"}},
         "multipart"),
        ({"json": {"version": "1.0.0"}}, "form"),
    ],
)
def test_malformed_forms_are_400(
    server: SimpleNamespace, form: dict[str, Any], words: str
) -> None:
    headers = {**server.tokens["dev@p.test"], **form.pop("headers", {})}
    r = server.api.post(f"/functions/{server.fid}/versions", headers=headers, **form)
    assert r.status_code == 400, r.text
    assert words in r.json()["error"]["message"]


def test_openapi_describes_the_multipart_body(server: SimpleNamespace) -> None:
    spec = httpx.get(f"http://127.0.0.1:{server.port}/openapi.json").json()
    op = spec["paths"]["/api/v1/functions/{function_id}/versions"]["post"]
    schema = op["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert schema["required"] == ["version"]
    assert schema["properties"]["artifact"]["format"] == "binary"
    assert "413" in op["responses"]
