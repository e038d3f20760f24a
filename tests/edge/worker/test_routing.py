"""Route matching: the precedence rules of docs/edge.md, and the tenancy rule the
router applies when it builds its table (contract/tenancy.py)."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from edgefn.contract import RouteSpec
from edgefn.contract.tenancy import Claims, claim_of
from edgefn.edge.spec import NodeState
from edgefn.edge.worker.routing import MethodNotAllowed, RouteMatch, Router, normalize_host
from tests.edge.conftest import EdgeHarness, fn


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


# ---- tenancy -------------------------------------------------------------------


def owned(fid: str, project: str, host: str, path: str, priority: int = 0) -> RouteSpec:
    return RouteSpec(
        id=f"r-{fid}", host=host, path=path, priority=priority, function_id=fid, project_id=project
    )


def dropped(reason: str) -> float:
    return REGISTRY.get_sample_value("edge_routes_dropped_total", {"reason": reason}) or 0.0


@pytest.mark.parametrize(
    ("first", "second", "overlap"),
    [
        (("*", "/api/*"), ("*", "/api/*"), True),
        (("*", "/api/*"), ("*", "/api/x"), True),
        (("*", "/api/*"), ("*", "/api"), True),
        (("*", "/api/*"), ("*", "/api/x/*"), True),
        (("*", "/api/*"), ("*", "/*"), True),
        (("*", "/api/x"), ("*", "/*"), True),
        (("*", "/"), ("*", "/*"), True),
        (("*", "/api"), ("*", "/api"), True),
        (("*", "/api/"), ("*", "/api/*"), True),
        (("*", "/api/*"), ("*", "/apix"), False),
        (("*", "/api/*"), ("*", "/apix/*"), False),
        (("*", "/api/x"), ("*", "/api/y"), False),
        (("*", "/api"), ("*", "/api/x"), False),
        (("shop.example.com", "/a"), ("shop.example.com", "/b"), True),
        (("shop.example.com", "/a"), ("*.example.com", "/b"), True),
        (("a.shop.example.com", "/"), ("*.example.com", "/"), True),
        (("*.shop.example.com", "/"), ("*.example.com", "/"), True),
        (("*.example.com", "/"), ("*.com", "/"), True),
        (("*.example.com", "/"), ("*.example.com", "/x"), True),
        (("example.com", "/"), ("*.example.com", "/"), False),
        (("shop.example.com", "/"), ("*.shop.example.com", "/"), False),
        (("shop.example.com", "/"), ("example.com", "/"), False),
        (("*.example.com", "/"), ("*.example.org", "/"), False),
        (("xexample.com", "/"), ("*.example.com", "/"), False),
        # The `*` host and the other hosts never overlap.
        (("*", "/*"), ("shop.example.com", "/"), False),
    ],
)
def test_claims_overlap(first: tuple[str, str], second: tuple[str, str], overlap: bool) -> None:
    for a, b in ((first, second), (second, first)):  # whichever came first
        claims = Claims()
        claims.add(claim_of(*a), "A")
        assert claims.other_holder(claim_of(*b), "B") == ("A" if overlap else None), (a, b)
        assert claims.other_holder(claim_of(*b), "A") is None


def test_routes_shadowing_another_projects_are_dropped(caplog: pytest.LogCaptureFixture) -> None:
    before = dropped("claimed_by_another_project")
    router = Router(
        [
            owned("a-victim", "A", "*", "/victim/*"),
            owned("a-shop", "A", "shop.victim.test", "/*"),
            owned("a-wild", "A", "*.a.test", "/*"),
            owned("a-sub", "A", "*", "/victim/own/*"),  # A's own, inside its prefix
            owned("b-same", "B", "*", "/victim/*", priority=1_000_000),
            owned("b-inside", "B", "*", "/victim/sub"),
            owned("b-root", "B", "*", "/*"),
            owned("b-host", "B", "shop.victim.test", "/api/*", priority=9),
            owned("b-over", "B", "*.victim.test", "/*"),
            owned("b-under", "B", "x.a.test", "/*"),
            owned("b-ok", "B", "*", "/b/*"),
        ]
    )
    assert router.size == 5
    assert dropped("claimed_by_another_project") - before == 6
    assert "b-same" in caplog.text and "claimed_by_another_project" in caplog.text

    def served(host: str, path: str) -> str | None:
        hit = router.match(host, path, "GET")
        return hit.function_id if isinstance(hit, RouteMatch) else None

    assert served("any.test", "/victim/sub") == "a-victim"
    assert served("any.test", "/victim/own/x") == "a-sub"
    assert served("shop.victim.test", "/api/x") == "a-shop"
    assert served("x.a.test", "/") == "a-wild"
    assert served("other.victim.test", "/") is None
    assert served("any.test", "/b/1") == "b-ok"
    assert served("any.test", "/elsewhere") is None


def test_the_first_route_in_the_table_keeps_the_claim() -> None:
    # B first: the same routes in the other order give the claim to B.
    router = Router(
        [owned("b", "B", "*.victim.test", "/*"), owned("a", "A", "shop.victim.test", "/")]
    )
    hit = router.match("shop.victim.test", "/", "GET")
    assert isinstance(hit, RouteMatch) and hit.function_id == "b"


def test_a_route_to_another_projects_function_is_dropped() -> None:
    before = dropped("function_of_another_project")
    router = Router(
        [owned("fa", "B", "*", "/steal"), owned("fb", "B", "*", "/mine")],
        {"fa": "A", "fb": "B"},
    )
    assert router.match("x.test", "/steal", "GET") is None
    assert isinstance(router.match("x.test", "/mine", "GET"), RouteMatch)
    assert dropped("function_of_another_project") - before == 1


def test_a_held_host_falls_back_to_its_own_projects_star_routes_only() -> None:
    router = Router(
        [
            owned("a-api", "A", "shop.a.test", "/api/*"),
            owned("a-home", "A", "*", "/home"),
            owned("b-login", "B", "*", "/login"),
            owned("b-wild", "B", "*.b.test", "/only"),
        ]
    )

    def served(host: str, path: str) -> str | None:
        hit = router.match(host, path, "GET")
        return hit.function_id if isinstance(hit, RouteMatch) else None

    # B's `*` page never answers on A's host (same origin as A's pages).
    assert served("shop.a.test", "/login") is None
    assert served("shop.a.test", "/home") == "a-home"
    assert served("x.b.test", "/home") is None and served("x.b.test", "/login") == "b-login"
    # A host nobody routes gets every project's `*` routes.
    assert served("nobody.test", "/login") == "b-login"
    assert served("nobody.test", "/home") == "a-home"


def test_one_tenant_tables_are_unchanged() -> None:
    # A local functions directory is one tenant (project ""): nothing is dropped.
    assert Router(ROUTES).size == len(ROUTES)


def test_the_runtime_drops_a_route_to_another_projects_function(edge: EdgeHarness) -> None:
    a = fn("fa", "counter", routes=[], project_id="A")
    b = fn("fb", "counter", routes=[], project_id="B")
    table = (
        owned("fa", "B", "*", "/steal/*"),  # names B, but fa is A's
        owned("fb", "B", "*", "/mine/*"),
    )
    edge.runtime.apply_state(NodeState(generation=1, functions=(a, b), route_table=table))
    assert edge.request("GET", "/steal/").status == 404
    assert edge.request("GET", "/mine/").status == 200
