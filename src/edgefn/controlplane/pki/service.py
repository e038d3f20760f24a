"""Issuing node certificates, checking the one a node connects with, and revoking a
node's certificates when it is deleted.

A connection is a node's when three things agree: the bearer token, the node id the
certificate names, and a row of `node_certificates` for that serial and node that is
neither revoked nor expired. The TLS handshake has already checked the signature
and the validity dates; the row is what makes revocation take effect at once.
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from sqlalchemy import update
from sqlalchemy.orm import Session

from edgefn.controlplane.db import utcnow
from edgefn.controlplane.errors import Forbidden, Unauthorized
from edgefn.controlplane.pki.ca import CertificateAuthority, Issued, node_id_of, serial_hex
from edgefn.controlplane.pki.models import NodeCertificate


def issue(session: Session, ca: CertificateAuthority, node_id: str, csr_pem: str, *,
          ttl_s: int) -> Issued:
    """Sign the node's CSR and record the serial (committed by the caller)."""
    issued = ca.issue_node(node_id, csr_pem, ttl=dt.timedelta(seconds=ttl_s))
    session.add(NodeCertificate(serial=issued.serial, node_id=node_id,
                                not_after=issued.not_after))
    return issued


def check_peer(session: Session, node_id: str, pem: str | bytes | None) -> None:
    """Unauthorized unless `pem` is a certificate this CA issued to `node_id`, still
    valid and not revoked; Forbidden when it is another node's."""
    check_serial(session, node_id, peer_serial(node_id, pem))


def peer_serial(node_id: str, pem: str | bytes | None) -> str:
    """The serial of the client certificate `pem` when it names `node_id` (what a
    stream reads once, then checks with `check_serial` on every pass)."""
    if not pem:
        raise Unauthorized("this node must connect with its client certificate")
    try:
        cert = x509.load_pem_x509_certificate(pem if isinstance(pem, bytes) else pem.encode())
    except ValueError as exc:
        raise Unauthorized("the client certificate does not parse") from exc
    if node_id_of(cert) != node_id:
        raise Forbidden(f"the client certificate is not node {node_id}'s")
    return serial_hex(cert)


def check_serial(session: Session, node_id: str, serial: str) -> None:
    """Unauthorized unless `serial` was issued to `node_id` and is neither revoked nor
    expired."""
    row = session.get(NodeCertificate, serial)
    if row is None or row.node_id != node_id:
        raise Unauthorized("the client certificate was not issued by this control plane")
    if row.revoked_at is not None:
        raise Unauthorized("the client certificate is revoked")
    if row.not_after <= utcnow():
        raise Unauthorized("the client certificate has expired")


def revoke_node(session: Session, node_id: str) -> int:
    """Revoke every certificate of the node (committed by the caller)."""
    result = session.execute(
        update(NodeCertificate)
        .where(NodeCertificate.node_id == node_id, NodeCertificate.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return int(getattr(result, "rowcount", 0) or 0)
