"""Host parsing, the public-address rule and allowlists of outbound HTTP."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from pydantic import ValidationError

from edgefn.edge.capabilities.errors import Denied
from edgefn.edge.capabilities.hosts import HostAllowlist, is_public, parse_host
from edgefn.edge.spec import HttpFetchPolicy


@pytest.mark.parametrize(
    ("host", "parsed"),
    [
        ("API.Example.com", "api.example.com"),
        ("localhost", "localhost"),
        ("xn--exmple-cua.com", "xn--exmple-cua.com"),
        ("93.184.216.34", IPv4Address("93.184.216.34")),
        ("::1", IPv6Address("::1")),
        ("::ffff:127.0.0.1", IPv6Address("::ffff:7f00:1")),
    ],
)
def test_parse_host_accepts(host: str, parsed: object) -> None:
    assert parse_host(host) == parsed


@pytest.mark.parametrize(
    "host",
    [
        "2130706433",  # decimal
        "0x7f000001",  # hex
        "0x7f.1",  # short form
        "127.1",
        "0177.0.0.1",  # octal
        "127.0.0.01",
        "256.0.0.1",
        "1.2.3.4.5",
        "fe80::1%eth0",  # zone id
        "a_b.example.com",
        "-a.example.com",
        "example.com.",
        "",
        "a" * 64 + ".com",
    ],
)
def test_parse_host_refuses(host: str) -> None:
    with pytest.raises(Denied):
        parse_host(host)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
        "240.0.0.1",
        "::",
        "::1",
        "fe80::1",
        "fc00::1",
        "fec0::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::127.0.0.1",
        "2002:7f00:1::",  # 6to4 around 127.0.0.1
        "64:ff9b::a00:1",  # NAT64 around 10.0.0.1
    ],
)
def test_non_public_addresses(address: str) -> None:
    assert not is_public(ip_address(address))


@pytest.mark.parametrize(
    "address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"]
)
def test_public_addresses(address: str) -> None:
    assert is_public(ip_address(address))


def test_allowlist_matching() -> None:
    allow = HostAllowlist(["api.example.com", "*.example.org", "127.0.0.1", "[::1]"])
    assert allow.allows("api.example.com")
    assert not allow.allows("x.api.example.com")
    assert allow.allows("a.example.org") and allow.allows("a.b.example.org")
    assert not allow.allows("example.org")
    assert not allow.allows("badexample.org")
    assert allow.allows(IPv4Address("127.0.0.1"))
    assert allow.allows(IPv6Address("::1"))
    assert not allow.allows(IPv6Address("::ffff:127.0.0.1"))
    assert HostAllowlist(["*"]).allows("anything.example")
    assert not HostAllowlist([])


@pytest.mark.parametrize("entry", ["2130706433", "*.10.0.0.1", "http://x.com", "a b", "*.*.com"])
def test_policy_refuses_bad_allowlist_entries(entry: str) -> None:
    with pytest.raises(ValidationError):
        HttpFetchPolicy(allow_hosts=(entry,))


def test_policy_normalizes_entries() -> None:
    policy = HttpFetchPolicy(allow_hosts=(" API.Example.com ", "[::1]"))
    assert policy.allow_hosts == ("api.example.com", "[::1]")
