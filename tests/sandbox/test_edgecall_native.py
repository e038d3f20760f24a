"""`_edgecall.c` (an edge-v1 call on wasmtime made in C) against the program's hooks,
the steps of record: for each way a call can end, the same answer or the same error,
the instance kept or closed alike, and the guest's buffer handed back alike."""

from __future__ import annotations

from collections.abc import Callable, Iterator

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
# and return -1, so that the buffer's hand-back loops, E: answer and ask `dealloc` to
# loop; else answer).
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
    (if (i32.eq (local.get $c) (i32.const 69)) (then (global.set $loop_dealloc (i32.const 1))))
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


def _body_for_alloc(last_digit: int) -> bytes:
    """A body for which `alloc` is asked for a size ending in `last_digit`: the
    request's parts and the response cap, all together."""
    base = len(b"GET") + len(b"/") + len(request("GET").headers) + Limits().max_response_bytes
    return b"x" * ((last_digit - base) % 10)


@pytest.fixture(scope="module")
def wasmedge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[bool], object]]:
    """WasmEdge, interpreted or AOT, where its library (and compiler) is installed, as
    the conformance suite finds it; made once a module."""
    from edgefn.sandbox.compilecache import CompileCache
    from edgefn.sandbox.errors import EngineUnavailable
    from edgefn.sandbox.options import WasmEdgeOptions

    made: dict[bool, object] = {}

    def get(aot: bool) -> object:
        if aot not in made:
            root = tmp_path_factory.mktemp("compiled")
            try:
                made[aot] = create_engine(
                    "wasmedge", options=WasmEdgeOptions(aot=aot),
                    compile_cache=CompileCache.open(root / "code", root / "key"))
            except EngineUnavailable as exc:
                pytest.skip(f"WasmEdge unavailable: {exc}")
        eng = made[aot]
        if aot and not eng.describe()["compiler"].startswith("LLVM AOT"):  # type: ignore[attr-defined]
            pytest.skip("WasmEdge without its AOT compiler")
        return eng

    yield get
    for eng in made.values():
        eng.close()  # type: ignore[attr-defined]


def _wasmedge_pair(engine: object, wasm: bytes,
                   limits: Limits | None = None) -> tuple[Instance, Instance]:
    module = engine.compile(wasm, limits or Limits(), WasiOptions())  # type: ignore[attr-defined]
    in_c, by_hooks = module.instantiate(), module.instantiate()
    assert in_c._plan is not None  # the five steps in one C call
    by_hooks._plan = None  # the program's hooks, a call under the watchdog each
    return in_c, by_hooks


@pytest.fixture(params=["one C call", "started in C", "WasmEdge interpreted", "WasmEdge AOT"])
def ledger_pair(request: pytest.FixtureRequest, engine: object,
                suspending: object) -> Callable[..., tuple[Instance, Instance]]:
    """Twin instances of the ledger guest, one through the C half, one through the
    hooks: the echo's call (`exchange`), a suspended guest's (`start`), or the call
    on WasmEdge (`wasmedge_exchange`, interpreted and AOT)."""
    if request.param == "one C call":
        return lambda limits=None: _pair(engine, wat_to_wasm(LEDGER), limits)
    if request.param.startswith("WasmEdge"):
        eng = request.getfixturevalue("wasmedge")(request.param.endswith("AOT"))
        return lambda limits=None: _wasmedge_pair(eng, wat_to_wasm(LEDGER), limits)
    return lambda limits=None: _started_pair(suspending, wat_to_wasm(SUSPENDING_LEDGER), limits)


# Each a series of calls on one instance: what follows a failure shows whether the
# instance was kept and its buffer handed back (the ledger's first digit).
SERIES = {
    "answers": ["GET", "GET"],
    "handle traps": ["TRAP", "GET"],
    "handle returns -1": ["NEG", "GET"],
    "over the cap": ["BIG", "GET"],
    "dealloc traps": ["DEALLOC", "GET"],
    "the hand-back loops": ["LOOP", "GET"],  # bounded by the call's deadline
    "dealloc loops after an answer": ["ENDLESS", "GET"],
}


