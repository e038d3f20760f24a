"""Mutual TLS between nodes and a real CP (SQLite and PostgreSQL), over real sockets:
the gRPC port and the node HTTPS port refuse a node without its certificate, with
another node's, with a revoked or an expired one; a certificate renewed mid-stream
leaves the stream up; and `edgefn cp serve --tls-cert/--tls-key` with the CLI
trusting the CA it is given."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import httpx
import pytest
import sqlalchemy as sa
import trustme
from click.testing import CliRunner
from cryptography import x509
from starlette.testclient import WebSocketDenialResponse

from edgefn.cli.main import cli
from edgefn.cluster import free_port
from edgefn.controlplane import db
from edgefn.controlplane.deployments.models import OutboxInstruction
from edgefn.controlplane.pki import node_id_of
from edgefn.controlplane.pki.models import NodeCertificate as CertRow
from edgefn.edge.cache import ArtifactCache
from edgefn.edge.node.agent import Agent
from edgefn.edge.node.controller import NodeController
from edgefn.edge.node.credentials import NodeCertificate, new_key_and_csr
from edgefn.edge.node.transport import StreamError
from edgefn.proto import edge_control_pb2 as pb
from edgefn.proto import edge_control_pb2_grpc as pb_grpc
from edgefn.sandbox import Engine
from tests.controlplane.conftest import ADMIN, CP
from tests.controlplane.nodelink import NodeLink, metadata
from tests.controlplane.streamlink import (
    TRANSPORTS,
    Streams,
    failed_at_handshake,
    outcome,
    refused,
)

REFUSED_AT_HANDSHAKE = grpc.StatusCode.UNAVAILABLE


@pytest.fixture
def mcp(cp_factory: Any) -> CP:
    built: CP = cp_factory(grpc_port=0, node_mtls=True, node_port=0, stream_recheck_s=0.2)
    return built


def grpc_target(cp: CP) -> str:
    return f"127.0.0.1:{cp.client.app.state.grpc.port}"  # type: ignore[attr-defined]


def node_url(cp: CP) -> str:
    return f"https://127.0.0.1:{cp.client.app.state.node_listener.port}"  # type: ignore[attr-defined]


def write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    path.chmod(0o600)
    return path


def enroll(cp: CP, node_id: str, root: Path) -> SimpleNamespace:
    """Register a node the way an operator does: the key made on the node, the CSR
    sent with the registration, the certificate and CA written beside the key."""
    key, csr = new_key_and_csr(node_id)
    body = cp.ok("POST", "/nodes", ADMIN, 201, json={"id": node_id, "pop_id": "tokyo",
                                                       "csr": csr})
    tls = NodeCertificate(write(root / f"{node_id}.pem", body["certificate"]),
                          write(root / f"{node_id}.key", key),
                          write(root / f"{node_id}-ca.pem", body["ca_certificate"]))
    return SimpleNamespace(node={"id": node_id, "token": body["token"], "pop_id": "tokyo"},
                           tls=tls, body=body)


def serial_of(pem: bytes | str) -> str:
    cert = x509.load_pem_x509_certificate(pem if isinstance(pem, bytes) else pem.encode())
    return format(cert.serial_number, "x")


async def stream_error(target: str, node: dict[str, Any],
                       credentials: grpc.ChannelCredentials | None) -> grpc.StatusCode:
    """Open a stream and read until the CP ends it; the status it ended with."""
    link = NodeLink(target, node, credentials)
    try:
        await link.open()
        while True:
            await asyncio.wait_for(link.call.read(), 10)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    finally:
        await link.close()


def grpc_refused(target: str, node: dict[str, Any],
                 credentials: grpc.ChannelCredentials | None) -> grpc.StatusCode:
    return asyncio.run(stream_error(target, node, credentials))


@pytest.fixture(params=TRANSPORTS)
def streams(request: pytest.FixtureRequest, mcp: CP) -> Iterator[Streams]:
    built = Streams(mcp, request.param)
    yield built
    built.close()


def ending(streams: Streams, node: dict[str, Any],
           tls: NodeCertificate | None) -> StreamError | None:
    """Open a stream on `streams`' transport and read until it ends: how it ended."""
    return asyncio.run(outcome(streams.link(node, tls)))


