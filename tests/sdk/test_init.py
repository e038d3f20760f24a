"""`edgefn init` writes a project for each language that builds with its own build.sh
and passes its own golden test through `edgefn test`."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgefn.cli.init import LANGS, TOOLCHAINS
from edgefn.cli.main import cli
from tests.sdk.conftest import find_tool


@pytest.mark.parametrize("lang", LANGS)
def test_init_builds_and_passes_its_golden_test(lang: str, tmp_path: Path) -> None:
    tool = find_tool(lang)
    runner = CliRunner()
    project = tmp_path / f"hello-{lang}"
    made = runner.invoke(cli, ["init", f"hello-{lang}", "--lang", lang, "--dir", str(project)])
    assert made.exit_code == 0, made.output
    manifest = json.loads((project / "function.json").read_text())
    assert manifest["id"] == f"hello-{lang}"
    assert manifest["routes"][0]["path"] == f"/hello-{lang}"
    env = {**os.environ, TOOLCHAINS[lang].env: tool}
    built = subprocess.run(["sh", str(project / "build.sh")], env=env, capture_output=True,
                           text=True, timeout=300, check=False)
    assert built.returncode == 0, built.stdout + built.stderr
    assert (project / "hello.wasm").is_file()

    passed = runner.invoke(cli, ["test", str(project)])
    assert passed.exit_code == 0, passed.output
    assert " 0 failed" in passed.output


def test_a_wrong_golden_response_fails_the_test(tmp_path: Path) -> None:
    tool = find_tool("wat")
    project = tmp_path / "p"
    runner = CliRunner()
    assert runner.invoke(cli, ["init", "p", "--lang", "wat", "--dir", str(project)]).exit_code == 0
    unbuilt = runner.invoke(cli, ["test", str(project)])
    assert unbuilt.exit_code == 1
    assert "build the function first" in unbuilt.output
    subprocess.run(["sh", str(project / "build.sh")], check=True, timeout=60,
                   env={**os.environ, "WAT2WASM": tool})
    golden = json.loads((project / "golden.json").read_text())
    golden["cases"][0]["response"]["body"] = "something else\n"
    (project / "golden.json").write_text(json.dumps(golden))
    result = runner.invoke(cli, ["test", str(project)])
    assert result.exit_code == 1
    assert "FAIL greets the world" in result.output
    assert "expected 'something else\\n'" in result.output


def test_init_refuses_a_bad_name_and_a_non_empty_folder(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["init", "Bad Name", "--lang", "c"]).exit_code == 2
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("")
    result = runner.invoke(cli, ["init", "taken", "--lang", "c", "--dir",
                                 str(tmp_path / "taken")])
    assert result.exit_code == 2
    assert "not empty" in result.output