@pytest.mark.parametrize("name", SERIES)
def test_each_ending_is_the_hooks_ending(ledger_pair: Callable[..., tuple[Instance, Instance]],
                                         name: str) -> None:
    in_c, by_hooks = ledger_pair(Limits(max_execution_ms=200))
    for method in SERIES[name]:
        assert _outcome(in_c, method) == _outcome(by_hooks, method)


@pytest.mark.parametrize("body_len", [1, 3], ids=["alloc traps", "alloc gives null"])
def test_alloc_failures_are_the_hooks_failures(
    ledger_pair: Callable[..., tuple[Instance, Instance]], body_len: int,
) -> None:
    in_c, by_hooks = ledger_pair()
    body = _body_for_alloc(body_len)
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


# -- the setup half: a store and an instance made in C -------------------------------
# `_edgecall.open_store` and `instantiate` against `WasmtimeModule.new_store` and
# `_BaseInstance._instantiate`: the same instance, or the same error, for modules
# that start well and modules that fail while starting, on both kinds of call.

_START_TRAPS = """(module (memory (export "memory") 2) (func $s unreachable) (start $s)
  (func (export "alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "handle") (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
    (i32.const 0)))"""
_START_GROWS = _START_TRAPS.replace(
    "(func $s unreachable)", "(func $s (drop (memory.grow (i32.const 100))) (if (i32.eq "
    "(memory.size) (i32.const 2)) (then unreachable)))")
_INITIALIZE_TRAPS = _START_TRAPS.replace(
    "(start $s)", '(export "_initialize" (func $s))')
_INITIALIZE_LOOPS = _INITIALIZE_TRAPS.replace("(func $s unreachable)",
                                              "(func $s (loop $l (br $l)))")
_INITIALIZE_EXITS = _INITIALIZE_TRAPS.replace(
    "(module", '(module (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))'
).replace("(func $s unreachable)", "(func $s (call $exit (i32.const 3)))")
_NO_DEALLOC = _START_TRAPS.replace("(func $s unreachable) (start $s)", "")


def _wasmtime(suspend_waiting: bool) -> Iterator[object]:
    from edgefn.sandbox.options import WasmtimeOptions

    eng = create_engine("wasmtime", options=WasmtimeOptions(suspend_waiting=suspend_waiting))
    yield eng
    eng.close()


@pytest.fixture(scope="module", params=["suspending", "blocking"])
def any_wasmtime(request: pytest.FixtureRequest) -> Iterator[object]:
    yield from _wasmtime(request.param == "suspending")


@pytest.fixture(scope="module")
def suspending() -> Iterator[object]:
    yield from _wasmtime(True)


def _made_by(engine: object, wasm: bytes, limits: Limits, *, in_c: bool,
             method: str = "GET") -> tuple[object, ...]:
    module = engine.compile(wasm, limits, WasiOptions())  # type: ignore[attr-defined]
    assert module.store_spec is not None  # a default WASI: made in C unless told not to
    if not in_c:
        module.store_spec = None
    try:
        inst = module.instantiate()
    except Exception as exc:
        return type(exc).__name__, str(exc).split("\n")[0], getattr(exc, "status", None)
    try:
        assert inst._externs is not None if in_c else inst._externs is None
        answer = _outcome(inst, method)
        return answer, bytes(inst.output.data), inst.memory_bytes
    finally:
        inst.close()
        module.close()


