"""Sandbox test helpers: every engine by name, and a line saying which ones really ran."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from edgefn.sandbox import Engine, create_engine
from edgefn.sandbox.errors import EngineUnavailable
from edgefn.sandbox.factory import ENGINES

# Engine name -> what happened when the suite asked for it (shown after the run).
ENGINE_STATUS: dict[str, str] = {}


@pytest.fixture(scope="module", params=ENGINES)
def any_engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """Each engine in turn; one whose library is missing here is skipped, saying why."""
    name: str = request.param
    try:
        eng = create_engine(name)
    except EngineUnavailable as exc:
        if name == "wasmtime":
            raise  # the default engine must always run
        ENGINE_STATUS[name] = f"NOT TESTED, unavailable here: {exc}"
        pytest.skip(f"{name} engine unavailable: {exc}")
    facts = eng.describe()
    ENGINE_STATUS[name] = "tested: " + ", ".join(
        f"{k}={facts[k]}" for k in ("version", "compiler", "library") if k in facts
    )
    yield eng
    eng.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not ENGINE_STATUS:
        return
    terminalreporter.section("engines")
    for name in ENGINES:
        if name in ENGINE_STATUS:
            terminalreporter.write_line(f"{name}: {ENGINE_STATUS[name]}")
