"""Route tenancy on both databases: a project cannot take another's host or shadow its
`*` paths, claims are listed, pinned, reassigned and released by the admin, the
nodes get only routes whose project holds their claim, and concurrent claims of
two projects never both win."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa

from edgefn.controlplane import db
from edgefn.controlplane.auth.principal import Principal
from edgefn.controlplane.errors import Conflict
from edgefn.controlplane.routes import service
from edgefn.controlplane.routes.models import Route, RouteClaim
from edgefn.controlplane.routes.schemas import RouteIn
from tests.controlplane.conftest import ADMIN, CP

# A's routes, the victim's: a `*` prefix, an exact `*` path, an exact host and a wildcard.
VICTIM_ROUTES = [
    ("*", "/victim/*"),
    ("*", "/exact"),
    ("shop.victim.test", "/api/*"),
    ("*.a.test", "/*"),
]
# What B tries; each would take or shadow some of A's traffic.
ATTACKS = [
    ("*", "/victim/*", 1_000_000),  # same path, higher priority
    ("*", "/victim/sub", 0),  # a path inside A's prefix
    ("*", "/victim/sub/*", 0),
    ("*", "/victim", 0),  # the prefix's own path
    ("*", "/*", 0),  # a path that contains A's
    ("*", "/exact", 5),
    ("*", "/exact/*", 0),
    ("shop.victim.test", "/other", 0),  # A's host
    ("shop.victim.test", "/api/*", 9),
    ("*.victim.test", "/*", 0),  # a wildcard over A's host
    ("*.test", "/x", 0),
    ("x.a.test", "/*", 0),  # a name under A's wildcard
    ("*.deep.a.test", "/*", 0),
]
# What B may still do: nothing here overlaps A.
ALLOWED = [
    ("*", "/victimize"),  # a sibling, not a path inside `/victim`
    ("*", "/b/*"),
    ("*", "/exact2"),
    ("victim.test", "/*"),  # A holds `shop.victim.test` only
    ("a.test", "/*"),  # `*.a.test` covers names below `a.test`, not `a.test`
]


def fn_of(cp: CP, headers: dict[str, str], name: str) -> str:
    return str(cp.function(headers, name)["id"])


def route(cp: CP, headers: dict[str, str], fid: str, host: str, path: str, **kw: Any) -> Any:
    return cp.call(
        "POST", "/routes", headers, json={"host": host, "path": path, "function_id": fid, **kw}
    )


@pytest.fixture
def victim(cp: CP, team: SimpleNamespace, wasm: SimpleNamespace) -> SimpleNamespace:
    """A's function with its routes, and B's function, both deployed (a node is sent
    the routes of the functions deployed to it)."""
    a_fn, b_fn = fn_of(cp, team.a_dev, "shop"), fn_of(cp, team.b_dev, "intruder")
    for dev, fid in ((team.a_dev, a_fn), (team.b_dev, b_fn)):
        assert cp.upload(dev, fid, "1.0.0", wasm.edge_v1).status_code == 201
        cp.ok("POST", f"/functions/{fid}/deploy", dev, 202, json={"version": "1.0.0"})
    ids = []
    for host, path in VICTIM_ROUTES:
        r = route(cp, team.a_dev, a_fn, host, path)
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    return SimpleNamespace(a_fn=a_fn, b_fn=b_fn, route_ids=ids)


def node_routes(cp: CP) -> set[tuple[str, str, str]]:
    """(host, path, project) of the route table a fresh node gets."""
    node = cp.node("pop-t", None)
    config = [i for i in cp.heartbeat(node) if i["type"] == "config"][-1]
    return {(r["host"], r["path"], r["project_id"]) for r in config["routes"]}


def test_every_attack_is_refused_and_the_victim_keeps_its_routes(
    cp: CP, team: SimpleNamespace, victim: SimpleNamespace
) -> None:
    for host, path, priority in ATTACKS:
        r = route(cp, team.b_dev, victim.b_fn, host, path, priority=priority)
        assert r.status_code == 409, (host, path, r.text)
        message = r.json()["error"]["message"]
        assert "claimed by another project" in message
        # Nothing about the other tenant beyond that.
        assert team.a not in message and victim.a_fn not in message and "alpha" not in message
    # A host with a port would never match, and nodes refuse it: 400, not a way around.
    r = route(cp, team.b_dev, victim.b_fn, "shop.victim.test:8080", "/")
    assert r.status_code == 400, r.text
    for host, path in ALLOWED:
        assert route(cp, team.b_dev, victim.b_fn, host, path).status_code == 201, (host, path)
    # A routes freely inside its own claims.
    for host, path in (("*", "/victim/sub"), ("x.a.test", "/only"), ("*", "/victim/deep/*")):
        assert route(cp, team.a_dev, victim.a_fn, host, path).status_code == 201, (host, path)

    listed = cp.ok("GET", "/routes", team.a_viewer)
    assert all(r["serving"] for r in listed)
    a_routes = {(r["host"], r["path"]) for r in listed}
    assert a_routes == {
        *VICTIM_ROUTES,
        ("*", "/victim/sub"),
        ("x.a.test", "/only"),
        ("*", "/victim/deep/*"),
    }
    b_routes = {(r["host"], r["path"]) for r in cp.ok("GET", "/routes", team.b_dev)}
    assert b_routes == set(ALLOWED)
    served = node_routes(cp)
    assert {(h, p) for h, p, project in served if project == team.a} == a_routes
    assert {(h, p) for h, p, project in served if project == team.b} == set(ALLOWED)


def test_claims_are_listed_per_project_and_released_with_the_last_route(
    cp: CP, team: SimpleNamespace, victim: SimpleNamespace
) -> None:
    assert route(cp, team.a_dev, victim.a_fn, "shop.victim.test", "/more").status_code == 201
    assert route(cp, team.b_dev, victim.b_fn, "*", "/b/*").status_code == 201
    a_claims = cp.ok("GET", "/route-claims", team.a_owner)
    assert {(c["host"], c["path"]) for c in a_claims} == {
        ("*", "/victim/*"),
        ("*", "/exact"),
        ("shop.victim.test", "/*"),
        ("*.a.test", "/*"),
    }
    assert all(c["project_id"] == team.a and not c["pinned"] for c in a_claims)
    assert [(c["host"], c["path"]) for c in cp.ok("GET", "/route-claims", team.b_dev)] == [
        ("*", "/b/*")
    ]
    # A project filter cannot show another project's claims.
    assert cp.ok("GET", f"/route-claims?project_id={team.a}", team.b_dev) == []
    assert len(cp.ok("GET", "/route-claims", ADMIN)) == 5

    # The host stays A's while one of its routes remains there.
    shop = [r for r in cp.ok("GET", "/routes", team.a_dev) if r["host"] == "shop.victim.test"]
    cp.ok("DELETE", f"/routes/{shop[0]['id']}", team.a_dev, 204)
    assert route(cp, team.b_dev, victim.b_fn, "shop.victim.test", "/").status_code == 409
    cp.ok("DELETE", f"/routes/{shop[1]['id']}", team.a_dev, 204)
    assert route(cp, team.b_dev, victim.b_fn, "shop.victim.test", "/").status_code == 201
    assert route(cp, team.a_dev, victim.a_fn, "shop.victim.test", "/").status_code == 409


def test_a_claim_lapses_when_its_routes_go_with_their_function(
    cp: CP, team: SimpleNamespace, victim: SimpleNamespace
) -> None:
    assert route(cp, team.b_dev, victim.b_fn, "*", "/victim/x").status_code == 409
    cp.ok("DELETE", f"/functions/{victim.a_fn}", team.a_owner, 204)
    assert route(cp, team.b_dev, victim.b_fn, "*", "/victim/x").status_code == 201
    claims = cp.ok("GET", "/route-claims", ADMIN)
    assert ("*", "/victim/x", team.b) in {(c["host"], c["path"], c["project_id"]) for c in claims}


def test_admin_assigns_pins_reassigns_and_releases(
    cp: CP, team: SimpleNamespace, victim: SimpleNamespace
) -> None:
    # Only the admin assigns; bad bodies are 400.
    body = {"host": "*", "path": "/reserved/*", "project_id": team.a}
    assert cp.call("PUT", "/route-claims", team.a_owner, json=body).status_code == 403
    for bad in (
        {"host": "*", "project_id": team.a},
        {"host": "x.test", "path": "/a", "project_id": team.a},
        {"host": "a*b", "project_id": team.a},
    ):
        assert cp.call("PUT", "/route-claims", ADMIN, json=bad).status_code == 400, bad
    missing = {"host": "x.test", "project_id": "no-such-project"}
    assert cp.call("PUT", "/route-claims", ADMIN, json=missing).status_code == 404

    # A pinned claim outlives its routes.
    pinned = cp.ok("PUT", "/route-claims", ADMIN, json=body)
    assert pinned["pinned"] and pinned["path"] == "/reserved/*"
    assert route(cp, team.b_dev, victim.b_fn, "*", "/reserved/x").status_code == 409
    r = route(cp, team.a_dev, victim.a_fn, "*", "/reserved/*").json()
    cp.ok("DELETE", f"/routes/{r['id']}", team.a_dev, 204)
    assert route(cp, team.b_dev, victim.b_fn, "*", "/reserved/x").status_code == 409

    # An assignment that overlaps another project's claim is refused, naming it.
    clash = cp.call(
        "PUT", "/route-claims", ADMIN, json={"host": "*.victim.test", "project_id": team.b}
    )
    assert clash.status_code == 409 and team.a in clash.json()["error"]["message"]

    # Reassigning A's host to B: A's routes there go, B may route it, A may not.
    moved = cp.ok(
        "PUT", "/route-claims", ADMIN, json={"host": "shop.victim.test", "project_id": team.b}
    )
    assert moved["project_id"] == team.b and moved["path"] == "/*"
    assert "shop.victim.test" not in {r["host"] for r in cp.ok("GET", "/routes", team.a_dev)}
    assert route(cp, team.b_dev, victim.b_fn, "shop.victim.test", "/api/*").status_code == 201
    assert route(cp, team.a_dev, victim.a_fn, "shop.victim.test", "/x").status_code == 409
    served = node_routes(cp)
    assert ("shop.victim.test", "/api/*", team.b) in served
    assert not any(h == "shop.victim.test" and p == team.a for h, _, p in served)
    audit = cp.ok("GET", "/audit", ADMIN)
    assign = next(
        e
        for e in audit
        if e["action"] == "route_claim.assign" and e["details"]["host"] == "shop.victim.test"
    )
    assert assign["details"]["previous_project_id"] == team.a
    assert assign["details"]["routes_deleted"] == [victim.route_ids[2]]

    # Release: refused while the holder routes under it, then done.
    claims = {(c["host"], c["path"]): c for c in cp.ok("GET", "/route-claims", ADMIN)}
    shop = claims[("shop.victim.test", "/*")]
    assert cp.call("DELETE", f"/route-claims/{shop['id']}", ADMIN).status_code == 409
    reserved = claims[("*", "/reserved/*")]
    assert cp.call("DELETE", f"/route-claims/{reserved['id']}", team.a_owner).status_code == 403
    cp.ok("DELETE", f"/route-claims/{reserved['id']}", ADMIN, 204)
    assert cp.call("DELETE", f"/route-claims/{reserved['id']}", ADMIN).status_code == 404
    assert route(cp, team.b_dev, victim.b_fn, "*", "/reserved/x").status_code == 201


# Claims of each group overlap one another: of all the racers, one project may win.
RACES = [
    [("*", "/race{n}/*"), ("*", "/race{n}/x"), ("*", "/race{n}/x/*")],
    [("x.race.t{n}", "/"), ("x.race.t{n}", "/y"), ("*.race.t{n}", "/"), ("*.t{n}", "/")],
]


@pytest.mark.parametrize("group", RACES, ids=["paths", "hosts"])
def test_concurrent_claims_of_two_projects_never_both_win(
    cp: CP, team: SimpleNamespace, group: list[tuple[str, str]]
) -> None:
    fns = {team.a: fn_of(cp, team.a_dev, "a"), team.b: fn_of(cp, team.b_dev, "b")}
    sessions = cp.client.app.state.cp.sessions  # type: ignore[attr-defined]
    for n in range(3):  # a race is lost or won by timing: run a few
        racers = [
            (project, host.format(n=n), path.format(n=n))
            for host, path in group
            for project in (team.a, team.b)
        ]
        winners = _race(sessions, fns, racers)
        assert winners and len(set(winners)) == 1, racers
        with db.session_scope(sessions) as session:
            held = session.scalars(
                sa.select(RouteClaim.project_id).where(
                    sa.or_(
                        RouteClaim.host.endswith(f".t{n}"), RouteClaim.path.startswith(f"/race{n}")
                    )
                )
            )
            assert set(held) == set(winners)


def _race(sessions: Any, fns: dict[str, str], racers: list[tuple[str, str, str]]) -> list[str]:
    """Every racer creates its route at once; the projects whose routes were created."""
    start = threading.Barrier(len(racers))
    winners: list[str] = []
    errors: list[BaseException] = []

    def race(project: str, host: str, path: str) -> None:
        who = Principal("api_key", f"racer-{project}", roles={project: "developer"})
        body = RouteIn(host=host, path=path, function_id=fns[project])
        with db.session_scope(sessions) as session:
            start.wait()
            try:
                service.create_route(session, who, body)
                winners.append(project)
            except Conflict:
                pass
            except BaseException as exc:  # reported below
                errors.append(exc)

    threads = [threading.Thread(target=race, args=r) for r in racers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    return winners


def test_one_row_per_claim(cp: CP, team: SimpleNamespace) -> None:
    sessions = cp.client.app.state.cp.sessions  # type: ignore[attr-defined]
    with db.session_scope(sessions) as session:
        session.add(RouteClaim(host="same.test", path="/*", project_id=team.a))
        session.commit()
        session.add(RouteClaim(host="same.test", path="/*", project_id=team.b))
        with pytest.raises(sa.exc.IntegrityError):
            session.commit()


def test_migration_derives_claims_from_existing_routes_oldest_first(
    cp: CP, team: SimpleNamespace, database_url: str, wasm: SimpleNamespace
) -> None:
    a_fn, b_fn = fn_of(cp, team.a_dev, "old-a"), fn_of(cp, team.b_dev, "old-b")
    for dev, fid in ((team.a_dev, a_fn), (team.b_dev, b_fn)):
        assert cp.upload(dev, fid, "1.0.0", wasm.edge_v1).status_code == 201
        cp.ok("POST", f"/functions/{fid}/deploy", dev, 202, json={"version": "1.0.0"})
    engine = db.make_engine(database_url)
    try:
        db.downgrade(engine, "0002")  # before claims: overlapping routes could be made
        t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        existing = [  # (minutes after t0, function, host, path)
            (1, a_fn, "*", "/old/*"),
            (2, b_fn, "*", "/old/sub"),  # inside A's older prefix: loses
            (3, b_fn, "*", "/b/*"),
            (4, a_fn, "shop.old.test", "/"),  # under B's older wildcard: loses
            (0, b_fn, "*.old.test", "/"),
            (5, a_fn, "*", "/old/*"),  # a second route of A under one claim
        ]
        with engine.begin() as conn:
            for minutes, fid, host, path in existing:
                conn.execute(
                    sa.insert(Route.__table__).values(
                        id=str(uuid.uuid4()),
                        host=host,
                        path=path,
                        function_id=fid,
                        methods=["GET"],
                        priority=minutes,
                        created_at=t0 + dt.timedelta(minutes=minutes),
                    )
                )
        db.migrate(engine)
    finally:
        engine.dispose()
    claims = {(c["host"], c["path"]): c["project_id"] for c in cp.ok("GET", "/route-claims", ADMIN)}
    assert claims == {("*", "/old/*"): team.a, ("*", "/b/*"): team.b, ("*.old.test", "/*"): team.b}
    assert node_routes(cp) == {
        ("*", "/old/*", team.a),
        ("*", "/b/*", team.b),
        ("*.old.test", "/", team.b),
    }
    # The losers stay visible to their projects, and cannot be made again.
    a_routes = {(r["host"], r["path"]): r["serving"] for r in cp.ok("GET", "/routes", team.a_dev)}
    assert a_routes == {("*", "/old/*"): True, ("shop.old.test", "/"): False}
    assert route(cp, team.a_dev, a_fn, "shop.old.test", "/x").status_code == 409
