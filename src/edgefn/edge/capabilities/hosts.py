"""Which hosts and addresses outbound HTTP may reach: strict host parsing, allowlists, the
public-address rule, and the node's egress rules (what its operator opened, and its own
ports, which no guest reaches).

Parsing is strict on purpose: resolvers accept `2130706433`, `0x7f.1` or
`0177.0.0.1` as 127.0.0.1, so any name that ends in a number and is not a
canonical dotted quad is refused rather than guessed at.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import TYPE_CHECKING

import psutil

from edgefn.edge.capabilities.errors import Denied

if TYPE_CHECKING:
    from edgefn.edge.settings import EdgeSettings

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network

_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_DOTTED_QUAD = re.compile(r"[0-9]{1,3}(\.[0-9]{1,3}){3}")
# Prefixes that carry an IPv4 address in their low 32 bits and reach it when routed.
_IPV4_COMPATIBLE = IPv6Network("::/96")
_NAT64 = IPv6Network("64:ff9b::/96")
_SHARED = IPv4Network("100.64.0.0/10")  # carrier-grade NAT: is_global, not is_private
# "This host on this network": Linux connects 0.0.0.0 (and may route 0/8) to the node itself.
_THIS_HOST = IPv4Network("0.0.0.0/8")


def parse_host(host: str) -> str | Address:
    """A lower-case DNS name, or an IP address; `Denied` for anything else.

    IPv6 literals come without brackets (as `httpx.URL.raw_host` gives them).
    """
    host = host.lower()
    if ":" in host:
        if "%" in host:  # a zone id names a local interface
            raise Denied(f"IPv6 zone ids are not allowed: {host!r}")
        try:
            return IPv6Address(host)
        except ValueError as exc:
            raise Denied(f"not an IPv6 address: {host!r}") from exc
    if _DOTTED_QUAD.fullmatch(host):
        try:
            return IPv4Address(host)  # refuses leading zeros (octal) and octets over 255
        except ValueError as exc:
            raise Denied(f"not a canonical IPv4 address: {host!r}") from exc
    labels = host.split(".")
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise Denied(f"not a valid host name: {host[:80]!r}")
    # The URL standard reads a host ending in a numeric label as an IPv4 address.
    if labels[-1].isdigit() or labels[-1].startswith("0x"):
        raise Denied(f"non-canonical IPv4 form: {host!r}")
    return host


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


class HostAllowlist:
    """`api.example.com` exact, `*.example.com` any subdomain (not the apex), `*` any host,
    IP addresses (IPv6 with or without brackets) exactly. Ports are not restricted."""

    __slots__ = ("_any", "_exact", "_suffixes")

    def __init__(self, entries: Iterable[str]) -> None:
        self._any = False
        self._exact: set[str | Address] = set()
        suffixes: list[str] = []
        for raw in entries:
            entry = raw.strip().lower()
            if entry == "*":
                self._any = True
            elif entry.startswith("*."):
                if not isinstance(_entry_host(entry[2:]), str):
                    raise ValueError(f"invalid allowlist entry {entry!r}: a wildcard needs a name")
                suffixes.append("." + entry[2:])
            else:
                self._exact.add(_entry_host(entry))
        self._suffixes = tuple(suffixes)

    def __bool__(self) -> bool:
        return self._any or bool(self._exact) or bool(self._suffixes)

    def allows(self, host: str | Address) -> bool:
        if self._any or host in self._exact:
            return True
        return isinstance(host, str) and host.endswith(self._suffixes)


def _entry_host(entry: str) -> str | Address:
    if entry.startswith("[") and entry.endswith("]"):
        entry = entry[1:-1]
    try:
        return ip_address(entry)
    except ValueError:
        pass
    try:
        return parse_host(entry)
    except Denied as exc:
        raise ValueError(f"invalid allowlist entry {entry!r}: {exc}") from exc


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