def beat(cp: CP, node: dict[str, Any], tls: NodeCertificate) -> httpx.Response:
    """A heartbeat on the node HTTPS port with these credentials."""
    with httpx.Client(verify=tls.ssl_context(), timeout=10) as client:
        return client.post(f"{node_url(cp)}/api/v1/nodes/{node['id']}/heartbeat",
                           json={"node_id": node["id"]},
                           headers={"authorization": f"Bearer {node['token']}"})


def test_registration_issues_a_certificate_for_the_node_id(mcp: CP, tmp_path: Path) -> None:
    tokyo = enroll(mcp, "tokyo-1", tmp_path)
    cert = x509.load_pem_x509_certificate(tokyo.body["certificate"].encode())
    ca = x509.load_pem_x509_certificate(tokyo.body["ca_certificate"].encode())
    assert node_id_of(cert) == "tokyo-1"
    assert cert.issuer == ca.subject
    cert.verify_directly_issued_by(ca)
    # The CA was made in the data dir at first start, its key readable by the CP alone.
    pki = mcp.settings.data_dir / "pki"
    assert (pki / "ca.pem").read_text() == tokyo.body["ca_certificate"]
    assert stat.S_IMODE((pki / "ca.key").stat().st_mode) == 0o600
    # A CSR whose signature does not verify, or that is not one, is refused.
    bad = mcp.call("POST", "/nodes", ADMIN, json={"id": "x-1", "pop_id": "p", "csr": "junk"})
    assert bad.status_code == 400, bad.text
    # The node id is the CA's to write: a CSR naming another node gets this one's.
    _, other = new_key_and_csr("osaka-1")
    issued = mcp.ok("POST", "/nodes", ADMIN, 201, json={"id": "kobe-1", "pop_id": "p",
                                                         "csr": other})
    assert node_id_of(x509.load_pem_x509_certificate(issued["certificate"].encode())) == "kobe-1"


def test_a_node_with_its_certificate_streams_and_beats(
    mcp: CP, streams: Streams, tmp_path: Path
) -> None:
    tokyo = enroll(mcp, "tokyo-1", tmp_path)

    async def scenario() -> None:
        link = await streams.link(tokyo.node, tokyo.tls).open()
        await link.ack(await link.recv_kind("config"))
        assert (await link.heartbeat()).interval_s > 0
        await link.close()

    asyncio.run(scenario())
    assert beat(mcp, tokyo.node, tokyo.tls).status_code == 200


def test_a_node_without_a_certificate_is_refused(
    mcp: CP, streams: Streams, tmp_path: Path
) -> None:
    tokyo = enroll(mcp, "tokyo-1", tmp_path)
    ca = tokyo.tls.ca_file.read_bytes()
    no_client_cert = NodeCertificate(None, None, tokyo.tls.ca_file)
    assert failed_at_handshake(ending(streams, tokyo.node, no_client_cert), streams.transport)
    # Trusting the CP, but presenting nothing: the handshake fails.
    assert grpc_refused(grpc_target(mcp), tokyo.node,
                        grpc.ssl_channel_credentials(root_certificates=ca)) == REFUSED_AT_HANDSHAKE
    assert grpc_refused(grpc_target(mcp), tokyo.node, None) == REFUSED_AT_HANDSHAKE
    no_cert = NodeCertificate(None, None, tokyo.tls.ca_file)
    with pytest.raises(httpx.TransportError):
        beat(mcp, tokyo.node, no_cert)
    # The API port sees no client certificate: a node token alone is not enough there,
    # for any node call.
    as_node = {"Authorization": f"Bearer {tokyo.node['token']}"}
    r = mcp.call("POST", "/nodes/tokyo-1/heartbeat", as_node, json={"node_id": "tokyo-1"})
    assert r.status_code == 401, r.text
    r = mcp.call("POST", "/nodes/tokyo-1/secrets", as_node,
                 json={"function_id": "f", "names": ["K"]})
    assert r.status_code == 401, r.text
    _, csr = new_key_and_csr("tokyo-1")
    r = mcp.call("POST", "/nodes/tokyo-1/certificate", as_node, json={"csr": csr})
    assert r.status_code == 401, r.text
    with pytest.raises(WebSocketDenialResponse) as denied, mcp.client.websocket_connect(
        "/api/v1/nodes/tokyo-1/stream", headers=as_node
    ):
        pass
    assert denied.value.status_code == 401
    # The node port serves node calls only.
    with httpx.Client(verify=tokyo.tls.ssl_context(), timeout=10) as client:
        assert client.get(f"{node_url(mcp)}/api/v1/nodes", headers=ADMIN).status_code == 404


