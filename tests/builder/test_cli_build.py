"""`edgefn build DIR` locally: the same drivers, stable exit codes, --json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgefn.cli.main import cli
from edgefn.sandbox.wasminfo import validate_module
from tests.builder.sources import TREES


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def test_a_local_build_writes_the_module(tmp_path: Path) -> None:
    src = _tree(tmp_path, TREES["wat"])
    result = CliRunner().invoke(cli, ["build", str(src), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["ok"] is True and summary["language"] == "wat"
    assert Path(summary["out"]) == src / "build" / "function.wasm"  # no function.json
    module = Path(summary["out"]).read_bytes()
    assert validate_module(module, memory_pages=16).abi == "edge-v1"


def test_a_compile_error_exits_1_with_the_message(tmp_path: Path) -> None:
    src = _tree(tmp_path, {"fn.c": b"int f(void) { return nope; }\n"})
    result = CliRunner().invoke(cli, ["build", str(src)])
    assert result.exit_code == 1
    assert "nope" in result.output


def test_an_unknown_tree_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["build", str(tmp_path)])
    assert result.exit_code == 2
    assert "--lang" in result.output


@pytest.mark.parametrize("lang", ["c", "wat", "rust", "as"])
def test_a_project_from_edgefn_init_builds(tmp_path: Path, lang: str) -> None:
    """`edgefn build` takes the layout `edgefn init` writes (the Rust SDK as a
    vendored single-file crate, the AssemblyScript one beside the sources)."""
    runner = CliRunner()
    folder = tmp_path / "hello"
    made = runner.invoke(cli, ["init", "hello", "--lang", lang, "--dir", str(folder)])
    assert made.exit_code == 0, made.output
    result = runner.invoke(cli, ["build", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    validate_module(Path(summary["out"]).read_bytes(), memory_pages=64)
    # Where its function.json says the module is: what `edgefn deploy` uploads.
    artifact = json.loads((folder / "function.json").read_text())["artifact"]
    assert Path(summary["out"]) == (folder / artifact).resolve()
