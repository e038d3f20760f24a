"""The control-plane credentials a node may be started with (its token, its client
certificate and key), and keeping them from its workers: the workers run tenants'
code, so they inherit none of them."""

from __future__ import annotations

import datetime as dt
import os
import ssl
import threading
from collections.abc import MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edgefn.atomicfile import write_atomic

if TYPE_CHECKING:
    from edgefn.edge.settings import EdgeSettings

# Environment variables holding a credential of the control plane or its stores.
CREDENTIAL_ENV = (
    "EDGEFN_NODE_TOKEN",
    "EDGEFN_BOOTSTRAP_TOKEN",
    "EDGEFN_TOKEN",
    "EDGEFN_SECRET_KEY",
    "EDGEFN_S3_SECRET_ACCESS_KEY",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
)


def without_credentials(environ: MutableMapping[str, str]) -> dict[str, str]:
    """A copy of `environ` for a process that must hold no control-plane credential."""
    return {k: v for k, v in environ.items() if k not in CREDENTIAL_ENV}


def scrub_credentials(environ: MutableMapping[str, str] = os.environ) -> list[str]:
    """Remove the credentials from `environ` in place (the main process's, before it
    starts workers, which inherit it); returns the names removed."""
    removed = [name for name in CREDENTIAL_ENV if name in environ]
    for name in removed:
        del environ[name]
    return removed


# Held while the key and certificate files are read or replaced: the agent, its
# renewal and the secret broker use them from threads of one process.
_FILES = threading.RLock()


def node_certificate(settings: EdgeSettings) -> NodeCertificate | None:
    """The node's TLS to the control plane; None for plain connections."""
    if settings.node_cert is None and settings.cp_ca_file is None:
        return None
    return NodeCertificate(settings.node_cert, settings.node_key, settings.cp_ca_file)


class NodeCertificate:
    """The node's client certificate and key, and the CA it trusts the CP's ports
    with, as files; the key is made on the node and never leaves it.

    A renewal writes the new key beside the old (`KEY.next`), then the certificate,
    then moves the key into place, so that a crash between two writes leaves a pair
    that `load` can still match: the certificate with whichever key is its own.
    """

    def __init__(self, cert_file: Path | None, key_file: Path | None,
                 ca_file: Path | None) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.ca_file = ca_file
        self._context: tuple[tuple[bytes | None, ...], ssl.SSLContext] | None = None

    @property
    def has_client_cert(self) -> bool:
        return self.cert_file is not None and self.key_file is not None

    def load(self) -> tuple[bytes | None, bytes | None, bytes | None]:
        """(key, certificate, CA) PEM; None for what is not configured."""
        ca = self.ca_file.read_bytes() if self.ca_file is not None else None
        if self.cert_file is None or self.key_file is None:
            return None, None, ca
        with _FILES:
            cert = self.cert_file.read_bytes()
            pending = self._next_key()
            if pending.exists():
                if _matches(cert, pending.read_bytes()):
                    os.replace(pending, self.key_file)
                else:  # a renewal that stopped before its certificate was written
                    pending.unlink()
            return self.key_file.read_bytes(), cert, ca

    def channel_credentials(self) -> grpc.ChannelCredentials:
        key, cert, ca = self.load()
        return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key,
                                            certificate_chain=cert)

    def ssl_context(self) -> ssl.SSLContext:
        """For HTTPS to the CP: trusts the CA file (else the system's), presents the
        node's certificate when there is one. Made again only when a file changed (a
        renewal), since every call to the CP asks for it."""
        with _FILES:  # the files ssl reads are the pair `load` read
            key, cert, ca = self.load()
            stamp = (key, cert, ca)
            if self._context is not None and self._context[0] == stamp:
                return self._context[1]
            context = ssl.create_default_context(cadata=ca.decode() if ca else None)
            if self.cert_file is not None and self.key_file is not None:
                context.load_cert_chain(self.cert_file, self.key_file)
            self._context = (stamp, context)
            return context

    def lifetime(self) -> tuple[dt.datetime, dt.datetime]:
        """(not before, not after) of the current certificate."""
        _, cert, _ = self.load()
        if cert is None:
            raise ValueError("no client certificate")
        parsed = x509.load_pem_x509_certificate(cert)
        return parsed.not_valid_before_utc, parsed.not_valid_after_utc

    def renewal_due(self, fraction: float, now: dt.datetime | None = None) -> bool:
        start, end = self.lifetime()
        now = now or dt.datetime.now(dt.UTC)
        return now >= start + (end - start) * fraction

    def new_request(self, node_id: str) -> tuple[bytes, str]:
        """A new key (not yet in use) and the CSR (PEM) for it."""
        return new_key_and_csr(node_id)

    def install(self, key: bytes, cert: str) -> None:
        """Make `key` and `cert` the node's credentials for its next connections."""
        if self.cert_file is None or self.key_file is None:
            raise ValueError("no client certificate")
        if not _matches(cert.encode(), key):
            raise ValueError("the certificate is not for the new key")
        with _FILES:
            write_atomic(self._next_key(), [key])
            write_atomic(self.cert_file, [cert.encode()])
            os.replace(self._next_key(), self.key_file)

    def _next_key(self) -> Path:
        assert self.key_file is not None
        return self.key_file.with_name(self.key_file.name + ".next")


def new_key_and_csr(node_id: str) -> tuple[bytes, str]:
    """An EC P-256 key (PEM) and a CSR for `node_id` signed with it."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)]))
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return pem, csr.public_bytes(serialization.Encoding.PEM).decode()


def write_new_key(key_file: Path, node_id: str) -> str:
    """Make the node's key in `key_file` (0600) and return its CSR (PEM)."""
    key, csr = new_key_and_csr(node_id)
    write_atomic(key_file, [key])
    return csr


def _matches(cert_pem: bytes, key_pem: bytes) -> bool:
    cert = x509.load_pem_x509_certificate(cert_pem)
    key = serialization.load_pem_private_key(key_pem, password=None)
    der = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return bool(cert.public_key().public_bytes(*der) == key.public_key().public_bytes(*der))