def test_another_nodes_certificate_is_refused(
    mcp: CP, streams: Streams, tmp_path: Path
) -> None:
    tokyo, osaka = enroll(mcp, "tokyo-1", tmp_path), enroll(mcp, "osaka-1", tmp_path)
    # Tokyo's token with Osaka's certificate, and the other way round.
    assert refused(ending(streams, tokyo.node, osaka.tls), streams.transport, 403)
    assert refused(ending(streams, {**tokyo.node, "token": osaka.node["token"]}, tokyo.tls),
                   streams.transport, 403)
    assert beat(mcp, tokyo.node, osaka.tls).status_code == 403
    # A certificate for the right name from a CA that is not the CP's: no handshake.
    foreign = trustme.CA().issue_cert("tokyo-1")
    stranger = NodeCertificate(write(tmp_path / "f.pem", foreign.cert_chain_pems[0].bytes()),
                               write(tmp_path / "f.key", foreign.private_key_pem.bytes()),
                               tokyo.tls.ca_file)
    assert failed_at_handshake(ending(streams, tokyo.node, stranger), streams.transport)


def test_deleting_a_node_revokes_its_certificate_and_closes_its_stream(
    mcp: CP, streams: Streams, tmp_path: Path
) -> None:
    tokyo = enroll(mcp, "tokyo-1", tmp_path)

    async def scenario() -> StreamError | None:
        link = await streams.link(tokyo.node, tokyo.tls).open()
        await link.ack(await link.recv_kind("config"))
        await asyncio.to_thread(mcp.ok, "DELETE", "/nodes/tokyo-1", ADMIN, 204)
        try:
            return await link.ended()
        finally:
            await link.close()

    assert refused(asyncio.run(scenario()), streams.transport, 401)
    with db.session_scope(mcp.client.app.state.cp.sessions) as session:  # type: ignore[attr-defined]
        row = session.get(CertRow, serial_of(tokyo.body["certificate"]))
        assert row is not None and row.revoked_at is not None

    # Registered again under the same id: the new token with the revoked certificate
    # is refused, by the stream and by the node port.
    again = mcp.ok("POST", "/nodes", ADMIN, 201, json={"id": "tokyo-1", "pop_id": "tokyo"})
    node = {**tokyo.node, "token": again["token"]}
    assert refused(ending(streams, node, tokyo.tls), streams.transport, 401)
    r = beat(mcp, node, tokyo.tls)
    assert r.status_code == 401 and "revoked" in r.text


def test_an_expired_certificate_is_refused(mcp: CP, streams: Streams, tmp_path: Path) -> None:
    tokyo = enroll(mcp, "tokyo-1", tmp_path)
    key, csr = new_key_and_csr("tokyo-1")
    ca = mcp.client.app.state.cp.node_ca  # type: ignore[attr-defined]
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    old = ca.issue_node("tokyo-1", csr, ttl=dt.timedelta(days=1), now=past)
    with db.session_scope(mcp.client.app.state.cp.sessions) as session:  # type: ignore[attr-defined]
        session.add(CertRow(serial=old.serial, node_id="tokyo-1", not_after=old.not_after))
        session.commit()
    expired = NodeCertificate(write(tmp_path / "old.pem", old.pem),
                              write(tmp_path / "old.key", key), tokyo.tls.ca_file)
    assert failed_at_handshake(ending(streams, tokyo.node, expired), streams.transport)
    with pytest.raises(httpx.TransportError):
        beat(mcp, tokyo.node, expired)
    # Nor can it renew itself; an admin issues the node a new one from a new CSR.
    with pytest.raises(httpx.TransportError), httpx.Client(verify=expired.ssl_context()) as c:
        c.post(f"{node_url(mcp)}/api/v1/nodes/tokyo-1/certificate", json={"csr": csr},
               headers={"authorization": f"Bearer {tokyo.node['token']}"})
    fresh = mcp.ok("POST", "/nodes/tokyo-1/certificate", ADMIN, json={"csr": csr})
    write(tmp_path / "old.pem", fresh["certificate"])
    assert beat(mcp, tokyo.node, expired).status_code == 200


