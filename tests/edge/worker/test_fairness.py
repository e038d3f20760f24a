"""Functions that time out or burn CPU often run on low-priority threads of their own."""

from __future__ import annotations

import os
import threading
import time

import pytest

from edgefn.edge import metrics
from edgefn.edge.errors import Overloaded
from edgefn.edge.worker.fairness import PenaltyBox
from tests.edge.conftest import HarnessFactory, fn


def test_three_strikes_within_the_window_penalize() -> None:
    box = PenaltyBox(strikes=3, window_s=0.2, heavy_cpu_s=0.05)
    box.record("f", timed_out=False, cpu_s=0.01)  # light: no strike
    assert not box.penalized("f")
    for _ in range(3):
        box.record("f", timed_out=True, cpu_s=0.0)
    box.record("g", timed_out=False, cpu_s=0.06)  # one heavy call is not enough
    assert box.penalized("f") and not box.penalized("g")
    time.sleep(0.3)  # the strikes leave the window
    assert not box.penalized("f")
    box.record("f", timed_out=True, cpu_s=0.0)
    assert not box.penalized("f")  # one new strike is not three


def test_penalized_calls_take_a_place_in_a_bounded_queue() -> None:
    box = PenaltyBox(threads=1, queue=1, nice=19)
    try:
        assert not box.admit("f")  # not penalized: runs where it is, takes no place
        for _ in range(3):
            box.record("f", timed_out=True, cpu_s=0.0)
        assert box.admit("f")
        # The threads may also run at a lower priority (off by default).
        assert box.run(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())) == 19
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) < 19
        assert box.admit("f")  # the second place: the queue
        with pytest.raises(Overloaded):  # one running, one queued: full
            box.admit("f")
        box.release()
        box.release()
        assert box.admit("f") and box.run(lambda: 7) == 7
        box.release()
    finally:
        box.close()


def test_penalized_calls_are_paced_to_their_cpu_share() -> None:
    box = PenaltyBox(threads=1, queue=2, cpu_share=0.25)

    def burn() -> float:
        c0 = time.thread_time()
        while time.thread_time() - c0 < 0.04:
            pass
        return time.monotonic()

    try:
        first_end = box.run(burn)
        t = time.monotonic()
        box.run(lambda: None)
        # 0.04 s of CPU at a quarter of a core: the next call waits 0.12 s more.
        assert time.monotonic() - t >= 0.11 - (t - first_end)
        light = time.monotonic()
        box.run(lambda: None)  # a call that used no CPU earns no wait
        assert time.monotonic() - light < 0.05
    finally:
        box.close()


def test_a_looping_function_is_moved_aside_and_others_are_not(
    make_edge: HarnessFactory,
) -> None:
    edge = make_edge(penalty=PenaltyBox())
    edge.deploy(fn("spin", "loop", max_execution_ms=30, project_id="p-spin"),
                fn("echo", "echo", project_id="p-echo"))
    penalized = metrics.PENALIZED.labels("spin", "p-spin")
    before = penalized._value.get()
    for _ in range(3):
        assert edge.request("GET", "/spin/x").status == 504
    assert penalized._value.get() == before
    assert edge.runtime.penalty is not None
    assert edge.runtime.penalty.penalized("spin")
    r = edge.request("GET", "/spin/x")
    assert r.status == 504  # still served (and timed out) on a penalized thread
    assert penalized._value.get() == before + 1
    assert edge.request("GET", "/echo/x", b"hi").body == b"hi"
    assert not edge.runtime.penalty.penalized("echo")
    assert metrics.PENALIZED.labels("echo", "p-echo")._value.get() == 0
