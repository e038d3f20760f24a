"""The command line: every command has help, and the contract's commands exist."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from edgefn.cli.main import cli


def all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name, cmd in group.commands.items():
        path = (*prefix, name)
        out.append(path)
        if isinstance(cmd, click.Group):
            out += all_commands(cmd, path)
    return out


def test_top_level_help_lists_the_contract_commands() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in ("dev", "cp", "edge", "deploy", "doctor", "audit"):
        assert name in result.output, name


@pytest.mark.parametrize("path", all_commands(cli), ids=" ".join)
def test_every_command_takes_help(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_dev_takes_the_contract_flags() -> None:
    out = CliRunner().invoke(cli, ["dev", "--help"]).output
    for flag in ("--data-dir", "--api-port", "--edge-port", "--metrics-port", "--grpc-port"):
        assert flag in out, flag


def test_unknown_option_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["edge", "serve", "--no-such-flag"])
    assert result.exit_code == 2


def test_doctor_reports_wasmtime() -> None:
    result = CliRunner().invoke(cli, ["doctor"])
    assert result.exit_code == 0, result.output
    assert "wasmtime: ok" in result.output