def test_a_node_renews_its_certificate_on_the_node_port(mcp: CP, tmp_path: Path) -> None:
    tokyo, osaka = enroll(mcp, "tokyo-1", tmp_path), enroll(mcp, "osaka-1", tmp_path)
    key, csr = new_key_and_csr("tokyo-1")
    with httpx.Client(verify=tokyo.tls.ssl_context(), timeout=10) as client:
        r = client.post(f"{node_url(mcp)}/api/v1/nodes/tokyo-1/certificate", json={"csr": csr},
                        headers={"authorization": f"Bearer {tokyo.node['token']}"})
        assert r.status_code == 200, r.text
        # Not for another node.
        other = client.post(f"{node_url(mcp)}/api/v1/nodes/osaka-1/certificate",
                            json={"csr": csr},
                            headers={"authorization": f"Bearer {osaka.node['token']}"})
        assert other.status_code == 403, other.text
    tokyo.tls.install(key, r.json()["certificate"])
    assert serial_of(tokyo.tls.cert_file.read_bytes()) == r.json()["serial"]
    assert beat(mcp, tokyo.node, tokyo.tls).status_code == 200
    audit = mcp.ok("GET", "/audit", ADMIN)
    assert any(e["action"] == "node.certificate" for e in audit), audit


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_rotation_mid_stream_keeps_the_stream(
    mcp: CP, tmp_path: Path, engine: Engine, caplog: pytest.LogCaptureFixture,
    transport: Any,
) -> None:
    """The agent renews a certificate two thirds through its life while its stream is
    up; the stream carries on (pushes still arrive and are acked on it), and the next
    connection uses the new certificate: it connects with the old one revoked."""
    caplog.set_level(logging.INFO, logger="edgefn.controlplane.stream")
    tokyo = enroll(mcp, "tokyo-1", tmp_path)
    # Swap in a certificate already past two thirds of its life.
    key, csr = new_key_and_csr("tokyo-1")
    ca = mcp.client.app.state.cp.node_ca  # type: ignore[attr-defined]
    aged = ca.issue_node("tokyo-1", csr, ttl=dt.timedelta(hours=1),
                         now=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=50))
    sessions = mcp.client.app.state.cp.sessions  # type: ignore[attr-defined]
    with db.session_scope(sessions) as session:
        session.add(CertRow(serial=aged.serial, node_id="tokyo-1", not_after=aged.not_after))
        session.commit()
    tokyo.tls.install(key, aged.pem)

    def agent() -> Agent:
        controller = NodeController(tmp_path / "node" / "state.json",
                                    ArtifactCache(tmp_path / "node" / "cache"), engine)
        return Agent(controller, node_id="tokyo-1", token=tokyo.node["token"],
                     cp_url=node_url(mcp), grpc_url=grpc_target(mcp), transport=transport,
                     pop_id="tokyo", tls=tokyo.tls, renew_check_s=0.2)

    def connects() -> int:
        return sum("tokyo-1 connected its control stream" in r.getMessage()
                   for r in caplog.records)

    first = agent()
    first.start()
    try:
        assert first.stream_connected.wait(15)
        deadline = time.monotonic() + 15
        while serial_of(tokyo.tls.cert_file.read_bytes()) == aged.serial:
            assert time.monotonic() < deadline, "the certificate was not renewed"
            time.sleep(0.1)
        renewed = serial_of(tokyo.tls.cert_file.read_bytes())
        assert not tokyo.tls.renewal_due(2 / 3)
        # A push after the renewal travels the same stream and is acked on it.
        project = mcp.project("alpha")
        fn = mcp.function(ADMIN, "hello", owner_project_id=project)
        mcp.ok("POST", "/routes", ADMIN, 201,
               json={"host": "*", "path": "/hello", "function_id": fn["id"]})
        deadline = time.monotonic() + 15
        while not all(state == "acked" for state in outbox_states(mcp, "tokyo-1")):
            assert time.monotonic() < deadline, outbox_states(mcp, "tokyo-1")
            time.sleep(0.1)
        assert len(outbox_states(mcp, "tokyo-1")) >= 2
        assert first.stream_connected.is_set() and connects() == 1
    finally:
        first.stop()

    # The old certificate revoked: the next connection works, so it used the new one.
    with db.session_scope(sessions) as session:
        session.execute(sa.update(CertRow).where(CertRow.serial == aged.serial)
                        .values(revoked_at=dt.datetime.now(dt.UTC)))
        session.commit()
    second = agent()
    second.start()
    try:
        assert second.stream_connected.wait(15)
        assert serial_of(tokyo.tls.cert_file.read_bytes()) == renewed
    finally:
        second.stop()


