"""`metrics_increment`'s series cap: per function, through reloads and redeploys."""

from __future__ import annotations

import uuid

from edgefn.edge import metrics
from edgefn.edge.capabilities.metrics import MetricsCapability
from edgefn.edge.spec import FunctionSpec
from tests.edge.conftest import EdgeHarness, fn


def _spec(fid: str, version: str = "1.0.0") -> FunctionSpec:
    return FunctionSpec(id=fid, version=version, project_id="proj-m", artifact="x.wasm")


def test_the_cap_is_per_function_and_survives_reconfiguring() -> None:
    fid = f"m{uuid.uuid4().hex[:8]}"
    first = MetricsCapability.configure(_spec(fid), max_series=2)
    assert first.increment(b"a", 1, b"") and first.increment(b"b", 1, b"")
    assert not first.increment(b"c", 1, b"")
    # A reload or a new version configures the capability again: the cap holds.
    again = MetricsCapability.configure(_spec(fid, "2.0.0"), max_series=2)
    assert not again.increment(b"d", 1, b"")
    assert again.increment(b"a", 2, b"")  # a series it already has still counts
    # Another function has a cap of its own.
    other = MetricsCapability.configure(_spec(fid + "x"), max_series=2)
    assert other.increment(b"c", 1, b"")
    assert metrics.GUEST_METRIC.labels(fid, "proj-m", "a", "")._value.get() == 3
    assert metrics.GUEST_METRIC_DROPPED.labels(fid, "proj-m")._value.get() == 2


def test_series_and_log_lines_carry_the_project(edge: EdgeHarness) -> None:
    edge.deploy(fn("hp", "hostcalls", path="/*", project_id="tenant-x"))
    before = metrics.GUEST_METRIC.labels("hp", "tenant-x", "hits", "route=a")._value.get()
    assert edge.request("GET", "/metric").status == 200
    assert edge.request("GET", "/log").status == 200
    after = metrics.GUEST_METRIC.labels("hp", "tenant-x", "hits", "route=a")._value.get()
    assert after - before == 1.5
    assert metrics.INVOKE_COUNT.labels("hp", "tenant-x", "1.0.0")._value.get() >= 2
    lines = edge.logs()
    assert {r["project_id"] for r in lines if r["function_id"] == "hp"} == {"tenant-x"}
    assert {r["type"] for r in lines} == {"invocation", "function_log"}
    # Reloaded (a new generation of the same version): the series count stays.
    edge.deploy(fn("hp", "hostcalls", path="/*", project_id="tenant-x", max_hot_instances=3))
    assert edge.request("GET", "/metric").status == 200
    assert metrics.GUEST_METRIC.labels("hp", "tenant-x", "hits", "route=a")._value.get() == (
        after + 1.5)
