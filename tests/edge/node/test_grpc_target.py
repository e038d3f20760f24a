"""The name a node checks the control plane's certificate against, per gRPC target."""

import pytest

from edgefn.edge.node.grpc_transport import tls_name


@pytest.mark.parametrize(("target", "cp_host", "expected"), [
    # An address list's authority is the whole list: the CP's public host is used.
    ("ipv4:10.0.0.1:7070,10.0.0.2:7070", "cp.example.com", "cp.example.com"),
    ("ipv4:10.0.0.1:7070,10.0.0.2:7070", None, "10.0.0.1"),
    ("ipv4:10.0.0.1", None, "10.0.0.1"),
    ("ipv6:[::1]:7070,[::2]:7070", None, "::1"),
    ("ipv6:::1", None, "::1"),
    # A host name or a DNS target: gRPC's own name, the target's host, is right.
    ("cp.example.com:7070", "other.example.com", None),
    ("dns:///cp.example.com:7070", None, None),
    ("127.0.0.1:7070", None, None),
])
def test_tls_name(target: str, cp_host: str | None, expected: str | None) -> None:
    assert tls_name(target, cp_host) == expected
