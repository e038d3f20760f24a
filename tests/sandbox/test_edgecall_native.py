"""`_edgecall.c` (an edge-v1 call on wasmtime made in C) against the program's hooks,
the steps of record: for each way a call can end, the same answer or the same error,
the instance kept or closed alike, and the guest's buffer handed back alike."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from edgefn.sandbox import Limits, WasiOptions, create_engine
from edgefn.sandbox.engine import Instance
from edgefn.sandbox.wat import wat_to_wasm
from tests.conftest import native_part, wasm_path
from tests.sandbox.test_engine_conformance import FakeHost, request

native, pytestmark = native_part("edgefn.sandbox._edgecall")

# A guest that keeps a ledger of its buffers (taken by `alloc`, given back by
# `dealloc`) and answers with it, and fails at the step a request asks for:
# `alloc` of a size that ends in 1 traps, of one that ends in 3 gives a null pointer;
# the method's first letter picks what `handle` does (T: trap, N: return -1,
# B: return more than the cap, D: ask `dealloc` to trap, L: ask `dealloc` to loop
# and return -1, so that the buffer's hand-back loops; else answer).
LEDGER = """
(module
  (memory (export "memory") 2)
  (global $out (mut i32) (i32.const 0))
  (global $taken (mut i32) (i32.const 0))
  (global $trap_dealloc (mut i32) (i32.const 0))
  (global $loop_dealloc (mut i32) (i32.const 0))
  (func (export "alloc") (param $n i32) (result i32)
    (if (i32.eq (i32.rem_u (local.get $n) (i32.const 10)) (i32.const 1)) (then unreachable))
    (if (i32.eq (i32.rem_u (local.get $n) (i32.const 10)) (i32.const 3))
      (then (return (i32.const 0))))
    (global.set $out (i32.add (global.get $out) (i32.const 1)))
    (global.set $taken (i32.add (global.get $taken) (i32.const 1)))
    (i32.const 1024))
  (func (export "dealloc") (param i32 i32)
    (if (global.get $trap_dealloc) (then unreachable))
    (if (global.get $loop_dealloc) (then (loop $forever (br $forever))))
    (global.set $out (i32.sub (global.get $out) (i32.const 1))))
  (func (export "handle") (param $m i32) (param $ml i32) (param $p i32) (param $pl i32)
        (param $h i32) (param $hl i32) (param $b i32) (param $bl i32)
        (param $o i32) (param $cap i32) (result i32)
    (local $c i32)
    (local.set $c (i32.load8_u (local.get $m)))
    (if (i32.eq (local.get $c) (i32.const 84)) (then unreachable))
    (if (i32.eq (local.get $c) (i32.const 78)) (then (return (i32.const -1))))
    (if (i32.eq (local.get $c) (i32.const 76))
      (then (global.set $loop_dealloc (i32.const 1)) (return (i32.const -1))))
    (if (i32.eq (local.get $c) (i32.const 66))
      (then (return (i32.add (local.get $cap) (i32.const 1)))))
    (if (i32.eq (local.get $c) (i32.const 68)) (then (global.set $trap_dealloc (i32.const 1))))
    ;; "200\\n\\n" then the buffers out and taken, a digit each
    (i32.store (local.get $o) (i32.const 0x0a303032))
    (i32.store8 (i32.add (local.get $o) (i32.const 4)) (i32.const 10))
    (i32.store8 (i32.add (local.get $o) (i32.const 5))
                (i32.add (i32.const 48) (global.get $out)))
    (i32.store8 (i32.add (local.get $o) (i32.const 6))
                (i32.add (i32.const 48) (global.get $taken)))
    (i32.const 7))
)
"""


@pytest.fixture(scope="module")
def engine() -> Iterator[object]:
    eng = create_engine("wasmtime")
    yield eng
    eng.close()


def _outcome(inst: Instance, method: str, body: bytes = b"") -> tuple[object, ...]:
    try:
        answer: object = inst.invoke(request(method, "/", body), FakeHost())
    except Exception as exc:
        answer = (type(exc).__name__, str(exc).split("\n")[0],
                  getattr(exc, "status", None), getattr(exc, "discard", None))
    return answer, inst.closed


def _pair(engine: object, wasm: bytes, limits: Limits | None = None) -> tuple[Instance, Instance]:
    module = engine.compile(wasm, limits or Limits(), WasiOptions())  # type: ignore[attr-defined]
    in_c, by_hooks = module.instantiate(), module.instantiate()
    assert in_c._plan is not None  # the call is made in C, the deadline armed there
    by_hooks._plan = None  # the program's hooks, one ctypes call a step
    return in_c, by_hooks


# Each a series of calls on one instance: what follows a failure shows whether the
# instance was kept and its buffer handed back (the ledger's first digit).
SERIES = {
    "answers": ["GET", "GET"],
    "handle traps": ["TRAP", "GET"],
    "handle returns -1": ["NEG", "GET"],
    "over the cap": ["BIG", "GET"],
    "dealloc traps": ["DEALLOC", "GET"],
    "the hand-back loops": ["LOOP", "GET"],  # bounded by the call's deadline
}


@pytest.mark.parametrize("name", SERIES)
def test_each_ending_is_the_hooks_ending(engine: object, name: str) -> None:
    in_c, by_hooks = _pair(engine, wat_to_wasm(LEDGER), Limits(max_execution_ms=200))
    for method in SERIES[name]:
        assert _outcome(in_c, method) == _outcome(by_hooks, method)


@pytest.mark.parametrize("body_len", [1, 3], ids=["alloc traps", "alloc gives null"])
def test_alloc_failures_are_the_hooks_failures(engine: object, body_len: int) -> None:
    in_c, by_hooks = _pair(engine, wat_to_wasm(LEDGER))
    # The size `alloc` is asked for: the request's parts and the response cap.
    base = len(b"GET") + len(b"/") + len(request("GET").headers) + Limits().max_response_bytes
    body = b"x" * ((body_len - base) % 10)
    a, b = _outcome(in_c, "GET", body), _outcome(by_hooks, "GET", body)
    assert a == b
    assert a[0][0] == "GuestTrap"  # type: ignore[index]


@pytest.mark.parametrize("fixture,method,body", [
    ("echo", "POST", b"hello"), ("echo", "POST", b"x" * 70_000), ("trap", "GET", b""),
    ("loop", "GET", b""), ("membomb", "GET", b""), ("membomb_trap", "GET", b""),
    ("recursion", "GET", b""), ("negative", "GET", b""), ("bigresponse", "GET", b""),
    ("echo", "POST", b"x" * (1 << 20)),  # more than `alloc` can give at 16 pages
])
def test_fixtures_end_alike(engine: object, fixture: str, method: str, body: bytes) -> None:
    in_c, by_hooks = _pair(engine, wasm_path(fixture).read_bytes(),
                           Limits(max_execution_ms=200))
    for _ in range(2):
        assert _outcome(in_c, method, body) == _outcome(by_hooks, method, body)
