"""SDK test helpers: the examples of examples/ (sdk/examples.py), each compiled from
source once per run into a temporary folder; a missing toolchain skips, and fails
under CI=true."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest

from edgefn.cli.init import TOOLCHAINS
from tests.conftest import SharedBuilds

# The edge tests' fixtures: a runtime harness, Redis, per-test KV namespaces.
from tests.edge.conftest import make_edge, new_namespace, redis_url  # noqa: F401

_spec = importlib.util.spec_from_file_location(
    "sdk_examples", Path(__file__).resolve().parents[2] / "sdk" / "examples.py")
assert _spec is not None and _spec.loader is not None
examples = importlib.util.module_from_spec(_spec)
sys.modules["sdk_examples"] = examples
_spec.loader.exec_module(examples)

EXAMPLE_LIST = examples.discover()
EXAMPLES_BY_NAME = {e.name: e for e in EXAMPLE_LIST}


def find_tool(lang: str) -> str:
    """The program that builds `lang`; skips the test when it is missing, fails under CI."""
    found: str | None = examples.find_tool(lang)
    if found is None:
        chain = TOOLCHAINS[lang]
        message = f"no {chain.tool} for {lang}: {chain.install}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


class BuiltExamples:
    """Each example copied without its module and compiled there, at most once a run
    (the workers of a parallel run share the builds)."""

    def __init__(self, builds: SharedBuilds) -> None:
        self.builds = builds

    def __call__(self, name: str) -> Path:
        example = EXAMPLES_BY_NAME[name]
        tool = find_tool(example.lang)

        def build(folder: Path) -> None:
            shutil.copytree(example.folder, folder, ignore=shutil.ignore_patterns("*.wasm"),
                            dirs_exist_ok=True)
            examples.build(example, folder / example.artifact, tool)

        return self.builds(f"example-{name}", build)


@pytest.fixture(scope="session")
def built_example(shared_builds: SharedBuilds) -> BuiltExamples:
    return BuiltExamples(shared_builds)
