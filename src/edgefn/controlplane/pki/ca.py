"""The CA that signs node certificates: generated at first start into the data
directory (key 0600), or the operator's, given as two PEM files.

A node certificate names its node id twice, as the subject's common name and as a
URI SAN `urn:edgefn:node:<id>`; the CA takes only the public key from a CSR and
writes every other field itself, so a CSR cannot ask for more than it gets.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgefn.atomicfile import write_atomic
from edgefn.controlplane.errors import BadRequest

NODE_URI_PREFIX = "urn:edgefn:node:"
CA_VALIDITY = dt.timedelta(days=3650)
# Certificates start a little in the past: a node whose clock is slightly behind
# the CP's accepts them at once.
BACKDATE = dt.timedelta(minutes=5)

PrivateKey = ec.EllipticCurvePrivateKey


def new_key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def node_id_of(cert: x509.Certificate) -> str | None:
    """The node id a certificate names, when its CN and URI SAN agree on one."""
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common = str(names[0].value) if names else None
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = [u for u in sans.get_values_for_type(x509.UniformResourceIdentifier)
            if u.startswith(NODE_URI_PREFIX)]
    if common is None or uris != [NODE_URI_PREFIX + common]:
        return None
    return common


def serial_hex(cert: x509.Certificate) -> str:
    return format(cert.serial_number, "x")


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate

    @property
    def pem(self) -> str:
        return cert_pem(self.cert).decode()

    @property
    def serial(self) -> str:
        return serial_hex(self.cert)

    @property
    def not_after(self) -> dt.datetime:
        return self.cert.not_valid_after_utc


class CertificateAuthority:
    def __init__(self, key: PrivateKey, cert: x509.Certificate) -> None:
        self._key = key
        self.cert = cert
        self.pem = cert_pem(cert)

    @classmethod
    def load_or_create(cls, directory: Path) -> CertificateAuthority:
        """The CA kept in `directory` (ca.pem, ca.key), made on first use."""
        cert_file, key_file = directory / "ca.pem", directory / "ca.key"
        if cert_file.exists() and key_file.exists():
            return cls.load(cert_file, key_file)
        key = new_key()
        name = x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgefn"),
            x509.NameAttribute(NameOID.COMMON_NAME, "edgefn node CA " + secrets.token_hex(4)),
        ])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True,
                    content_commitment=False, key_encipherment=False, data_encipherment=False,
                    key_agreement=False, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256())
        )
        # The key first: a crash between the two leaves no certificate without its key.
        write_atomic(key_file, [key_pem(key)])
        write_atomic(cert_file, [cert_pem(cert)])
        return cls(key, cert)

    @classmethod
    def load(cls, cert_file: Path, key_file: Path) -> CertificateAuthority:
        """An operator's CA (or the one made earlier): PEM certificate and EC or RSA key."""
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        if key.public_key().public_numbers() != cert.public_key().public_numbers():  # type: ignore[union-attr]
            raise ValueError(f"{key_file} is not the key of {cert_file}")
        return cls(key, cert)  # type: ignore[arg-type]

    def issue_node(self, node_id: str, csr_pem: str, *, ttl: dt.timedelta,
                   now: dt.datetime | None = None) -> Issued:
        """A client certificate for `node_id` on the public key of `csr_pem`."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem.encode())
        except ValueError as exc:
            raise BadRequest(f"csr is not a PEM certificate signing request: {exc}") from exc
        try:
            valid = csr.is_signature_valid
        except (InvalidSignature, ValueError):
            valid = False
        if not valid:
            raise BadRequest("the csr's signature does not verify")
        public = csr.public_key()
        strong = isinstance(public, ec.EllipticCurvePublicKey) or (
            isinstance(public, rsa.RSAPublicKey) and public.key_size >= 2048
        )
        if not strong:
            raise BadRequest("the csr's key must be EC, or RSA of 2048 bits or more")
        start = now or dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)]))
            .public_key(public)
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(
                    NODE_URI_PREFIX + node_id)]),
                critical=False,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
        )
        return Issued(self._sign(builder, start, ttl))

    def issue_server(self, names: list[str], *, ttl: dt.timedelta) -> tuple[bytes, bytes]:
        """A key and certificate (PEM) for the CP's node-facing ports, valid for `names`
        (host names or addresses); made at each start and never written down."""
        key = new_key()
        alt: list[x509.GeneralName] = []
        for name in dict.fromkeys(names):
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alt.append(x509.DNSName(name))
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .public_key(key.public_key())
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
        )
        cert = self._sign(builder, dt.datetime.now(dt.UTC), ttl)
        return key_pem(key), cert_pem(cert)

    def _sign(self, builder: x509.CertificateBuilder, start: dt.datetime,
              ttl: dt.timedelta) -> x509.Certificate:
        return (
            builder.issuer_name(self.cert.subject)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start - BACKDATE)
            .not_valid_after(start + ttl)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