_CASES = [
    ("echo", wasm_path("echo").read_bytes(), Limits(), "GET"),
    ("output captured", wasm_path("env_stdout").read_bytes(), Limits(), "GET"),
    ("_initialize and host calls", wasm_path("hostcalls").read_bytes(), Limits(), "GET"),
    ("big initial memory", wasm_path("big_initial_memory").read_bytes(),
     Limits(memory_pages=64), "GET"),
    ("no dealloc", wat_to_wasm(_NO_DEALLOC), Limits(), "GET"),
    ("start traps", wat_to_wasm(_START_TRAPS), Limits(), "GET"),
    ("start grows past the limit", wat_to_wasm(_START_GROWS), Limits(memory_pages=16), "GET"),
    ("_initialize traps", wat_to_wasm(_INITIALIZE_TRAPS), Limits(), "GET"),
    ("_initialize loops", wat_to_wasm(_INITIALIZE_LOOPS), Limits(max_execution_ms=100), "GET"),
    ("_initialize exits", wat_to_wasm(_INITIALIZE_EXITS), Limits(), "GET"),
    ("start loops", wasm_path("start_loop").read_bytes(), Limits(max_execution_ms=100), "GET"),
]


@pytest.mark.parametrize("name,wasm,limits,method", _CASES, ids=[c[0] for c in _CASES])
def test_instances_made_in_c_are_made_alike(any_wasmtime: object, name: str, wasm: bytes,
                                             limits: Limits, method: str) -> None:
    in_c = _made_by(any_wasmtime, wasm, limits, in_c=True, method=method)
    assert in_c == _made_by(any_wasmtime, wasm, limits, in_c=False, method=method)
    if name.startswith(("start", "_initialize traps", "_initialize loops", "_initialize exits")):
        assert in_c[0] in ("GuestTrap", "GuestTimeout"), in_c
    else:
        assert in_c[0][0].__class__ is bytes, in_c  # type: ignore[index]


def test_a_store_made_in_c_is_registered_and_freed(any_wasmtime: object) -> None:
    from edgefn.sandbox import wasmtime_engine

    module = any_wasmtime.compile(wasm_path("echo").read_bytes(), Limits(),  # type: ignore[attr-defined]
                                  WasiOptions())
    inst = module.instantiate()
    key, store = inst._key, inst._store
    assert wasmtime_engine._INSTANCES[key] is inst
    assert inst._plan is not None or module.suspends  # its calls in C where they can be
    inst.close()
    assert key not in wasmtime_engine._INSTANCES and store._ptr == 0
    module.close()


def test_only_the_default_wasi_is_made_in_c(engine: object) -> None:
    """An environment or a preopened directory is WASI that the C half does not set."""
    wasm = wasm_path("echo").read_bytes()
    plain = engine.compile(wasm, Limits(), WasiOptions())  # type: ignore[attr-defined]
    with_env = engine.compile(wasm, Limits(), WasiOptions(env=(("A", "1"),)))  # type: ignore[attr-defined]
    assert plain.store_spec is not None and with_env.store_spec is None
    plain.close()
    with_env.close()


_START_WAITS = """(module
  (import "edge" "kv_get" (func $kv_get (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2) (data (i32.const 16) "key")
  (global $got (mut i32) (i32.const 99))
  (func $s (global.set $got (call $kv_get (i32.const 16) (i32.const 3) (i32.const 64)
                                        (i32.const 8))))
  (start $s)
  (func (export "alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "handle") (param i32 i32 i32 i32 i32 i32 i32 i32) (param $o i32) (param i32)
        (result i32)
    (i32.store8 (local.get $o) (i32.add (i32.const 48) (global.get $got))) (i32.const 1)))"""


_INITIALIZE_WAITS = _START_WAITS.replace("(start $s)", '(export "_initialize" (func $s))')


@pytest.mark.parametrize("wat", [_START_WAITS, _INITIALIZE_WAITS],
                         ids=["start waits", "_initialize waits"])
