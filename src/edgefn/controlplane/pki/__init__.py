"""The control plane's certificate authority for edge nodes: the CA itself, the
certificates it issued (for revocation), and the TLS material of the node-facing ports."""

from edgefn.controlplane.pki.ca import CertificateAuthority, node_id_of
from edgefn.controlplane.pki.tls import NodeTLS

__all__ = ["CertificateAuthority", "NodeTLS", "node_id_of"]
