"""The Redis build queue against a real Redis: a job whose worker stops renewing
its lease goes to the next worker that asks, at most `max_attempts` times in all,
then fails saying why; a worker that renews keeps its job."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from edgefn.builder.job import BuildResult
from edgefn.builder.queue import Job, RedisQueue

REDIS_URL = os.environ.get("EDGEFN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
LEASE_S = 1.0


def need_redis() -> None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL).ping()
    except redis.RedisError:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis at {REDIS_URL} is unreachable and CI=true")
        pytest.skip(f"Redis at {REDIS_URL} is unreachable")


@contextmanager
def scratch_prefix() -> Iterator[str]:
    """A key prefix of this test's own (others may share the Redis), deleted after."""
    need_redis()
    import redis

    name = f"edgefn-test:{uuid.uuid4().hex}"
    try:
        yield name
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(f"{name}:*"))
        if keys:
            client.delete(*keys)


@pytest.fixture
def prefix() -> Iterator[str]:
    with scratch_prefix() as name:
        yield name


def queue(prefix: str, max_attempts: int = 3) -> RedisQueue:
    """One worker's view of the queue (its own consumer)."""
    return RedisQueue(REDIS_URL, prefix=prefix, lease_s=LEASE_S, max_attempts=max_attempts)


def take(q: RedisQueue) -> Job | None:
    return q.take(timeout_s=0.2)


def test_a_job_whose_worker_stopped_goes_to_another_then_fails(prefix: str) -> None:
    accepting, a, b, c = (queue(prefix, max_attempts=2) for _ in range(4))
    accepting.submit(Job(build_id="b1", language="wat", source=b"src"))
    job = take(a)
    assert job is not None and job.source == b"src"
    assert accepting.is_running("b1")
    # Within the lease nobody else gets it.
    assert take(b) is None
    time.sleep(LEASE_S + 0.3)
    assert not accepting.is_running("b1")  # the dead worker's mark expired too
    again = take(b)
    assert again is not None and again.build_id == "b1"
    assert "attempt 2 of 2" in accepting.log("b1")
    time.sleep(LEASE_S + 0.3)
    assert take(c) is None  # the third delivery is over the limit: the build fails
    done = accepting.collect(timeout_s=1)
    assert done is not None
    build_id, result = done
    assert build_id == "b1" and result.wasm is None
    assert result.error is not None and "2 attempts" in result.error
    time.sleep(LEASE_S + 0.3)
    assert take(c) is None  # acknowledged: gone for good


def test_a_worker_that_renews_keeps_its_job_and_its_result_counts(prefix: str) -> None:
    accepting, a, b = (queue(prefix) for _ in range(3))
    accepting.submit(Job(build_id="b2", language="wat", source=b"src"))
    assert take(a) is not None
    for _ in range(5):
        time.sleep(LEASE_S / 3)
        a.renew("b2")
    assert take(b) is None
    a.complete("b2", BuildResult(wasm=b"\0asm", log=["built\n"]))
    done = accepting.collect(timeout_s=1)
    assert done is not None and done[1].wasm == b"\0asm"
    time.sleep(LEASE_S + 0.3)
    assert take(b) is None


def test_a_job_forgotten_before_it_is_taken_is_dropped(prefix: str) -> None:
    accepting, a = queue(prefix), queue(prefix)
    accepting.submit(Job(build_id="b3", language="wat", source=b"src"))
    accepting.forget("b3")
    assert take(a) is None
    accepting.submit(Job(build_id="b4", language="wat", source=b"src"))
    job = take(a)
    assert job is not None and job.build_id == "b4"