def test_an_instantiation_suspended_in_a_waiting_call_is_driven_in_python(
    monkeypatch: pytest.MonkeyPatch, wat: str,
) -> None:
    """Where `instantiate` returns a future (a waiting call began in the start function
    or in `_initialize`), the instance is finished by `_drive`; after a start function
    that waited, its exports are looked up in Python. No waiting call begins without an
    invocation today; one that did is stood in for here."""
    from edgefn.sandbox import wasmtime_engine
    from edgefn.sandbox.options import WasmtimeOptions

    class Answered:
        def __init__(self, *_args: object) -> None:
            self.done = False

        def run(self) -> None:
            self.done = True

        def finish(self, _mem: object) -> int:
            return 7

    monkeypatch.setattr(wasmtime_engine, "WaitingCall", Answered)
    eng = create_engine("wasmtime", options=WasmtimeOptions(suspend_waiting=True))
    try:
        outcomes = []
        for in_c in (True, False):
            module = eng.compile(wat_to_wasm(wat), Limits(), WasiOptions())
            assert module.suspends and module.store_spec is not None
            if not in_c:
                module.store_spec = None
            inst = module.instantiate()
            # Looked up in Python after a start function's drive; in C before `_initialize`.
            assert (inst._externs is None) == (wat is _START_WAITS or not in_c)
            outcomes.append(inst.invoke(request("GET", "/"), FakeHost()))
            inst.close()
            module.close()
        assert outcomes == [b"7", b"7"]
    finally:
        eng.close()


# -- a suspending instance's call started in C ----------------------------------------
# `_edgecall.start` (alloc, the inputs, handle polled once) against the hooks, on guests
# that import a waiting host call and so run as suspended guests.

_KV_IMPORT = '(import "edge" "kv_get" (func $kv_get (param i32 i32 i32 i32) (result i32)))'
SUSPENDING_LEDGER = LEDGER.replace("(module", "(module\n  " + _KV_IMPORT, 1)
# `handle` waits in kv_get for the key "k", its answer going to the last 4 bytes of
# memory (a longer one traps once written), and answers with the digit 2 + what it
# returned; `alloc` waits in it too when asked for a size that ends in 7.
_WAITS = """(module
  """ + _KV_IMPORT + """
  (memory (export "memory") 2) (data (i32.const 16) "k")
  (func (export "alloc") (param $n i32) (result i32)
    (if (i32.eq (i32.rem_u (local.get $n) (i32.const 10)) (i32.const 7))
      (then (drop (call $kv_get (i32.const 16) (i32.const 1) (i32.const 32) (i32.const 8)))))
    (i32.const 1024))
  (func (export "handle") (param i32 i32 i32 i32 i32 i32 i32 i32) (param $o i32) (param i32)
        (result i32)
    (i32.store8 (local.get $o) (i32.add (i32.const 50)
      (call $kv_get (i32.const 16) (i32.const 1) (i32.const 0x1fffc) (i32.const 8))))
    (i32.const 1)))"""


def _started_pair(engine: object, wasm: bytes,
                  limits: Limits | None = None) -> tuple[Instance, Instance]:
    module = engine.compile(wasm, limits or Limits(), WasiOptions())  # type: ignore[attr-defined]
    assert module.suspends
    in_c, by_hooks = module.instantiate(), module.instantiate()
    assert in_c._start_plan is not None  # started and answered in C
    by_hooks._start_plan = None  # the program's hooks, each call driven from Python
    return in_c, by_hooks


def _waited(inst: Instance, body: bytes, value: bytes | None) -> tuple[object, ...]:
    host = FakeHost(kv_enabled=value is not None)
    if value is not None:
        host.kv[b"k"] = value
    try:
        answer: object = inst.invoke(request("GET", "/", body), host)
    except Exception as exc:
        answer = (type(exc).__name__, str(exc).split("\n")[0])
    return answer, inst.closed


@pytest.mark.parametrize("alloc_waits", [False, True], ids=["handle waits", "alloc waits too"])
@pytest.mark.parametrize("value", [b"v", None, b"x" * 8],
                         ids=["found", "kv denied", "answer past memory"])
