"""SDK test helpers: the toolchains (missing ones skip, or fail under CI=true), and
every example of examples/ compiled from source once per session into a temporary
functions directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgefn.cli.init import TOOLCHAINS, Toolchain

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SDK = ROOT / "sdk"
LOCAL_ASC = SDK / "assemblyscript" / "node_modules" / ".bin" / "asc"


@dataclass(frozen=True)
class Example:
    name: str
    lang: str
    source: str
    wagi: bool = False

    @property
    def sdk(self) -> Path:
        return {"c": SDK / "c", "rust": SDK / "rust" / "src" / "lib.rs",
                "as": SDK / "assemblyscript" / "assembly"}[self.lang]


EXAMPLE_LIST = (
    Example("hello-c", "c", "hello.c"),
    Example("hello-wagi", "c", "hello.c", wagi=True),
    Example("c-echo", "c", "echo.c"),
    Example("c-json", "c", "json.c"),
    Example("c-kv-counter", "c", "counter.c"),
    Example("c-fetch", "c", "fetch.c"),
    Example("rust-hello", "rust", "hello.rs"),
    Example("rust-echo", "rust", "echo.rs"),
    Example("rust-json", "rust", "json.rs"),
    Example("rust-kv-counter", "rust", "counter.rs"),
    Example("rust-fetch", "rust", "fetch.rs"),
    Example("rust-wagi", "rust", "wagi.rs", wagi=True),
    Example("as-hello", "as", "hello.ts"),
    Example("as-echo", "as", "echo.ts"),
    Example("as-json", "as", "json.ts"),
    Example("as-kv-counter", "as", "counter.ts"),
    Example("as-fetch", "as", "fetch.ts"),
    Example("as-wagi", "as", "wagi.ts", wagi=True),
)
EXAMPLES_BY_NAME = {e.name: e for e in EXAMPLE_LIST}


def find_tool(lang: str) -> str:
    """The program that builds `lang`; skips the test when it is missing, fails under CI."""
    chain = TOOLCHAINS[lang]
    found = chain.find()
    if found is None and lang == "as" and LOCAL_ASC.exists():
        found = str(LOCAL_ASC)
    if found is None:
        message = f"no {chain.tool} for {lang}: {chain.install}"
        if lang == "as":
            message += " (in sdk/assemblyscript)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def build(chain: Toolchain, tool: str, source: Path, out: Path, sdk: Path, *,
          wagi: bool = False) -> None:
    for argv in chain.commands(source, out, sdk, wagi=wagi):
        done = subprocess.run([tool, *argv[1:]], cwd=source.parent, capture_output=True,
                              text=True, timeout=300, check=False)
        assert done.returncode == 0, f"{' '.join(argv)} failed:\n{done.stdout}{done.stderr}"


class BuiltExamples:
    """Each example copied into `root` and compiled there, at most once a session."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __call__(self, name: str) -> Path:
        example = EXAMPLES_BY_NAME[name]
        folder = self.root / name
        marker = folder / ".built"
        if marker.exists():
            return folder
        tool = find_tool(example.lang)
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(EXAMPLES / name, folder, ignore=shutil.ignore_patterns("*.wasm"))
        # Built from the repository's sources, so relative SDK imports resolve.
        artifact = json.loads((folder / "function.json").read_text())["artifact"]
        build(TOOLCHAINS[example.lang], tool, EXAMPLES / name / example.source,
              folder / artifact, example.sdk, wagi=example.wagi)
        marker.touch()
        return folder


@pytest.fixture(scope="session")
def built_example(tmp_path_factory: pytest.TempPathFactory) -> BuiltExamples:
    return BuiltExamples(tmp_path_factory.mktemp("sdk-examples"))
