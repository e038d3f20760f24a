"""Shared test helpers: the compiled fixture modules and a process-wide engine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edgefn.sandbox import Engine, create_engine

FIXTURES = Path(__file__).parent / "fixtures" / "wasm"


def wasm_path(name: str) -> Path:
    path = FIXTURES / f"{name}.wasm"
    assert path.is_file(), f"missing fixture {path}: run scripts/build_wasm.sh"
    return path


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    eng = create_engine("wasmtime")
    yield eng
    eng.close()
