"""The operator's flags on `edgefn edge serve` and `edgefn cp serve`: caps and egress,
validated before anything starts."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from edgefn.cli.main import cli


@pytest.mark.parametrize("command", [["edge", "serve"], ["cp", "serve"]])
def test_both_take_the_cap_flags(command: list[str]) -> None:
    out = CliRunner().invoke(cli, [*command, "--help"]).output
    for flag in ("--cap-memory-pages", "--cap-execution-ms", "--cap-response-bytes",
                 "--cap-request-bytes", "--cap-hot-instances"):
        assert flag in out, flag


@pytest.mark.parametrize("command", [["edge", "serve"], ["cp", "serve"]])
def test_bad_caps_are_usage_errors(command: list[str]) -> None:
    below = CliRunner().invoke(cli, [*command, "--cap-execution-ms", "100"])
    assert below.exit_code == 2 and "functions default to 500" in below.output
    past = CliRunner().invoke(cli, [*command, "--cap-memory-pages", "65537"])
    assert past.exit_code == 2 and "memory_pages" in past.output


def test_a_bad_egress_network_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["edge", "serve", "--allow-private-egress", "10.0.0.1/8"])
    assert result.exit_code == 2 and "allow_private_egress" in result.output
    assert "--allow-private-egress" in CliRunner().invoke(cli, ["edge", "serve", "--help"]).output
