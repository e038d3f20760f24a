"""One pinned AssemblyScript compiler: the builder's lockfile is its only
definition, and `edgefn init`, the SDK's build helpers and `edgefn doctor` all take
it from there."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgefn.builder.toolchains import AssemblyScriptDriver, pinned_assemblyscript
from edgefn.cli.init import TOOLCHAINS, write_project
from edgefn.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]
PINNED = ROOT / "src" / "edgefn" / "builder" / "assemblyscript"


def test_the_lockfile_is_the_one_definition() -> None:
    version = pinned_assemblyscript()
    assert re.fullmatch(r"[0-9]+\.[0-9]+\.[0-9]+", version)
    declared = json.loads((PINNED / "package.json").read_text())["dependencies"]
    assert declared == {"assemblyscript": version}
    # Nothing else in the repository names a version of the compiler.
    pin = re.compile(r'"assemblyscript"\s*:\s*"[~^=]*[0-9]|assemblyscript@[0-9]')
    others = [
        path for base in ("sdk", "src/edgefn/cli", "examples", "Makefile", ".ci")
        for path in ([ROOT / base] if (ROOT / base).is_file() else (ROOT / base).rglob("*"))
        if path.is_file() and "node_modules" not in path.parts
        and path.suffix in ("", ".json", ".py", ".sh", ".md", ".ts")
        and pin.search(path.read_text(errors="replace"))
    ]
    assert others == []


def test_init_writes_the_pinned_version(tmp_path: Path) -> None:
    write_project(tmp_path / "p", "p", "as")
    package = json.loads((tmp_path / "p" / "package.json").read_text())
    assert package["devDependencies"] == {"assemblyscript": pinned_assemblyscript()}


def test_the_sdk_and_init_find_the_installed_compiler(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    """Without ASC or an asc on PATH, the compiler `python -m edgefn.builder setup`
    installed is the one found; without that either, none."""
    monkeypatch.delenv("ASC", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("EDGEFN_BUILDER_HOME", str(tmp_path / "home"))
    assert TOOLCHAINS["as"].find() is None
    fake = AssemblyScriptDriver().asc_command
    fake.parent.mkdir(parents=True)
    fake.write_text("#!/bin/sh\n")
    assert TOOLCHAINS["as"].find() == str(fake)
    assert fake.parent.parent.parent.name == f"assemblyscript-{pinned_assemblyscript()}"


def test_doctor_names_the_pinned_compiler(monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    monkeypatch.setenv("EDGEFN_BUILDER_HOME", str(tmp_path / "home"))
    out = CliRunner().invoke(cli, ["doctor"]).output
    assert "assemblyscript: missing" in out
    assert "python -m edgefn.builder setup" in out