def test_a_started_call_that_waits_ends_as_by_the_hooks(
    suspending: object, alloc_waits: bool, value: bytes | None,
) -> None:
    in_c, by_hooks = _started_pair(suspending, wat_to_wasm(_WAITS))
    body = _body_for_alloc(7 if alloc_waits else 5)
    outcomes = []
    for _ in range(2):  # what follows shows the instance kept or closed alike
        outcomes.append(_waited(in_c, body, value))
        assert outcomes[-1] == _waited(by_hooks, body, value)
    expected = {b"v": (b"3", False), None: (b"0", False)}  # kv_get returned 1, or -2
    assert outcomes[0] == expected.get(value, (
        ("GuestTrap", "guest failed: edge.kv_get: guest output buffer out of bounds"), True))


# `handle` answers at once ("1"); `dealloc` waits in kv_get for the key "k", its
# answer going to the last 4 bytes of memory (a longer one traps once written).
_DEALLOC_WAITS = """(module
  """ + _KV_IMPORT + """
  (memory (export "memory") 2) (data (i32.const 16) "k")
  (func (export "alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "dealloc") (param i32 i32)
    (drop (call $kv_get (i32.const 16) (i32.const 1) (i32.const 0x1fffc) (i32.const 8))))
  (func (export "handle") (param i32 i32 i32 i32 i32 i32 i32 i32) (param $o i32) (param i32)
        (result i32)
    (i32.store8 (local.get $o) (i32.const 49))
    (i32.const 1)))"""


@pytest.mark.parametrize("value", [b"v", None, b"x" * 8],
                         ids=["found", "kv denied", "answer past memory"])
def test_a_dealloc_that_waits_ends_as_by_the_hooks(suspending: object,
                                                   value: bytes | None) -> None:
    """`_edgecall.answer` reads the response, then `dealloc` waits: Python drives it, and
    a late trap in it fails the call although its response was read."""
    in_c, by_hooks = _started_pair(suspending, wat_to_wasm(_DEALLOC_WAITS))
    outcomes = []
    for _ in range(2):
        outcomes.append(_waited(in_c, b"", value))
        assert outcomes[-1] == _waited(by_hooks, b"", value)
    assert outcomes[0] == ((b"1", False) if value != b"x" * 8 else (
        ("GuestTrap", "guest failed: edge.kv_get: guest output buffer out of bounds"), True))


@pytest.mark.parametrize("fixture,method,body", [
    ("hostcalls", "GET", b""), ("hostcalls", "POST", b"x" * 70_000),
])
def test_hostcalls_end_alike_when_started_in_c(suspending: object, fixture: str, method: str,
                                               body: bytes) -> None:
    in_c, by_hooks = _started_pair(suspending, wasm_path(fixture).read_bytes())
    for path in ("/log?level=1", "/kv/get?key=a", "/env?name=X", "/nothing"):
        a = in_c.invoke(request(method, path, body), FakeHost(kv_enabled=True))
        assert a == by_hooks.invoke(request(method, path, body), FakeHost(kv_enabled=True))


def test_misuse_is_refused_before_any_call(wasmedge: Callable[[bool], object]) -> None:
    """A plan of the wrong size or with a null address, or a null function address, is
    an error raised in Python, never a call through it."""
    from edgefn.sandbox import wasmedge_engine

    wasmedge(False)  # WasmEdge's library loaded here, and its functions configured:
    assert wasmedge_engine._native_exchange(wasmedge_engine.ffi.load()) is native
    with pytest.raises(TypeError, match="wasmedge_exchange"):
        native.wasmedge_exchange(b"short", b"GET", b"/", b"", b"", 10)
    with pytest.raises(ValueError, match="incomplete plan"):
        native.wasmedge_exchange(bytes(7 * 8), b"GET", b"/", b"", b"", 10)
    with pytest.raises(TypeError, match="exchange"):
        native.exchange(b"", b"GET", b"/", b"", b"", 10)
    with pytest.raises(ValueError, match="address 1 is null"):
        native.configure_wasmedge(1, 0, 1)
    with pytest.raises(TypeError, match="takes 3 addresses"):
        native.configure_wasmedge(1, 1)
