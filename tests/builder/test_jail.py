"""What a build's commands can and cannot do: time and file-size limits, the
scrubbed environment, no network and no view of private directories."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgefn.builder.errors import LimitExceeded
from edgefn.builder.jail import Jail, JailLimits, namespaces_work

needs_namespaces = pytest.mark.skipif(
    not namespaces_work(), reason="no unprivileged user namespaces here"
)


def test_the_time_limit_kills_the_command(tmp_path: Path) -> None:
    jail = Jail(tmp_path, JailLimits(timeout_s=0.5))
    with pytest.raises(LimitExceeded, match="time limit"):
        jail.run(["/bin/sh", "-c", "sleep 30"])


def test_a_file_over_the_limit_is_refused(tmp_path: Path) -> None:
    jail = Jail(tmp_path, JailLimits(max_file_bytes=4096))
    with pytest.raises(LimitExceeded, match="output limit"):
        jail.run(["/bin/sh", "-c", "head -c 100000 /dev/zero > big"])


def test_the_command_runs_under_the_limits(tmp_path: Path) -> None:
    jail = Jail(tmp_path, JailLimits(timeout_s=30, max_file_bytes=1 << 20, max_open_files=77))
    rc, out = jail.run(["/bin/sh", "-c", "ulimit -n; ulimit -c; ulimit -f; ulimit -t"])
    assert rc == 0, out
    files, core, size_blocks, cpu_s = out.split("\n")[-5:-1]
    assert (files, core) == ("77", "0")
    assert int(size_blocks) * 512 == 1 << 20  # sh counts 512-byte blocks
    assert 30 <= int(cpu_s) <= 32


def test_the_environment_is_scrubbed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEFN_BOOTSTRAP_TOKEN", "very-secret")
    rc, out = Jail(tmp_path).run(["/usr/bin/env"])
    assert rc == 0
    names = {line.split("=", 1)[0] for line in out.splitlines() if "=" in line}
    assert "EDGEFN_BOOTSTRAP_TOKEN" not in names
    assert f"HOME={tmp_path / 'home'}" in out


def test_the_log_is_capped(tmp_path: Path) -> None:
    seen: list[str] = []
    jail = Jail(tmp_path, JailLimits(max_log_bytes=1000), on_output=seen.append)
    jail.run(["/bin/sh", "-c", "yes | head -c 100000"])
    assert sum(len(s) for s in seen) < 1100
    assert "[log truncated]" in "".join(seen)


@needs_namespaces
def test_no_network_and_private_directories_hidden(tmp_path: Path) -> None:
    private = tmp_path / "cp-data"
    private.mkdir()
    (private / "secret.key").write_text("do not read")
    jail = Jail(tmp_path / "scratch", private=[private])
    rc, out = jail.run(["/bin/cat", f"{private}/secret.key"])
    assert rc != 0 and "do not read" not in out
    rc, out = jail.run(["/bin/cat", "/proc/net/dev"])
    interfaces = [line.split(":")[0].strip() for line in out.splitlines()[2:] if ":" in line]
    assert interfaces == ["lo"], out
    rc, out = jail.run(["/bin/sh", "-c", "cat /proc/net/dev"], network=True)
    assert rc == 0
    assert os.path.exists(private / "secret.key")
