"""The operator's flags on `edgefn edge serve` and `edgefn cp serve`: caps and egress,
validated before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from edgefn.cli.main import cli


@pytest.mark.parametrize("command", [["edge", "serve"], ["cp", "serve"]])
def test_both_take_the_cap_flags(command: list[str]) -> None:
    out = CliRunner().invoke(cli, [*command, "--help"]).output
    for flag in ("--cap-memory-pages", "--cap-execution-ms", "--cap-response-bytes",
                 "--cap-request-bytes", "--cap-hot-instances", "--cap-fetch-response-bytes"):
        assert flag in out, flag


@pytest.mark.parametrize("command", [["edge", "serve"], ["cp", "serve"]])
def test_bad_caps_are_usage_errors(command: list[str]) -> None:
    below = CliRunner().invoke(cli, [*command, "--cap-execution-ms", "100"])
    assert below.exit_code == 2 and "functions default to 500" in below.output
    past = CliRunner().invoke(cli, [*command, "--cap-memory-pages", "65537"])
    assert past.exit_code == 2 and "memory_pages" in past.output
    fetch = CliRunner().invoke(cli, [*command, "--cap-fetch-response-bytes", "1024"])
    assert fetch.exit_code == 2 and "functions default to 1048576" in fetch.output


def test_a_bad_egress_network_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["edge", "serve", "--allow-private-egress", "10.0.0.1/8"])
    assert result.exit_code == 2 and "allow_private_egress" in result.output
    assert "--allow-private-egress" in CliRunner().invoke(cli, ["edge", "serve", "--help"]).output


def test_the_s3_secret_on_the_command_line_is_refused_with_the_way_out() -> None:
    result = CliRunner().invoke(cli, ["cp", "serve", "--s3-secret-access-key", "s3cr3t"])
    assert result.exit_code == 2, result.output
    assert "readable by every user of the machine" in result.output
    assert "--s3-secret-access-key-file" in result.output
    assert "EDGEFN_S3_SECRET_ACCESS_KEY" in result.output
    help_text = CliRunner().invoke(cli, ["cp", "serve", "--help"]).output
    assert "--s3-secret-access-key-file" in help_text
    assert "--s3-secret-access-key " not in help_text


def test_the_s3_secret_from_a_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgefn.cli.cp import settings_from

    key_file = tmp_path / "s3.key"
    key_file.write_text("from-the-file\n")
    key_file.chmod(0o600)
    monkeypatch.setenv("EDGEFN_S3_SECRET_ACCESS_KEY", "from-the-environment")
    settings = settings_from(data_dir=tmp_path)
    assert settings.s3_secret_access_key is not None
    assert settings.s3_secret_access_key.get_secret_value() == "from-the-environment"
    settings = settings_from(data_dir=tmp_path, s3_secret_access_key_file=key_file)
    assert settings.s3_secret_access_key is not None
    assert settings.s3_secret_access_key.get_secret_value() == "from-the-file"
    # Through the command: an unreadable file is a usage error naming the option.
    result = CliRunner().invoke(cli, ["cp", "serve", "--s3-secret-access-key-file",
                                      str(tmp_path / "missing")])
    assert result.exit_code == 2 and "--s3-secret-access-key-file" in result.output


def test_the_control_stream_transport_is_chosen_per_node(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgefn.edge.settings import EdgeSettings

    help_text = CliRunner().invoke(cli, ["edge", "serve", "--help"]).output
    assert "--transport [grpc|websocket]" in help_text
    bad = CliRunner().invoke(cli, ["edge", "serve", "--transport", "http3"])
    assert bad.exit_code == 2 and "--transport" in bad.output
    # The WebSocket goes to the CP URL: without one there is nowhere to connect.
    alone = CliRunner().invoke(cli, ["edge", "serve", "--transport", "websocket"])
    assert alone.exit_code == 2 and "cp_url" in alone.output
    assert EdgeSettings().transport == "grpc"
    monkeypatch.setenv("EDGEFN_TRANSPORT", "websocket")
    assert EdgeSettings(cp_url="https://cp:8443").transport == "websocket"
