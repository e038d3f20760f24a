"""The control plane's store of functions' log lines: bounded rings, followers that
fall behind told so, redaction, and lines crossing replicas over a real Redis."""

from __future__ import annotations

import asyncio
import json
import os
import uuid

import pytest
import redis

from edgefn.controlplane.logs.hub import Follower, LogHub, LogLine, RedisLogFanout

REDIS_URL = os.environ.get("EDGEFN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def lines(function_id: str, n: int, start: int = 0) -> list[LogLine]:
    return [LogLine(function_id, "p", json.dumps({"function_id": function_id, "n": i}))
            for i in range(start, start + n)]


def test_rings_are_bounded_per_function_and_in_number() -> None:
    hub = LogHub(ring_lines=5, max_functions=2)
    hub.publish(lines("a", 8))
    assert [json.loads(x)["n"] for x in hub.recent("a", 100)] == [3, 4, 5, 6, 7]
    assert len(hub.recent("a", 2)) == 2 and hub.recent("a", 0) == []
    hub.publish(lines("b", 1))
    hub.publish(lines("a", 1, start=8))  # a is now the most recent
    hub.publish(lines("c", 1))  # the least recently written (b) goes
    assert hub.recent("b", 10) == [] and hub.recent("a", 1) and hub.recent("c", 1)


def test_lines_are_redacted_and_counted_when_nodes_dropped_some() -> None:
    hub = LogHub()
    hub.publish([LogLine("a", "p", '{"message": "Authorization: Bearer abc.def"}')],
                dropped=7)
    assert hub.recent("a", 1) == ['{"message": "Authorization: Bearer <redacted>"}']
    assert hub.dropped_by_nodes == 7


def test_a_slow_follower_misses_lines_and_others_are_not_held() -> None:
    async def run() -> None:
        hub = LogHub()
        with hub.follow("a") as slow, hub.follow("b") as other:
            slow.queue = asyncio.Queue(maxsize=3)
            hub.publish(lines("a", 10) + lines("b", 2))
            assert slow.queue.qsize() == 3 and slow.missed == 7
            assert other.queue.qsize() == 2
        assert isinstance(slow, Follower)
        hub.publish(lines("a", 1))  # nobody follows any more: nothing to hand out
        assert slow.queue.qsize() == 3

    asyncio.run(run())


def test_lines_from_one_replica_reach_the_other_over_redis() -> None:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"no Redis at {REDIS_URL}: {exc}")
        pytest.skip(f"no Redis at {REDIS_URL}: {exc}")
    finally:
        client.close()
    fid = f"fn-{uuid.uuid4().hex}"

    async def run() -> None:
        a = LogHub(fanout=RedisLogFanout(REDIS_URL, f"a-{fid}"))
        b = LogHub(fanout=RedisLogFanout(REDIS_URL, f"b-{fid}"))
        listening = asyncio.create_task(b.listen())
        own = asyncio.create_task(a.listen())
        try:
            sent = 0
            with b.follow(fid) as follower:
                for _ in range(100):  # until B's subscription is up
                    a.publish(lines(fid, 1, start=sent))
                    sent += 1
                    try:
                        got = await asyncio.wait_for(follower.queue.get(), 0.1)
                        break
                    except TimeoutError:
                        continue
                else:
                    raise AssertionError("no line crossed to replica B")
            assert json.loads(got)["function_id"] == fid
            assert b.recent(fid, 1)
            # A does not take its own lines back: each was kept once, when published.
            await asyncio.sleep(0.3)
            assert [json.loads(x)["n"] for x in a.recent(fid, 1000)] == list(range(sent))
        finally:
            for task in (listening, own):
                task.cancel()
            await asyncio.gather(listening, own, return_exceptions=True)

    asyncio.run(run())
