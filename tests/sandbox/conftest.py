"""Sandbox test helpers: every engine (WasmEdge twice: interpreted and compiled ahead
of time), and a line saying which ones really ran (printed by tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from edgefn.sandbox import Engine, WasmEdgeOptions, WasmtimeOptions, create_engine
from edgefn.sandbox.compilecache import CompileCache
from edgefn.sandbox.errors import EngineUnavailable
from edgefn.sandbox.options import EngineOptions
from tests.conftest import ENGINES_PROPERTY

# Test id -> the engine and its options. wasmtime twice: by default a guest that imports
# a waiting host call is suspended in it (its call is an async one); then every call
# blocks its thread.
ENGINE_VARIANTS: dict[str, tuple[str, EngineOptions | None]] = {
    "wasmtime": ("wasmtime", None),
    "wasmtime-blocking": ("wasmtime", WasmtimeOptions(suspend_waiting=False)),
    "wasmedge-interpreter": ("wasmedge", WasmEdgeOptions(aot=False)),
    "wasmedge-aot": ("wasmedge", WasmEdgeOptions(aot=True)),
}

# Test id -> what happened when the suite asked for it (shown after the run).
ENGINE_STATUS: dict[str, str] = {}


@pytest.fixture(scope="session")
def sandbox_compile_cache(tmp_path_factory: pytest.TempPathFactory) -> CompileCache:
    """One sealed cache for the session: each module is compiled ahead of time once."""
    root = tmp_path_factory.mktemp("compiled")
    return CompileCache.open(root / "code", root / "compile.key")


@pytest.fixture(scope="module", params=list(ENGINE_VARIANTS))
def any_engine(
    request: pytest.FixtureRequest, sandbox_compile_cache: CompileCache
) -> Iterator[Engine]:
    """Each engine in turn; one whose library (or compiler) is missing here is skipped,
    saying why."""
    variant: str = request.param
    name, options = ENGINE_VARIANTS[variant]
    try:
        # Only AOT code is worth keeping between the test modules of a session.
        cache = sandbox_compile_cache if variant == "wasmedge-aot" else None
        eng = create_engine(name, options=options, compile_cache=cache)
    except EngineUnavailable as exc:
        if name == "wasmtime":
            raise  # the default engine must always run
        ENGINE_STATUS[variant] = f"NOT TESTED, unavailable here: {exc}"
        pytest.skip(f"{variant} engine unavailable: {exc}")
    facts = eng.describe()
    if variant == "wasmedge-aot" and not facts["compiler"].startswith("LLVM AOT"):
        eng.close()
        ENGINE_STATUS[variant] = f"NOT TESTED: {facts['compiler']}"
        pytest.skip(f"{variant}: {facts['compiler']}")
    ENGINE_STATUS[variant] = "tested: " + ", ".join(
        f"{k}={facts[k]}" for k in ("version", "compiler", "library") if k in facts
    )
    yield eng
    eng.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Each report carries the engines' status, so that the run's summary (tests/conftest.py)
    shows it however many worker processes ran the tests."""
    outcome = yield
    if ENGINE_STATUS:
        report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
        report.user_properties.append(
            (ENGINES_PROPERTY, {v: ENGINE_STATUS[v] for v in ENGINE_VARIANTS if v in ENGINE_STATUS})
        )
