"""Shared test helpers: the compiled fixture modules, a process-wide engine, builds
shared by every worker of a run, and what keeps parallel workers (pytest-xdist)
apart: each has a PostgreSQL database and a Redis database of its own."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import sqlalchemy as sa

from edgefn import native
from edgefn.sandbox import Engine, create_engine

FIXTURES = Path(__file__).parent / "fixtures" / "wasm"

PG_ENV = "EDGEFN_TEST_POSTGRES_URL"
REDIS_ENV = "EDGEFN_TEST_REDIS_URL"
PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REDIS_DEFAULT = "redis://127.0.0.1:6379/0"


def native_part(name: str) -> tuple[Any, pytest.MarkDecorator]:
    """One of the package's optional C extensions (`setup.py`), or None where it was not
    built, and the mark that skips a test without it; in CI it must have been built,
    so there a missing compiler fails the test instead."""
    module = native.part(name)
    return module, pytest.mark.skipif(module is None and not os.environ.get("CI"),
                                      reason=f"{name} was not built here")


def wasm_path(name: str) -> Path:
    path = FIXTURES / f"{name}.wasm"
    assert path.is_file(), f"missing fixture {path}: run scripts/build_wasm.sh"
    return path


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    eng = create_engine("wasmtime")
    yield eng
    eng.close()


# ---- which engines ran ----------------------------------------------------------------

# The user property of a test report holding {engine variant: what happened} (set by
# tests/sandbox/conftest.py); reports reach this process from every worker.
ENGINES_PROPERTY = "edgefn_engines"
_ENGINES: dict[str, str] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    for name, value in report.user_properties:
        if name == ENGINES_PROPERTY:
            _ENGINES.update(value)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _ENGINES:
        return
    terminalreporter.section("engines")
    for variant, status in sorted(_ENGINES.items(), key=lambda kv: kv[0] != "wasmtime"):
        terminalreporter.write_line(f"{variant}: {status}")


# ---- parallel workers -------------------------------------------------------------


def worker_index() -> int | None:
    """This process's number among pytest-xdist workers (gw0 is 0); None when the
    tests run in one process."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(name[2:]) if name.startswith("gw") and name[2:].isdigit() else None


def worker_redis_url(url: str, index: int) -> str:
    """`url` on a database of worker `index`'s own: the next ones after the given one
    (Redis has 16), so that no two workers share keys, queues or channels."""
    parts = urlsplit(url)
    db = int(parts.path.strip("/") or 0)
    return urlunsplit(parts._replace(path=f"/{(db + 1 + index) % 16}"))


def worker_postgres_url(url: str, index: int) -> str:
    """A database `<name>_gw<index>` beside the given one, created when missing; its
    NOTIFY channels and schemas are this worker's alone. Left as given when the
    server does not answer (the tests that need it say so themselves)."""
    given = sa.engine.make_url(url)
    mine = given.set(database=f"{given.database}_gw{index}")
    admin = sa.create_engine(given, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :d"),
                                  {"d": mine.database}).scalar()
            if not exists:
                with contextlib.suppress(sa.exc.ProgrammingError):  # made meanwhile
                    conn.exec_driver_sql(f'CREATE DATABASE "{mine.database}"')
    except sa.exc.OperationalError:
        return url
    finally:
        admin.dispose()
    return mine.render_as_string(hide_password=False)


def pytest_configure(config: pytest.Config) -> None:
    # Before any test module is imported: they read these at import.
    index = worker_index()
    if index is None:
        return
    os.environ[REDIS_ENV] = worker_redis_url(os.environ.get(REDIS_ENV, REDIS_DEFAULT), index)
    os.environ[PG_ENV] = worker_postgres_url(os.environ.get(PG_ENV, PG_DEFAULT), index)


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory every worker of this run shares (the run's base temporary
    directory; a worker's own is beneath it)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if worker_index() is not None else base


class SharedBuilds:
    """Builds made at most once a run, whichever worker asks first; the others wait
    for it under a file lock and take its result."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def __call__(self, key: str, build: Callable[[Path], None]) -> Path:
        """The folder `build(folder)` filled for `key`, built now if no worker has."""
        folder = self.root / key
        marker = self.root / f"{key}.built"
        with open(self.root / f"{key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not marker.exists():
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir(parents=True)
                build(folder)
                marker.touch()
        return folder


@pytest.fixture(scope="session")
def shared_builds(run_dir: Path) -> SharedBuilds:
    return SharedBuilds(run_dir / "shared-builds")
