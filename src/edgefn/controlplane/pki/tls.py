"""The TLS material of the node-facing ports (gRPC and the node HTTPS listener).

Their server certificate is the operator's (`--tls-cert/--tls-key`) when given,
otherwise one the CP's own CA issues at each start for the names nodes use to reach
it. With node mTLS on, both ports require a client certificate of the node CA.
"""

from __future__ import annotations

import datetime as dt
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import grpc

from edgefn.atomicfile import private_dir, write_atomic
from edgefn.controlplane.pki.ca import CertificateAuthority
from edgefn.controlplane.settings import CPSettings

SERVER_CERT_VALIDITY = dt.timedelta(days=397)
_LOOPBACK = ["localhost", "127.0.0.1", "::1"]


def pki_dir(settings: CPSettings) -> Path:
    return settings.data_dir / "pki"


def load_ca(settings: CPSettings) -> CertificateAuthority | None:
    """The node CA: the operator's, else the one kept in data_dir/pki (made on the first
    start with node mTLS on); None while node mTLS is off and no CA was given."""
    if settings.node_ca_cert is not None and settings.node_ca_key is not None:
        return CertificateAuthority.load(settings.node_ca_cert, settings.node_ca_key)
    if not settings.node_mtls:
        return None
    return CertificateAuthority.load_or_create(private_dir(pki_dir(settings)))


def server_names(settings: CPSettings) -> list[str]:
    names = list(settings.node_tls_names)
    if settings.host not in ("0.0.0.0", "::", ""):
        names.append(settings.host)
    public = urlsplit(settings.resolved_public_url()).hostname
    if public:
        names.append(public)
    return list(dict.fromkeys(names + _LOOPBACK))


@dataclass(frozen=True)
class NodeTLS:
    """Server key and certificate (PEM), and the CA whose client certificates the
    node-facing ports require (None: server-side TLS only)."""

    key: bytes
    cert: bytes
    client_ca: CertificateAuthority | None
    directory: Path

    @classmethod
    def from_settings(cls, settings: CPSettings,
                      ca: CertificateAuthority | None) -> NodeTLS | None:
        """None when the node-facing ports run without TLS (no mTLS, no tls_cert)."""
        client_ca = ca if settings.node_mtls else None
        if settings.tls_cert is not None and settings.tls_key is not None:
            key, cert = settings.tls_key.read_bytes(), settings.tls_cert.read_bytes()
        elif client_ca is not None:
            key, cert = client_ca.issue_server(server_names(settings),
                                               ttl=SERVER_CERT_VALIDITY)
        else:
            return None
        return cls(key, cert, client_ca, pki_dir(settings))

    def grpc_credentials(self) -> grpc.ServerCredentials:
        ca = self.client_ca
        return grpc.ssl_server_credentials(
            [(self.key, self.cert)],
            root_certificates=ca.pem if ca is not None else None,
            require_client_auth=ca is not None,
        )

    def ssl_context(self) -> ssl.SSLContext:
        """For the node HTTPS listener: requires a client certificate of the node CA."""
        if self.client_ca is None:
            raise ValueError("the node listener needs node mTLS")
        # ssl loads a key only from a file: 0600, rewritten at each start.
        cert_file, key_file = self.directory / "node-port.pem", self.directory / "node-port.key"
        write_atomic(key_file, [self.key])
        write_atomic(cert_file, [self.cert])
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert_file, key_file)
        context.load_verify_locations(cadata=self.client_ca.pem.decode())
        context.verify_mode = ssl.CERT_REQUIRED
        return context
