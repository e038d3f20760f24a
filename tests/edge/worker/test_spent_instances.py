"""An instance is kept only while it can still serve: what a failed request leaves
behind (a leaked buffer, a spent heap) must not fail the requests after it."""

from __future__ import annotations

from tests.edge.conftest import EdgeHarness, fn


def test_oversized_responses_do_not_wear_out_the_instance(edge: EdgeHarness) -> None:
    edge.deploy(fn("echo", "echo", min_hot_instances=1, max_hot_instances=1))
    pool = edge.pool("echo")
    for _ in range(12):  # ~150 KiB borrowed from a 1 MiB heap each time
        assert edge.request("POST", "/echo/", body=b"x" * 90_000).status == 502
    resp = edge.request("POST", "/echo/", body=b"small")
    assert resp.status == 200 and resp.body == b"small"
    assert pool.created == 1 and pool.destroyed == 0


def test_an_instance_whose_alloc_failed_is_replaced(edge: EdgeHarness) -> None:
    edge.deploy(fn("echo", "echo", min_hot_instances=1, max_hot_instances=1))
    pool = edge.pool("echo")
    assert edge.request("POST", "/echo/", body=b"x" * (2 << 20)).status == 500
    assert pool.destroyed == 1 and pool.idle == 0
    for _ in range(3):
        resp = edge.request("POST", "/echo/", body=b"small")
        assert resp.status == 200 and resp.body == b"small"
    assert pool.created == 2
