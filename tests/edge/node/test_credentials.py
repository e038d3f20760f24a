"""A node's control-plane credentials: never on its command line, never in its workers'
configuration or environment."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgefn.cli.main import cli
from edgefn.edge.bootstrap import worker_config
from edgefn.edge.node.credentials import CREDENTIAL_ENV, scrub_credentials, without_credentials
from edgefn.edge.settings import EdgeSettings

TOKEN = "efn_node_secret_value"


def test_the_worker_config_holds_no_token(tmp_path: Path) -> None:
    settings = EdgeSettings(data_dir=tmp_path, node_token=TOKEN, cp_url="http://cp")
    raw = worker_config(settings)
    assert TOKEN not in raw and "node_token" not in json.loads(raw)
    worker = EdgeSettings.model_validate_json(raw)
    assert worker.node_token is None and worker.data_dir == tmp_path.resolve()
    assert worker.compile_key_file == (tmp_path / "compile.key").resolve()


def test_credentials_are_scrubbed_from_an_environment() -> None:
    env = {name: "secret" for name in CREDENTIAL_ENV} | {"PATH": "/bin", "EDGEFN_WORKERS": "2"}
    assert without_credentials(env) == {"PATH": "/bin", "EDGEFN_WORKERS": "2"}
    assert sorted(scrub_credentials(env)) == sorted(CREDENTIAL_ENV)
    assert env == {"PATH": "/bin", "EDGEFN_WORKERS": "2"}


def test_a_token_on_the_command_line_is_refused_with_the_way_out() -> None:
    result = CliRunner().invoke(cli, ["edge", "serve", "--node-token", TOKEN])
    assert result.exit_code == 2
    assert "--node-token-file" in result.output and "EDGEFN_NODE_TOKEN" in result.output
    assert "--node-token " not in CliRunner().invoke(cli, ["edge", "serve", "--help"]).output


def test_token_file_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.token"
    empty.write_text("\n")
    result = CliRunner().invoke(cli, ["edge", "serve", "--node-token-file", str(empty)])
    assert result.exit_code == 2 and "is empty" in result.output
    result = CliRunner().invoke(cli, ["edge", "serve", "--node-token-file",
                                      str(tmp_path / "missing.token")])
    assert result.exit_code == 2 and "cannot read" in result.output


def test_a_token_file_others_can_read_is_used_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edgefn.cli.edge import read_node_token

    path = tmp_path / "node.token"
    path.write_text(TOKEN + "\n")
    os.chmod(path, 0o644)
    assert read_node_token(path) == TOKEN
    assert "readable by other users" in capsys.readouterr().err
    os.chmod(path, 0o600)
    assert read_node_token(path) == TOKEN
    assert capsys.readouterr().err == ""
