"""`Http1Client` against scripted servers on loopback: each test says byte for byte what
the server answers, so keep-alive, framing, caps and broken peers are all exercised."""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpcore
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edgefn.edge.capabilities.egress import GuardedBackend
from edgefn.edge.capabilities.egress_rules import EgressRules
from edgefn.edge.capabilities.errors import CallFailed, QuotaExceeded
from edgefn.edge.capabilities.http1 import Http1Client, Response

# A connection's script: given the socket's reader, it reads requests and writes answers.
Script = Callable[[socket.socket], None]


class ScriptedServer:
    """Accepts connections on 127.0.0.1 and runs `script` on each, in a thread."""

    def __init__(self, script: Script, tls: ssl.SSLContext | None = None) -> None:
        self.script = script
        self.tls = tls
        self.connections = 0
        self.requests: list[bytes] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            self.script(conn)
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()

    def read_request(self, conn: socket.socket) -> bytes:
        """One request head (and its content-length body); b"" at the end of the stream."""
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return b""
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            rest += conn.recv(65536)
        self.requests.append(head + b"\r\n\r\n" + rest)
        return head

    def close(self) -> None:
        self._sock.close()


Serve = Callable[..., ScriptedServer]
MakeClient = Callable[..., Http1Client]


@pytest.fixture
def serve() -> Iterator[Callable[..., ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def make(script: Callable[[ScriptedServer, socket.socket], None],
             tls: ssl.SSLContext | None = None) -> ScriptedServer:
        server: ScriptedServer
        server = ScriptedServer(lambda conn: script(server, conn), tls)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def client() -> Iterator[Callable[..., Http1Client]]:
    made: list[Http1Client] = []

    def make(ssl_context: ssl.SSLContext | None = None, **kwargs: object) -> Http1Client:
        backend = GuardedBackend(EgressRules(("127.0.0.0/8",)), allow_private=True)
        made.append(Http1Client(backend, ssl_context or ssl.create_default_context(),
                                **kwargs))  # type: ignore[arg-type]
        return made[-1]

    yield make
    for c in made:
        c.close()


def get(client: Http1Client, port: int, path: bytes = b"/", method: str = "GET",
        headers: list[tuple[bytes, bytes]] | None = None, body: bytes = b"",
        max_body: int = 1 << 20, scheme: str = "http", host: str = "127.0.0.1") -> Response:
    return client.exchange(method, (scheme, host, port), path, f"{host}:{port}".encode(),
                           headers or [], body, max_body=max_body)


def keep_alive_answers(body: bytes) -> Callable[[ScriptedServer, socket.socket], None]:
    def script(server: ScriptedServer, conn: socket.socket) -> None:
        while server.read_request(conn):
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
    return script


def test_sequential_requests_reuse_one_connection(serve: Serve, client: MakeClient) -> None:
    server = serve(keep_alive_answers(b"hello"))
    c = client()
    for _ in range(5):
        response = get(c, server.port)
        assert (response.status, response.body) == (200, b"hello")
    assert (c.opened, server.connections, len(server.requests)) == (1, 1, 5)
    assert server.requests[0].startswith(b"GET / HTTP/1.1\r\nhost: 127.0.0.1:%d\r\n" % server.port)


def test_concurrent_requests_open_several_and_keep_at_most_max_idle(
    serve: Serve, client: MakeClient
) -> None:
    gate = threading.Barrier(4)

    def script(server: ScriptedServer, conn: socket.socket) -> None:
        while server.read_request(conn):
            gate.wait(timeout=5)  # all four in flight at once: four connections
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")

    server = serve(script)
    c = client(max_idle=2)
    threads = [threading.Thread(target=get, args=(c, server.port)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (c.opened, c.idle_count) == (4, 2)


def test_chunked_body_after_an_interim_answer(serve: Serve, client: MakeClient) -> None:
    def script(server: ScriptedServer, conn: socket.socket) -> None:
        server.read_request(conn)
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n"
                     b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n"
                     b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        server.read_request(conn)

    server = serve(script)
    response = get(client(), server.port, method="POST", body=b"data")
    assert (response.status, response.body) == (201, b"hello world")
    assert (b"X-A", b"1") in response.headers
    assert server.requests[0].endswith(b"content-length: 4\r\n\r\ndata")


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n" + b"x" * 100,   # declared
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n64\r\n" + b"x" * 100 + b"\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n" + b"x" * 100,  # ended by the close
])
def test_a_body_over_the_cap_is_refused(
    serve: Serve, client: MakeClient, answer: bytes
) -> None:
    def script(server: ScriptedServer, conn: socket.socket) -> None:
        server.read_request(conn)
        conn.sendall(answer)

    server = serve(script)
    with pytest.raises(QuotaExceeded):
        get(client(), server.port, max_body=99)
    assert get(client(), server.port, max_body=100).body == b"x" * 100


@pytest.mark.parametrize("header", [
    (b"x-a", b"1\r\nx-injected: 2"), (b"x-a\r\nx-b", b"1"), (b"x a", b"1"), (b"x-a", b"\x00"),
])
def test_header_injection_is_refused_before_anything_is_sent(
    serve: Serve, client: MakeClient, header: tuple[bytes, bytes]
) -> None:
    server = serve(keep_alive_answers(b"ok"))
    with pytest.raises(CallFailed, match="invalid"):
        get(client(), server.port, headers=[header])
    assert server.requests == []


def test_an_idle_connection_closed_by_the_peer_is_replaced(
    serve: Serve, client: MakeClient
) -> None:
    def script(server: ScriptedServer, conn: socket.socket) -> None:
        server.read_request(conn)  # one answer per connection, then the server hangs up
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")

    server = serve(script)
    c = client()
    assert get(c, server.port).body == b"ok"
    assert c.idle_count == 1  # kept: the answer said nothing of closing
    threading.Event().wait(0.1)  # the server's close reaches the idle socket
    assert get(c, server.port).body == b"ok"
    assert (c.opened, server.connections) == (2, 2)


def test_connection_close_and_http10_answers_are_not_kept(serve: Serve, client: MakeClient) -> None:
    answers = [b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\na",
               b"HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\nb"]

    def script(server: ScriptedServer, conn: socket.socket) -> None:
        server.read_request(conn)
        conn.sendall(answers[server.connections - 1])

    server = serve(script)
    c = client()
    assert [get(c, server.port).body for _ in answers] == [b"a", b"b"]
    assert (c.opened, c.idle_count) == (2, 0)


@pytest.mark.parametrize("answer", [
    b"garbage\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf",  # then the close
    b"",  # closed without a byte
    b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab",
])
def test_broken_answers_fail_cleanly(
    serve: Serve, client: MakeClient, answer: bytes
) -> None:
    def script(server: ScriptedServer, conn: socket.socket) -> None:
        server.read_request(conn)
        conn.sendall(answer)

    server = serve(script)
    c = client()
    with pytest.raises(CallFailed):
        get(c, server.port)
    assert c.idle_count == 0


def test_a_head_answer_declares_a_length_it_does_not_send(serve: Serve, client: MakeClient) -> None:
    def script(server: ScriptedServer, conn: socket.socket) -> None:
        while server.read_request(conn):
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\n")

    server = serve(script)
    response = get(client(), server.port, method="HEAD", max_body=10)
    assert (response.status, response.body) == (200, b"")
    assert (b"content-length", b"1000000") in response.headers


def test_reads_end_at_the_deadline(serve: Serve, client: MakeClient) -> None:
    release = threading.Event()

    def script(server: ScriptedServer, conn: socket.socket) -> None:
        server.read_request(conn)
        release.wait(5)

    server = serve(script)
    c = client()
    backend = c._backend
    assert isinstance(backend, GuardedBackend)
    start = time.monotonic()
    with backend.deadline(start + 0.3), pytest.raises(httpcore.ReadTimeout):
        get(c, server.port)
    release.set()
    assert time.monotonic() - start < 2


def _tls_pair(tmp: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context for `localhost` and a client context trusting only it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    (tmp / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")
    client = ssl.create_default_context(cafile=str(tmp / "cert.pem"))
    return server, client


def test_tls_checks_the_host_name_and_keeps_the_connection(
    serve: Serve, client: MakeClient, tmp_path: Path
) -> None:
    server_ctx, client_ctx = _tls_pair(tmp_path)
    server = serve(keep_alive_answers(b"secure"), tls=server_ctx)
    c = client(client_ctx)
    for _ in range(3):
        assert get(c, server.port, scheme="https", host="localhost").body == b"secure"
    assert c.opened == 1
    # The same server under a name its certificate does not carry.
    with pytest.raises((httpcore.ConnectError, ssl.SSLError)):
        get(client(client_ctx), server.port, scheme="https", host="127.0.0.1")


def test_tls_exchanges_in_green_tasks_wait_on_the_loop(
    serve: Serve, client: MakeClient, tmp_path: Path
) -> None:
    """The handshake, the write and the read of an HTTPS exchange made in green tasks
    wait on the event loop (it keeps ticking), and a connection opened in a green task
    serves a request from a thread afterwards."""
    import uvloop

    from tests.edge.test_green import run_tasks, ticker

    # The first three requests are answered only once all three have arrived: they
    # must be in flight at the same time.
    together = threading.Barrier(3, timeout=10)

    def slow_answers(server: ScriptedServer, conn: socket.socket) -> None:
        while server.read_request(conn):
            if len(server.requests) <= 3:
                together.wait()
            time.sleep(0.1)
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nslow")

    server_ctx, client_ctx = _tls_pair(tmp_path)
    server = serve(slow_answers, tls=server_ctx)
    c = client(client_ctx)
    loop = uvloop.new_event_loop()
    try:
        ticks = ticker(loop)
        started = time.monotonic()
        bodies = run_tasks(loop, *[lambda: get(c, server.port, scheme="https",
                                               host="localhost").body] * 3)
    finally:
        loop.close()
    assert bodies == [b"slow"] * 3
    assert len([t for t in ticks if started < t < started + 0.09]) >= 4
    assert c.opened == 3
    # Back on a thread, a kept connection is reused (blocking, as before).
    assert get(c, server.port, scheme="https", host="localhost").body == b"slow"
    assert c.opened == 3
