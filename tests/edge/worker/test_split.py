"""Choosing a split function's version: sticky, proportional, by header, cookie or address."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from edgefn.contract import TrafficSplit
from edgefn.edge.spec import FunctionSpec, SplitState
from edgefn.edge.worker.exchange import HttpRequest
from edgefn.edge.worker.split import VersionChoice

NEW = FunctionSpec(id="fn", version="2.0.0")
OLD = FunctionSpec(id="fn", version="1.0.0")


def request(headers: list[tuple[bytes, bytes]], addr: str = "10.0.0.1") -> HttpRequest:
    return HttpRequest("GET", "h", "/", "", headers, lambda n: b"", remote_addr=addr)


def choice(percent: int, key: str = "") -> VersionChoice:
    return VersionChoice("fn", SplitState(percent=percent, key=key, previous=OLD), OLD.key)


def version(c: VersionChoice, req: HttpRequest) -> str:
    return c.choose(req, NEW, NEW.key)[0].version


@pytest.mark.parametrize("percent", [0, 5, 10, 50, 90, 100])
def test_the_share_of_distinct_clients_follows_the_percentage(percent: int) -> None:
    c = choice(percent, "header:x-user")
    new = sum(version(c, request([(b"x-user", f"user-{i}".encode())])) == "2.0.0"
              for i in range(2000))
    assert abs(new / 2000 - percent / 100) <= 0.03


def test_a_client_keeps_its_version_and_a_larger_share_only_adds_clients() -> None:
    keys = [request([(b"cookie", f"a=1; sid=s{i}; b=2".encode())]) for i in range(500)]
    at10 = {i for i, r in enumerate(keys) if version(choice(10, "cookie:sid"), r) == "2.0.0"}
    at30 = {i for i, r in enumerate(keys) if version(choice(30, "cookie:sid"), r) == "2.0.0"}
    assert at10 < at30
    c = choice(50, "cookie:sid")
    assert all(len({version(c, r) for _ in range(5)}) == 1 for r in keys)


def test_without_the_named_key_the_client_address_decides() -> None:
    c = choice(50, "header:x-user")
    by_addr = {version(c, request([], f"10.0.0.{i}")) for i in range(50)}
    assert by_addr == {"1.0.0", "2.0.0"}
    assert version(c, request([(b"cookie", b"x-user=1")], "10.0.0.7")) == version(
        c, request([], "10.0.0.7"))


def test_a_cookie_name_is_matched_whole() -> None:
    c = choice(50, "cookie:sid")
    assert c.client_key(request([(b"cookie", b"xsid=1; sid=abc")])) == b"abc"
    assert c.client_key(request([(b"cookie", b"xsid=1")], "10.1.1.1")) == b"10.1.1.1"


@pytest.mark.parametrize("bad", [{"percent": 101}, {"percent": -1}, {"percent": 5, "key": "x"},
                                 {"percent": 5, "key": "cookie:"}, {"percent": 5, "key": "ip:a"}])
def test_a_split_is_validated(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        TrafficSplit.model_validate(bad)
