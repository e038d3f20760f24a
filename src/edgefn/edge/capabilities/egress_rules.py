"""Where a node lets outbound HTTP go: the public-address rule and the node's egress
rules (what its operator opened, and its own ports, which no guest reaches). What a
function's allowlist may say is the contract's (`contract/egress_allowlist.py`).
"""

from __future__ import annotations

import functools
import socket
import threading
import time
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import TYPE_CHECKING

import psutil

from edgefn.contract.egress_allowlist import Address, InvalidHost
from edgefn.contract.egress_allowlist import parse_host as contract_parse_host
from edgefn.edge.capabilities.errors import Denied

if TYPE_CHECKING:
    from edgefn.edge.settings import EdgeSettings

Network = IPv4Network | IPv6Network

# Prefixes that carry an IPv4 address in their low 32 bits and reach it when routed.
_IPV4_COMPATIBLE = IPv6Network("::/96")
_NAT64 = IPv6Network("64:ff9b::/96")
_SHARED = IPv4Network("100.64.0.0/10")  # carrier-grade NAT: is_global, not is_private
# "This host on this network": Linux connects 0.0.0.0 (and may route 0/8) to the node itself.
_THIS_HOST = IPv4Network("0.0.0.0/8")


@functools.lru_cache(maxsize=1024)
def parse_host(host: str) -> str | Address:
    """The contract's strict host parsing, refusing with `Denied` (what a guest sees).
    Cached: every fetch parses its host, a function fetches the same few, and the
    answer (a string or an immutable address) is a pure function of the text; a
    refusal is raised again each time (a cache keeps no exceptions)."""
    try:
        return contract_parse_host(host)
    except InvalidHost as exc:
        raise Denied(str(exc)) from None


def canonical(ip: Address) -> Address:
    """An IPv4-mapped IPv6 address (`::ffff:127.0.0.1`) is the IPv4 address it reaches."""
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def embedded_ipv4(ip: IPv6Address) -> list[IPv4Address]:
    """The IPv4 addresses an IPv6 address carries and reaches when routed (IPv4-compatible,
    NAT64, 6to4, Teredo)."""
    embedded: list[IPv4Address] = []
    if ip in _IPV4_COMPATIBLE or ip in _NAT64:
        embedded.append(IPv4Address(int(ip) & 0xFFFFFFFF))
    if ip.sixtofour is not None:
        embedded.append(ip.sixtofour)
    if ip.teredo is not None:
        embedded.append(ip.teredo[1])
    return embedded


def is_public(ip: Address) -> bool:
    """True for globally routable unicast; IPv6 forms that embed an IPv4 address are judged
    by that address too."""
    ip = canonical(ip)
    if isinstance(ip, IPv6Address):
        if not all(is_public(e) for e in embedded_ipv4(ip)):
            return False
    elif ip in _SHARED:
        return False
    refused = (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or (isinstance(ip, IPv6Address) and ip.is_site_local)
    )
    return ip.is_global and not refused


def interface_addresses() -> frozenset[Address]:
    """Every address on this machine's network interfaces."""
    found: set[Address] = set()
    for entries in psutil.net_if_addrs().values():
        for entry in entries:
            if entry.family in (socket.AF_INET, socket.AF_INET6):
                try:
                    found.add(ip_address(entry.address.split("%", 1)[0]))
                except ValueError:
                    continue
    return frozenset(found)


class _NodeAddresses:
    """The node's interface addresses, re-read at most every `ttl_s`: addresses come and
    go (DHCP, a new interface), and reading them costs a system call per interface."""

    __slots__ = ("_addresses", "_at", "_lock", "_read", "_ttl_s")

    def __init__(self, read: Callable[[], frozenset[Address]], ttl_s: float) -> None:
        self._read = read
        self._ttl_s = ttl_s
        self._lock = threading.Lock()
        self._at = float("-inf")
        self._addresses: frozenset[Address] = frozenset()

    def __contains__(self, ip: Address) -> bool:
        now = time.monotonic()
        with self._lock:
            if now - self._at > self._ttl_s:
                self._addresses, self._at = self._read(), now
            return ip in self._addresses


class EgressRules:
    """What a node lets its guests connect to, decided by the node's operator.

    A public address is reachable (the function's allowlist decides). Any other
    address (loopback, private, link-local, CGNAT, multicast, unspecified, reserved,
    IPv6 unique-local and site-local, the IPv6 forms embedding such an IPv4 address)
    and every address of the node itself, public or not, is reachable only when the
    function sets `allow_private` *and* the address is inside one of the operator's
    `private_networks`. The node's own ports (`node_ports`) on any of the node's
    addresses are never reachable, whatever either of them says. Thread-safe.
    """

    __slots__ = ("_node_addresses", "node_ports", "private_networks")

    def __init__(
        self,
        private_networks: Iterable[Network | str] = (),
        *,
        node_ports: Iterable[int] = (),
        node_addresses: Callable[[], frozenset[Address]] = interface_addresses,
        refresh_s: float = 5.0,
    ) -> None:
        self.private_networks = tuple(
            n if isinstance(n, IPv4Network | IPv6Network) else ip_network(n)
            for n in private_networks
        )
        self.node_ports = frozenset(p for p in node_ports if p > 0)
        self._node_addresses = _NodeAddresses(node_addresses, refresh_s)

    @classmethod
    def for_node(cls, settings: EdgeSettings) -> EgressRules:
        """The operator's networks, and the ports the node (and a control plane it talks
        to, should that run on the same machine) listens on."""
        ports = {settings.edge_port, settings.metrics_port}
        ports.update(_url_port(url) for url in (settings.cp_url, settings.grpc_url) if url)
        return cls(settings.allow_private_egress, node_ports=ports)

    def is_node_address(self, ip: Address) -> bool:
        ip = canonical(ip)
        if ip.is_loopback or ip.is_unspecified:
            return True
        if isinstance(ip, IPv4Address) and ip in _THIS_HOST:
            return True
        return ip in self._node_addresses

    def check(self, addr: Address, port: int, *, allow_private: bool) -> None:
        """`Denied` unless a guest whose function sets `allow_private` (or not) may
        connect to `addr` port `port`."""
        ip = canonical(addr)
        related: list[Address] = [ip]
        if isinstance(ip, IPv6Address):
            related += embedded_ipv4(ip)
        if port in self.node_ports and any(self.is_node_address(a) for a in related):
            raise Denied(f"{addr} port {port} is this node's own service")
        if is_public(ip) and not self.is_node_address(ip):
            return
        if not allow_private:
            raise Denied(
                f"{addr} is not a public address (the function does not set "
                "http_fetch.allow_private)"
            )
        if not any(ip in network for network in self.private_networks):
            raise Denied(
                f"{addr} is not a public address and is outside this node's "
                "--allow-private-egress networks"
            )


def _url_port(url: str) -> int:
    """The port of `http(s)://host:port/...` or of a gRPC target (`host:port`,
    `dns:///host:port`); the scheme's default when it names none."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    authority = rest.lstrip("/").split("/", 1)[0].rpartition("@")[2]
    _, colon, port = authority.rpartition(":")
    if colon and port.isdigit() and not authority.endswith("]"):
        return int(port)
    return 80 if scheme == "http" else 443
