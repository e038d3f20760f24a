"""Per-version series from the nodes' reports: deltas between reports, counter
resets, sums over nodes, p99 from merged histograms, retention and tenancy, on
both databases."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import func, select

from edgefn.contract import LATENCY_BOUNDS, VersionStats
from edgefn.controlplane import db
from edgefn.controlplane.auth.principal import Principal
from edgefn.controlplane.series import service as series
from edgefn.controlplane.series.models import VersionSample
from tests.controlplane.conftest import ADMIN, CP

ROOT = Principal(kind="admin", id="admin")
T0 = dt.datetime(2026, 12, 1, 3, 0, 0, tzinfo=dt.UTC)


def _stats(fid: str, version: str, count: int, errors: int = 0, at_s: float = 0.005) -> Any:
    latency = [count if b >= at_s else 0 for b in LATENCY_BOUNDS]
    return {"function_id": fid, "version": version, "count": count,
            "errors": {"guest_error": errors} if errors else {}, "latency": latency}


@pytest.fixture
def fn(cp: CP, team: SimpleNamespace) -> dict[str, Any]:
    body: dict[str, Any] = cp.function(team.a_dev, "charted")
    return body


def _sessions(cp: CP) -> Any:
    return cp.client.app.state.cp.sessions  # type: ignore[attr-defined]


def _record(cp: CP, node: str, before: list[Any], now: list[Any], at: dt.datetime) -> None:
    with db.session_scope(_sessions(cp)) as session:
        old = {s.key: s for s in (VersionStats.model_validate(b) for b in before)}
        series.record(session, node, old, [VersionStats.model_validate(n) for n in now], at)
        session.commit()


def _read(cp: CP, who: Any, fid: str, **kw: Any) -> Any:
    with db.session_scope(_sessions(cp)) as session:
        return series.read(session, who, fid, since=kw.pop("since", T0),
                           until=kw.pop("until", T0 + dt.timedelta(minutes=5)),
                           step_s=kw.pop("step_s", 10), retention_s=86_400,
                           now=kw.pop("now", T0 + dt.timedelta(minutes=5)))


def test_deltas_resets_and_nodes_summed(cp: CP, fn: dict[str, Any]) -> None:
    fid = fn["id"]
    a1, a2 = _stats(fid, "1.0.0", 100), _stats(fid, "1.0.0", 150, errors=3)
    # Node a: 100 at its first report, 50 more ten seconds later, then it restarted.
    _record(cp, "a", [], [a1], T0 + dt.timedelta(seconds=1))
    _record(cp, "a", [a1], [a2], T0 + dt.timedelta(seconds=11))
    _record(cp, "a", [a2], [_stats(fid, "1.0.0", 20)], T0 + dt.timedelta(seconds=21))
    # Node b, slower, reports in the second bucket too, and a second version.
    _record(cp, "b", [], [_stats(fid, "1.0.0", 50, at_s=0.5), _stats(fid, "2.0.0", 7)],
            T0 + dt.timedelta(seconds=12))
    # Nothing new: no sample; an unknown function: none either.
    _record(cp, "b", [_stats(fid, "2.0.0", 7)], [_stats(fid, "2.0.0", 7),
            _stats("no-such-function", "1.0.0", 5)], T0 + dt.timedelta(seconds=25))

    out = _read(cp, ROOT, fid)
    assert out.step_s == 10 and out.since == T0
    by_version = {v.version: v.points for v in out.versions}
    assert list(by_version) == ["1.0.0", "2.0.0"]
    v1 = [(p.at - T0).total_seconds() for p in by_version["1.0.0"]], [
        (p.requests, p.errors, p.p99_s) for p in by_version["1.0.0"]]
    assert v1 == ([0, 10, 20], [(100, 0, 0.005), (100, 3, 0.5), (20, 0, 0.005)])
    assert [(p.requests, p.p99_s) for p in by_version["2.0.0"]] == [(7, 0.005)]
    # Steps of a minute sum the buckets; p99 of the merged histogram: 50 of 220 slow.
    out = _read(cp, ROOT, fid, step_s=60)
    assert [(p.requests, p.errors, p.p99_s) for p in out.versions[0].points] == [
        (220, 3, 0.5)]
    with db.session_scope(_sessions(cp)) as session:
        rows = session.scalar(select(func.count()).select_from(VersionSample))
    assert rows == 5  # node a's three buckets, and node b's two versions apart


def test_heartbeats_make_the_series_the_api_shows_to_its_project(
    cp: CP, team: SimpleNamespace, fn: dict[str, Any]
) -> None:
    fid = fn["id"]
    node = cp.node("pop-1", "node-1")
    cp.heartbeat(node, versions=[_stats(fid, "1.0.0", 40)])
    cp.heartbeat(node, versions=[_stats(fid, "1.0.0", 100, errors=2)])
    # The node moved to 2.0.0: 1.0.0 is no longer reported, 2.0.0 starts.
    cp.heartbeat(node, versions=[_stats(fid, "2.0.0", 30, at_s=0.25)])
    cp.heartbeat(node, versions=[])  # no figures: nothing changes

    out = cp.ok("GET", f"/functions/{fid}/series?step_s=3600", team.a_viewer)
    assert out["function_id"] == fid and out["step_s"] == 3600 and out["bucket_s"] == 10
    totals = {v["version"]: (sum(p["requests"] for p in v["points"]),
                             sum(p["errors"] for p in v["points"]),
                             {p["p99_s"] for p in v["points"]}) for v in out["versions"]}
    assert totals == {"1.0.0": (100, 2, {0.005}), "2.0.0": (30, 0, {0.25})}

    # 2.0.0 served again after 1.0.0 came back: its counters started again.
    cp.heartbeat(node, versions=[_stats(fid, "1.0.0", 5)])
    cp.heartbeat(node, versions=[_stats(fid, "2.0.0", 12)])
    out = cp.ok("GET", f"/functions/{fid}/series?step_s=3600", ADMIN)
    assert {v["version"]: sum(p["requests"] for p in v["points"]) for v in out["versions"]} == {
        "1.0.0": 105, "2.0.0": 42}

    # Another project sees no such function; a bad step is refused.
    resp = cp.call("GET", f"/functions/{fid}/series", team.b_dev)
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"
    assert cp.call("GET", "/functions/nope/series", team.a_dev).status_code == 404
    resp = cp.call("GET", f"/functions/{fid}/series?step_s=0", team.a_dev)
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "validation_error"
    # Times are RFC 3339: a number (seconds since the epoch to pydantic) or a date that
    # does not exist is refused, not read.
    for bad in ("until=0.5", "since=2026-13-40T00:00:00Z"):
        resp = cp.call("GET", f"/functions/{fid}/series?{bad}", team.a_dev)
        assert resp.status_code == 400, bad
        assert resp.json()["error"]["code"] == "validation_error"
    # A window outside the retention is held within it, never an error.
    out = cp.ok("GET", f"/functions/{fid}/series?since=0001-01-01T00:00:00%2B05:00"
                f"&until=9999-12-31T23:59:59-05:00&step_s=1", team.a_dev)
    assert out["step_s"] == 60  # 24 h in at most 1440 steps
    assert sum(len(v["points"]) for v in out["versions"]) >= 2


def test_old_samples_are_pruned_and_a_deleted_function_takes_its_own(
    cp: CP, team: SimpleNamespace, fn: dict[str, Any]
) -> None:
    fid = fn["id"]
    other = cp.function(team.a_dev, "other")["id"]
    for f in (fid, other):
        _record(cp, "a", [], [_stats(f, "1.0.0", 10)], T0)
        _record(cp, "a", [], [_stats(f, "1.0.0", 10)], T0 + dt.timedelta(hours=2))
    with db.session_scope(_sessions(cp)) as session:
        assert series.prune(session, retention_s=3600, now=T0 + dt.timedelta(hours=2)) == 2
        session.commit()
    cp.ok("DELETE", f"/functions/{other}", team.a_owner, 204)
    with db.session_scope(_sessions(cp)) as session:
        left = session.execute(select(VersionSample.function_id, VersionSample.at)).all()
    assert left == [(fid, T0 + dt.timedelta(hours=2))]
