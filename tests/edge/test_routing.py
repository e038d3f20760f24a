"""Route matching: the precedence rules of docs/edge.md."""

from __future__ import annotations

import pytest

from edgefn.edge.routing import MethodNotAllowed, RouteMatch, Router, normalize_host
from edgefn.edge.spec import RouteSpec


def route(fid: str, host: str, path: str, methods: tuple[str, ...] = (), priority: int = 0):
    return RouteSpec(host=host, path=path, methods=methods, priority=priority, function_id=fid)


ROUTES = [
    route("any-root", "*", "/*"),
    route("any-api", "*", "/api/*"),
    route("any-hello", "*", "/api/hello"),
    route("wild-api", "*.example.com", "/api/*"),
    route("wild-deep", "*.eu.example.com", "/api/*"),
    route("exact-api", "shop.example.com", "/api/*"),
    route("exact-v2", "shop.example.com", "/api/v2/*"),
    route("low", "prio.test", "/p", priority=1),
    route("high", "prio.test", "/p", priority=5),
    route("get-only", "m.test", "/items", methods=("GET",)),
    route("post-only", "m.test", "/items", methods=("POST",)),
    route("first", "tie.test", "/t"),
    route("second", "tie.test", "/t"),
]


@pytest.mark.parametrize(
    ("host", "path", "expected"),
    [
        # exact path beats a prefix on the same host
        ("other.test", "/api/hello", "any-hello"),
        # the longest prefix wins
        ("other.test", "/api/hello/x", "any-api"),
        ("other.test", "/api", "any-api"),
        ("other.test", "/apix", "any-root"),
        ("other.test", "/", "any-root"),
        # host first: an exact host beats a wildcard, a wildcard beats `*`
        ("shop.example.com", "/api/x", "exact-api"),
        ("shop.example.com", "/api/v2/items", "exact-v2"),
        ("blog.example.com", "/api/x", "wild-api"),
        ("a.eu.example.com", "/api/x", "wild-deep"),
        # a host whose routes do not match the path falls through to less specific hosts
        ("shop.example.com", "/other", "any-root"),
        ("example.com", "/api/x", "any-api"),
        # the port and case do not matter
        ("SHOP.example.com:8443", "/api/x", "exact-api"),
        # priority, then definition order
        ("prio.test", "/p", "high"),
        ("tie.test", "/t", "first"),
    ],
)
def test_precedence(host: str, path: str, expected: str) -> None:
    result = Router(ROUTES).match(host, path, "GET")
    assert isinstance(result, RouteMatch)
    assert result.function_id == expected


def test_method_selects_among_routes_of_one_path() -> None:
    router = Router(ROUTES)
    get = router.match("m.test", "/items", "GET")
    post = router.match("m.test", "/items", "POST")
    head = router.match("m.test", "/items", "HEAD")
    assert isinstance(get, RouteMatch) and get.function_id == "get-only"
    assert isinstance(post, RouteMatch) and post.function_id == "post-only"
    assert isinstance(head, RouteMatch) and head.function_id == "get-only"


def test_method_not_allowed_lists_allowed_methods() -> None:
    result = Router(ROUTES).match("m.test", "/items", "DELETE")
    assert result == MethodNotAllowed(("GET", "POST"))


def test_no_route_is_none() -> None:
    router = Router([route("a", "only.test", "/a")])
    assert router.match("only.test", "/b", "GET") is None
    assert router.match("other.test", "/a", "GET") is None


def test_lookup_cost_does_not_grow_with_route_count() -> None:
    # 20k routes on distinct hosts: a match touches only the request's host and path.
    many = [route(f"f{i}", f"h{i}.test", f"/p{i}/*") for i in range(20_000)]
    router = Router(many)
    hit = router.match("h19999.test", "/p19999/x/y", "GET")
    assert isinstance(hit, RouteMatch) and hit.function_id == "f19999"
    assert router.size == 20_000


@pytest.mark.parametrize(
    ("raw", "host"),
    [("Example.COM:80", "example.com"), ("[::1]:8080", "[::1]"), ("a.b", "a.b"), ("", "")],
)
def test_normalize_host(raw: str, host: str) -> None:
    assert normalize_host(raw) == host


@pytest.mark.parametrize("path", ["api", "/a*b", "/api*", "/*/x"])
def test_invalid_route_paths_are_refused(path: str) -> None:
    with pytest.raises(ValueError):
        RouteSpec(host="*", path=path)


@pytest.mark.parametrize("host", ["a..b", "*.*.x", "exa mple.com", "*x.com"])
def test_invalid_route_hosts_are_refused(host: str) -> None:
    with pytest.raises(ValueError):
        RouteSpec(host=host, path="/")
