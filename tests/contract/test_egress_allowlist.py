"""What an `http_fetch.allow_hosts` entry may be and what it matches."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest
from pydantic import ValidationError

from edgefn.contract import EgressAllowlist, HttpFetchPolicy


def test_allowlist_matching() -> None:
    allow = EgressAllowlist(["api.example.com", "*.example.org", "127.0.0.1", "[::1]"])
    assert allow.allows("api.example.com")
    assert not allow.allows("x.api.example.com")
    assert allow.allows("a.example.org") and allow.allows("a.b.example.org")
    assert not allow.allows("example.org")
    assert not allow.allows("badexample.org")
    assert allow.allows(IPv4Address("127.0.0.1"))
    assert allow.allows(IPv6Address("::1"))
    assert not allow.allows(IPv6Address("::ffff:127.0.0.1"))
    assert EgressAllowlist(["*"]).allows("anything.example")
    assert not EgressAllowlist([])


@pytest.mark.parametrize("entry", ["2130706433", "*.10.0.0.1", "http://x.com", "a b", "*.*.com"])
def test_policy_refuses_bad_allowlist_entries(entry: str) -> None:
    with pytest.raises(ValidationError):
        HttpFetchPolicy(allow_hosts=(entry,))


def test_policy_normalizes_entries() -> None:
    policy = HttpFetchPolicy(allow_hosts=(" API.Example.com ", "[::1]"))
    assert policy.allow_hosts == ("api.example.com", "[::1]")
