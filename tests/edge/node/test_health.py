"""Per-version figures read from a Prometheus registry: counted from the moment a
version began serving, errors by code, the latency histogram."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from edgefn.contract import LATENCY_BOUNDS, p99
from edgefn.edge.metrics import LATENCY_BUCKETS
from edgefn.edge.node.health import VersionFigures, read_counts


def test_figures_start_when_a_version_does() -> None:
    registry = CollectorRegistry()
    labels = ["function_id", "project_id"]
    count = Counter("wasm_invoke_count", "", labels, registry=registry)
    errors = Counter("wasm_invoke_errors", "", [*labels, "code"], registry=registry)
    latency = Histogram("wasm_invoke_latency_seconds", "", labels, buckets=LATENCY_BUCKETS,
                        registry=registry)
    figures = VersionFigures(lambda: read_counts(registry))
    for _ in range(5):
        count.labels("fn", "p").inc()
        latency.labels("fn", "p").observe(0.003)
    [v1] = figures.report([{"id": "fn", "version": "1", "state": "cached"}])
    assert (v1.version, v1.count, v1.errors) == ("1", 5, {})
    assert p99(v1.latency) == 0.005 and len(v1.latency) == len(LATENCY_BOUNDS)
    [same] = figures.report([{"id": "fn", "version": "2", "state": "cached"}])
    assert (same.version, same.count) == ("2", 0)  # what came before was version 1's
    for _ in range(4):
        count.labels("fn", "p").inc()
        errors.labels("fn", "p", "guest_error").inc()
        latency.labels("fn", "p").observe(0.7)
    [v2] = figures.report([{"id": "fn", "version": "2", "state": "cached"}])
    assert (v2.count, v2.errors) == (4, {"guest_error": 4})
    assert p99(v2.latency) == 1.0


def test_requests_still_served_by_the_previous_version_are_not_the_new_ones() -> None:
    # The workers label invocations with their version: a request the version before
    # served after the switch is not counted for the new one.
    registry = CollectorRegistry()
    labels = ["function_id", "project_id", "version"]
    count = Counter("wasm_invoke_count", "", labels, registry=registry)
    errors = Counter("wasm_invoke_errors", "", [*labels, "code"], registry=registry)
    figures = VersionFigures(lambda: read_counts(registry))
    count.labels("fn", "p", "1").inc(3)
    figures.report([{"id": "fn", "version": "1", "state": "cached"}])
    figures.report([{"id": "fn", "version": "2", "state": "cached"}])
    count.labels("fn", "p", "1").inc(2)  # lingering on version 1
    for _ in range(4):
        count.labels("fn", "p", "2").inc()
        errors.labels("fn", "p", "2", "guest_error").inc()
    errors.labels("fn", "p", "", "quota_exceeded").inc()  # refused before a version
    [v2] = figures.report([{"id": "fn", "version": "2", "state": "cached"}])
    assert (v2.count, v2.errors) == (4, {"guest_error": 4})


def test_a_split_reports_both_versions_and_the_previous_one_keeps_counting() -> None:
    registry = CollectorRegistry()
    count = Counter("wasm_invoke_count", "", ["function_id", "version"], registry=registry)
    figures = VersionFigures(lambda: read_counts(registry))
    count.labels("fn", "1").inc(10)
    figures.report([{"id": "fn", "version": "1", "state": "cached"}])
    both = [{"id": "fn", "version": "2", "state": "cached"},
            {"id": "fn", "version": "1", "state": "cached"}]
    figures.report(both)
    count.labels("fn", "1").inc(9)
    count.labels("fn", "2").inc(1)
    assert [(v.version, v.count) for v in figures.report(both)] == [("2", 1), ("1", 19)]
    # Split promoted: 1 is gone; served again later, it starts afresh from the
    # report before it came back (what it served since is its own).
    figures.report(both[:1])
    count.labels("fn", "1").inc(3)
    figures.report(both[:1])
    count.labels("fn", "1").inc(2)
    [again] = figures.report(both[1:])
    assert (again.version, again.count) == ("1", 2)


def test_what_a_new_version_serves_before_its_first_report_is_its_own() -> None:
    registry = CollectorRegistry()
    count = Counter("wasm_invoke_count", "", ["function_id", "version"], registry=registry)
    figures = VersionFigures(lambda: read_counts(registry))
    count.labels("fn", "1").inc(10)
    figures.report([{"id": "fn", "version": "1", "state": "cached"}])
    count.labels("fn", "2").inc(7)  # deployed and serving before the next report
    count.labels("fn", "1").inc(1)  # lingering
    [v2] = figures.report([{"id": "fn", "version": "2", "state": "cached"}])
    assert (v2.version, v2.count) == ("2", 7)


def test_a_guests_own_5xx_answers_are_errors_of_their_version() -> None:
    registry = CollectorRegistry()
    labels = ["function_id", "project_id", "version"]
    count = Counter("wasm_invoke_count", "", labels, registry=registry)
    answered_5xx = Counter("edge_guest_5xx_responses", "", labels, registry=registry)
    errors = Counter("wasm_invoke_errors", "", [*labels, "code"], registry=registry)
    figures = VersionFigures(lambda: read_counts(registry))
    figures.report([{"id": "fn", "version": "1", "state": "cached"}])
    count.labels("fn", "p", "1").inc(10)
    answered_5xx.labels("fn", "p", "1").inc(6)
    errors.labels("fn", "p", "1", "timeout").inc(1)
    [v1] = figures.report([{"id": "fn", "version": "1", "state": "cached"}])
    assert (v1.count, v1.errors) == (10, {"http_5xx": 6, "timeout": 1})
