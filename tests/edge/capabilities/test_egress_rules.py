"""Host parsing as a guest sees it, the public-address rule and the node's egress rules."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from pydantic import ValidationError

from edgefn.edge.capabilities.egress_rules import (
    EgressRules,
    interface_addresses,
    is_public,
    parse_host,
)
from edgefn.edge.capabilities.errors import Denied
from edgefn.edge.settings import EdgeSettings


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


def _denied(rules: EgressRules, address: str, port: int, *, allow_private: bool) -> bool:
    try:
        rules.check(ip_address(address), port, allow_private=allow_private)
    except Denied:
        return True
    return False


def test_public_addresses_need_no_one() -> None:
    rules = EgressRules()
    assert not _denied(rules, "93.184.216.34", 443, allow_private=False)
    assert not _denied(rules, "::ffff:8.8.8.8", 53, allow_private=False)


def test_private_addresses_need_the_function_and_the_operator() -> None:
    nothing = EgressRules()
    opened = EgressRules(["10.0.0.0/8", "fd00::/8"])
    for address in ("10.1.2.3", "fd00::5", "::ffff:10.1.2.3"):
        assert _denied(nothing, address, 80, allow_private=True), address
        assert _denied(opened, address, 80, allow_private=False), address
        assert not _denied(opened, address, 80, allow_private=True), address
    # Only what the operator named: not the metadata address, not loopback.
    for address in ("169.254.169.254", "127.0.0.1", "192.168.0.1", "64:ff9b::a00:1"):
        assert _denied(opened, address, 80, allow_private=True), address


def test_the_nodes_own_addresses_count_as_private_even_when_public() -> None:
    # A node whose interface holds a public address: reaching it is reaching the node.
    rules = EgressRules(node_ports=[9090], node_addresses=lambda: frozenset(
        {ip_address("8.8.8.8")}))
    assert rules.is_node_address(ip_address("8.8.8.8"))
    assert rules.is_node_address(ip_address("::ffff:8.8.8.8"))
    assert _denied(rules, "8.8.8.8", 443, allow_private=True)
    assert not _denied(rules, "8.8.4.4", 443, allow_private=False)
    opened = EgressRules(["8.8.8.8/32"], node_ports=[9090],
                         node_addresses=lambda: frozenset({ip_address("8.8.8.8")}))
    assert not _denied(opened, "8.8.8.8", 443, allow_private=True)
    assert _denied(opened, "8.8.8.8", 9090, allow_private=True)


def test_the_nodes_ports_are_refused_inside_any_network() -> None:
    rules = EgressRules(["0.0.0.0/0", "::/0"], node_ports=[8000, 9090])
    for address in ("127.0.0.1", "127.9.9.9", "0.0.0.0", "::1", "::", "::ffff:127.0.0.1",
                    "::127.0.0.1"):
        assert _denied(rules, address, 9090, allow_private=True), address
        assert not _denied(rules, address, 9091, allow_private=True), address
    # The same port on another machine is another service.
    assert not _denied(rules, "10.0.0.9", 9090, allow_private=True)


def test_the_machines_interface_addresses_are_node_addresses() -> None:
    found = interface_addresses()
    assert ip_address("127.0.0.1") in found
    rules = EgressRules(node_ports=[1234])
    for address in found:
        assert rules.is_node_address(address), address
        with pytest.raises(Denied):
            rules.check(address, 80, allow_private=True)


def test_node_ports_from_the_settings() -> None:
    settings = EdgeSettings(
        edge_port=8001, metrics_port=9091, cp_url="http://127.0.0.1:8081",
        grpc_url="127.0.0.1:50052", allow_private_egress=["10.0.0.0/8", "127.0.0.2"],
    )
    rules = EgressRules.for_node(settings)
    assert rules.node_ports == {8001, 9091, 8081, 50052}
    assert [str(n) for n in rules.private_networks] == ["10.0.0.0/8", "127.0.0.2/32"]
    assert EgressRules.for_node(EdgeSettings(
        cp_url="https://cp.example.com", grpc_url="dns:///cp.example.com:7000",
    )).node_ports == {8000, 9090, 443, 7000}


def test_settings_refuse_a_bad_network() -> None:
    with pytest.raises(ValidationError):
        EdgeSettings(allow_private_egress=["10.0.0.1/8"])  # host bits set: a typo
    with pytest.raises(ValidationError):
        EdgeSettings(allow_private_egress=["not-a-network"])
