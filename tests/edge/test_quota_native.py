"""`_quota.c` against `QuotaTable._admit_py` and `_release_py`, the rules of record:
two tables, one admitting in C and its twin in Python, given the same operations
(executions entering and leaving, other workers' columns and other nodes' sums
written into the table, the clock moving across minutes and days) answer alike and
hold the same bytes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgefn.edge import quotas
from edgefn.edge.quotas import QuotaLimits, QuotaTable
from tests.conftest import native_part

native, pytestmark = native_part("edgefn.edge._quota")

PROJECTS = ["acme", "globex"]
_LIMITS = st.builds(QuotaLimits, st.integers(1, 4), st.integers(1, 6),
                    st.one_of(st.integers(1, 3_000), st.just(2**62)))
_OPS = st.lists(st.one_of(
    st.tuples(st.just("enter"), st.sampled_from(PROJECTS), _LIMITS),
    st.tuples(st.just("leave"), st.sampled_from(PROJECTS),
              st.floats(0, 0.002, allow_nan=False)),
    st.tuples(st.just("clock"), st.floats(0, 200_000, allow_nan=False)),
    st.tuples(st.just("worker"), st.sampled_from(PROJECTS), st.integers(1, 3),
              st.lists(st.integers(0, 5), min_size=5, max_size=5)),
    st.tuples(st.just("remote"), st.sampled_from(PROJECTS),
              st.lists(st.integers(0, 5), min_size=5, max_size=5), st.integers(0, 9_000)),
), max_size=40)

START = 1_764_000_000.0  # a wall-clock second


def _table(path: Path, in_c: bool) -> QuotaTable:
    table = QuotaTable(path, node_id="n")
    if not in_c:
        table._admit_c = table._release_c = None
    table.track(PROJECTS)
    quotas._COUNTS.pack_into(table._map, 8, 4, len(PROJECTS))  # four workers' columns
    return table


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_OPS)
def test_twin_tables_answer_alike(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  ops: list[tuple]) -> None:
    assert native is not None
    run = tmp_path / str(len(list(tmp_path.iterdir())))
    in_c, in_py = _table(run / "c" / "q.bin", True), _table(run / "py" / "q.bin", False)
    clock = [START]
    monkeypatch.setattr(quotas.time, "time", lambda: clock[0])
    try:
        _apply(ops, in_c, in_py, clock)
    finally:
        for table in (in_c, in_py):
            table._map.close()
            os.close(table._fd)


def _apply(ops: list[tuple], in_c: QuotaTable, in_py: QuotaTable, clock: list[float]) -> None:
    for op in ops:
        if op[0] == "enter":
            assert in_c.enter(op[1], op[2]) == in_py.enter(op[1], op[2])
        elif op[0] == "leave":
            in_c.leave(op[1], op[2])
            in_py.leave(op[1], op[2])
        elif op[0] == "clock":
            clock[0] = START + op[1]
        else:
            for table in (in_c, in_py):
                off = table._slots[op[1]]
                now = clock[0]
                if op[0] == "worker":  # another worker's column: running, minute, n, day, µs
                    c, m, n, d, u = op[3]
                    quotas._COLUMN.pack_into(
                        table._map, off + quotas._COLUMNS + op[2] * quotas._STRIDE,
                        c, int(now // 60) - m % 2, n, int(now // 86400) - d % 2, u * 1000)
                else:  # the other nodes' sums, `op[3]` ms old
                    m, n, d, u, c = op[2]
                    quotas._REMOTE.pack_into(table._map, off + quotas._KEY,
                                             int(now // 60) - m % 2, n,
                                             int(now // 86400) - d % 2, u * 1000, c,
                                             int(now * 1000) - op[3])
        assert in_c._map[:quotas._HEADER + 2 * quotas._SLOT] == \
            in_py._map[:quotas._HEADER + 2 * quotas._SLOT]


def test_declined_where_a_limit_does_not_fit_in_64_bits(tmp_path: Path) -> None:
    table = _table(tmp_path / "q.bin", True)
    assert table._admit_c is not None
    off = table._slots["acme"]
    assert table._admit_c(table._map, off, off + table._own, START, 1, 1, 5000.0,
                          2**64, 1, 1) == -1
    assert table.enter("acme", QuotaLimits(2**64, 10, 10)) is None  # the Python decides
    assert table.usage("acme")["concurrency"] == 1