def outbox_states(cp: CP, node_id: str) -> list[str]:
    with db.session_scope(cp.client.app.state.cp.sessions) as session:  # type: ignore[attr-defined]
        return list(session.scalars(sa.select(OutboxInstruction.state)
                                    .where(OutboxInstruction.node_id == node_id)))


def test_a_renewal_cut_short_keeps_a_matching_pair(tmp_path: Path, mcp: CP) -> None:
    """A crash after the new key was written but before the certificate: the old pair
    is still what loads; after the certificate too, the new pair."""
    tokyo = enroll(mcp, "tokyo-1", tmp_path)
    assert tokyo.tls.key_file is not None
    old_key = tokyo.tls.key_file.read_bytes()
    key, _ = new_key_and_csr("tokyo-1")
    write(tmp_path / "tokyo-1.key.next", key)
    assert tokyo.tls.load()[0] == old_key
    assert not (tmp_path / "tokyo-1.key.next").exists()
    assert beat(mcp, tokyo.node, tokyo.tls).status_code == 200


# ---- TLS on the API and gRPC ports, as an operator runs it ------------------------


@pytest.fixture
def tls_cp(tmp_path: Path) -> Iterator[SimpleNamespace]:
    """`edgefn cp serve --tls-cert/--tls-key` in its own process, with a certificate of
    a CA only the test knows."""
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    cert = write(tmp_path / "server.pem", b"".join(p.bytes() for p in server.cert_chain_pems))
    key = write(tmp_path / "server.key", server.private_key_pem.bytes())
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    port, grpc_port = free_port(), free_port()
    env = {**os.environ, "EDGEFN_BOOTSTRAP_TOKEN": "tls-admin"}
    env.pop("EDGEFN_DATABASE_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgefn", "cp", "serve", "--port", str(port),
         "--grpc-port", str(grpc_port), "--data-dir", str(tmp_path / "data"),
         "--tls-cert", str(cert), "--tls-key", str(key)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    url = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url + "/healthz", verify=ssl.create_default_context(cafile=ca_file),
                          timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "cp serve did not come up"
                time.sleep(0.1)
        yield SimpleNamespace(url=url, ca_file=ca_file, grpc=f"127.0.0.1:{grpc_port}")
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_the_api_over_tls_with_the_cli_trusting_the_ca(
    tls_cp: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("EDGEFN_TOKEN", "tls-admin")
    monkeypatch.delenv("EDGEFN_CA_FILE", raising=False)
    runner = CliRunner()
    # The system's CAs do not know this one.
    untrusted = runner.invoke(cli, ["login", "--cp", tls_cp.url])
    # A certificate the CLI does not trust: the control plane was not reached (exit 3).
    assert untrusted.exit_code == 3 and "CERTIFICATE_VERIFY_FAILED" in untrusted.output
    trusted = runner.invoke(cli, ["login", "--cp", tls_cp.url, "--ca-file", str(tls_cp.ca_file)])
    assert trusted.exit_code == 0, trusted.output
    # The same from the environment, for a command that calls the CP.
    monkeypatch.setenv("EDGEFN_CA_FILE", str(tls_cp.ca_file))
    assert runner.invoke(cli, ["login", "--cp", tls_cp.url]).exit_code == 0
    # Plain HTTP is not served there.
    with pytest.raises(httpx.TransportError):
        httpx.get(tls_cp.url.replace("https", "http") + "/healthz", timeout=2)


def test_the_grpc_port_over_tls(tls_cp: SimpleNamespace) -> None:
    """The gRPC port speaks TLS with the same certificate: a client trusting the CA
    reaches the service (which wants a node token), a plain one does not."""

    async def call(credentials: grpc.ChannelCredentials | None) -> grpc.StatusCode:
        channel = (grpc.aio.secure_channel(tls_cp.grpc, credentials) if credentials
                   else grpc.aio.insecure_channel(tls_cp.grpc))
        try:
            await pb_grpc.EdgeControlStub(channel).Heartbeat(
                pb.HeartbeatRequest(node_id="n"), metadata=metadata("efn_x", "n"), timeout=10)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        finally:
            await channel.close()
        return grpc.StatusCode.OK

    ca = tls_cp.ca_file.read_bytes()
    assert asyncio.run(call(grpc.ssl_channel_credentials(ca))) == grpc.StatusCode.UNAUTHENTICATED
    assert asyncio.run(call(None)) == grpc.StatusCode.UNAVAILABLE


def test_an_operators_ca_signs_the_node_certificates(cp_factory: Any, tmp_path: Path) -> None:
    """`--node-ca-cert/--node-ca-key`: the operator's CA (here one trustme makes)
    signs node certificates and the node ports' server certificate; none is made."""
    ca = trustme.CA()
    cert_file, key_file = tmp_path / "op-ca.pem", tmp_path / "op-ca.key"
    ca.cert_pem.write_to_path(str(cert_file))
    ca.private_key_pem.write_to_path(str(key_file))
    cp: CP = cp_factory(grpc_port=0, node_mtls=True, node_port=0,
                        node_ca_cert=cert_file, node_ca_key=key_file)
    tokyo = enroll(cp, "tokyo-1", tmp_path)
    assert tokyo.body["ca_certificate"] == cert_file.read_text()
    assert not (cp.settings.data_dir / "pki" / "ca.key").exists()
    assert beat(cp, tokyo.node, tokyo.tls).status_code == 200

    async def scenario() -> None:
        link = await NodeLink(grpc_target(cp), tokyo.node,
                              tokyo.tls.channel_credentials()).open()
        await link.recv_kind("config")
        await link.close()

    asyncio.run(scenario())


def test_an_operators_ca_must_come_with_its_own_key(tmp_path: Path) -> None:
    from edgefn.controlplane.pki import CertificateAuthority

    ca, other = trustme.CA(), trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    other.private_key_pem.write_to_path(str(tmp_path / "other.key"))
    with pytest.raises(ValueError, match="is not the key of"):
        CertificateAuthority.load(tmp_path / "ca.pem", tmp_path / "other.key")


def test_edge_csr_makes_the_key_on_the_node(tmp_path: Path) -> None:
    key_file = tmp_path / "node.key"
    runner = CliRunner()
    made = runner.invoke(cli, ["edge", "csr", "--node-id", "tokyo-1", "--key-file", str(key_file)])
    assert made.exit_code == 0, made.output
    csr = x509.load_pem_x509_csr(made.output.encode())
    assert csr.is_signature_valid
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    again = runner.invoke(cli, ["edge", "csr", "--node-id", "tokyo-1", "--key-file",
                                str(key_file)])
    assert again.exit_code == 2 and "--force" in again.output
