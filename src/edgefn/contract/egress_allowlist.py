"""The syntax and meaning of an `http_fetch.allow_hosts` entry: what a function may
list, checked where it is written (control plane, `function.json`) and matched where
it is enforced (the edge's egress rules, `edge/capabilities/egress_rules.py`).

Host parsing is strict on purpose: resolvers accept `2130706433`, `0x7f.1` or
`0177.0.0.1` as 127.0.0.1, so any name that ends in a number and is not a
canonical dotted quad is refused rather than guessed at.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv6Address, ip_address

Address = IPv4Address | IPv6Address

_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_DOTTED_QUAD = re.compile(r"[0-9]{1,3}(\.[0-9]{1,3}){3}")


class InvalidHost(ValueError):
    """Not a host name or an IP address in canonical form."""


def parse_host(host: str) -> str | Address:
    """A lower-case DNS name, or an IP address; `InvalidHost` for anything else.

    IPv6 literals come without brackets (as `httpx.URL.raw_host` gives them).
    """
    host = host.lower()
    if ":" in host:
        if "%" in host:  # a zone id names a local interface
            raise InvalidHost(f"IPv6 zone ids are not allowed: {host!r}")
        try:
            return IPv6Address(host)
        except ValueError as exc:
            raise InvalidHost(f"not an IPv6 address: {host!r}") from exc
    if _DOTTED_QUAD.fullmatch(host):
        try:
            return IPv4Address(host)  # refuses leading zeros (octal) and octets over 255
        except ValueError as exc:
            raise InvalidHost(f"not a canonical IPv4 address: {host!r}") from exc
    labels = host.split(".")
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise InvalidHost(f"not a valid host name: {host[:80]!r}")
    # The URL standard reads a host ending in a numeric label as an IPv4 address.
    if labels[-1].isdigit() or labels[-1].startswith("0x"):
        raise InvalidHost(f"non-canonical IPv4 form: {host!r}")
    return host


class EgressAllowlist:
    """`api.example.com` exact, `*.example.com` any subdomain (not the apex), `*` any host,
    IP addresses (IPv6 with or without brackets) exactly. Ports are not restricted.
    A bad entry is a `ValueError` naming it."""

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
    except InvalidHost as exc:
        raise ValueError(f"invalid allowlist entry {entry!r}: {exc}") from exc
