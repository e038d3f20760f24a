"""`secret_get` through the runtime with the real `secret.wasm` guest: listed names
only, values from the node's source held in memory, never in the node state or a
log; an unresolvable source is -4 and is retried."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pytest

from edgefn.edge.capabilities import secrets as secrets_mod
from edgefn.edge.capabilities.secrets import (
    BrokerSecrets,
    ControlPlaneSecrets,
    FileSecrets,
    SecretBroker,
    SecretsCapability,
    SecretSource,
)
from edgefn.edge.spec import FunctionSpec, NodeState, read_state, write_state
from tests.edge.conftest import EdgeHarness, HarnessFactory, fn

VALUE = "sk_live_standalone-0123456789"


def _write(path: Path, data: object, mode: int = 0o600) -> None:
    path.write_text(json.dumps(data))
    os.chmod(path, mode)


def _harness(make_edge: HarnessFactory, source: SecretSource | None) -> EdgeHarness:
    def factory(spec: FunctionSpec) -> SecretsCapability | None:
        return SecretsCapability.configure(spec, source)

    return make_edge(secrets_factory=factory)


def _get(edge: EdgeHarness, fid: str, name: str) -> tuple[int, bytes]:
    resp = edge.request("GET", f"/{fid}/x?name={name}")
    assert resp.status == 200, resp.body
    return int(dict(resp.headers)["x-code"]), resp.body


def test_listed_names_only_and_values_stay_out_of_state_and_logs(
    make_edge: HarnessFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    path = tmp_path / "secrets.json"
    _write(path, {"reader": {"API_KEY": VALUE}, "nolist": {"API_KEY": VALUE}})
    edge = _harness(make_edge, FileSecrets(path))
    reader = fn("reader", "secret", secrets=["API_KEY", "MISSING"])
    nolist = fn("nolist", "secret")
    edge.deploy(reader, nolist)
    assert _get(edge, "reader", "API_KEY") == (len(VALUE), VALUE.encode())
    assert _get(edge, "reader", "MISSING") == (-1, b"")
    assert _get(edge, "reader", "OTHER") == (-2, b"")
    # The file holds a value for `nolist`, but it lists nothing: denied.
    assert _get(edge, "nolist", "API_KEY") == (-2, b"")
    state_file = tmp_path / "state.json"
    write_state(state_file, NodeState(generation=1, functions=(reader, nolist)))
    assert read_state(state_file).functions[0].secrets == ("API_KEY", "MISSING")
    assert VALUE not in state_file.read_text()
    assert edge.logs() and VALUE not in json.dumps(edge.logs())
    assert VALUE not in caplog.text


def test_a_file_others_can_read_is_refused(
    make_edge: HarnessFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "secrets.json"
    _write(path, {"reader": {"API_KEY": VALUE}}, mode=0o644)
    edge = _harness(make_edge, FileSecrets(path))
    edge.deploy(fn("reader", "secret", secrets=["API_KEY"]))
    assert _get(edge, "reader", "API_KEY") == (-4, b"")
    assert "readable by others" in caplog.text and VALUE not in caplog.text


def test_no_source_is_minus_4_for_listed_names_and_minus_2_for_others(
    make_edge: HarnessFactory,
) -> None:
    edge = _harness(make_edge, None)
    edge.deploy(fn("reader", "secret", secrets=["API_KEY"]))
    assert _get(edge, "reader", "API_KEY") == (-4, b"")
    assert _get(edge, "reader", "OTHER") == (-2, b"")


def test_an_unresolved_source_is_retried(
    make_edge: HarnessFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(secrets_mod, "RETRY_S", 2.0)
    path = tmp_path / "secrets.json"  # not there yet
    edge = _harness(make_edge, FileSecrets(path))
    edge.deploy(fn("reader", "secret", secrets=["API_KEY"]))
    assert _get(edge, "reader", "API_KEY") == (-4, b"")
    _write(path, {"reader": {"API_KEY": VALUE}})
    # Within the retry interval the answer stays -4: no lookup storm per request.
    assert _get(edge, "reader", "API_KEY") == (-4, b"")
    time.sleep(2.1)
    assert _get(edge, "reader", "API_KEY") == (len(VALUE), VALUE.encode())


def test_control_plane_source_failures_are_minus_4_without_the_url(
    make_edge: HarnessFactory, closed_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    token = "efn_" + "t" * 40
    source = ControlPlaneSecrets(f"http://127.0.0.1:{closed_port}", "node-test", token)
    edge = _harness(make_edge, source)
    edge.deploy(fn("reader", "secret", secrets=["API_KEY"]),
                fn("second", "secret", secrets=["API_KEY"]))
    assert _get(edge, "reader", "API_KEY") == (-4, b"")
    assert _get(edge, "second", "API_KEY") == (-4, b"")
    assert "unreachable (ConnectError)" in caplog.text and token not in caplog.text
    # The second function did not wait for its own timeout: it failed fast.
    assert "unreachable (retrying later)" in caplog.text


def test_a_worker_resolves_through_the_main_process_broker(
    make_edge: HarnessFactory, tmp_path: Path, closed_port: int
) -> None:
    """The worker's source is the broker's socket: the values come from the source
    behind it (the control plane, in the main process), the socket is the node
    user's alone, and a source that fails is -4 in the worker."""
    path = tmp_path / "secrets.json"
    _write(path, {"reader": {"API_KEY": VALUE}})
    sock = tmp_path / "secrets.sock"
    broker = SecretBroker(sock, FileSecrets(path))
    broker.start()
    try:
        assert oct(os.stat(sock).st_mode & 0o777) == "0o600"
        edge = _harness(make_edge, BrokerSecrets(sock))
        edge.deploy(fn("reader", "secret", secrets=["API_KEY", "MISSING"]))
        assert _get(edge, "reader", "API_KEY") == (len(VALUE), VALUE.encode())
        assert _get(edge, "reader", "MISSING") == (-1, b"")
        assert _get(edge, "reader", "OTHER") == (-2, b"")
    finally:
        broker.stop()
    assert not sock.exists()

    failing = SecretBroker(sock, ControlPlaneSecrets(f"http://127.0.0.1:{closed_port}", "n", "t"))
    failing.start()
    try:
        edge = _harness(make_edge, BrokerSecrets(sock))
        edge.deploy(fn("other", "secret", secrets=["API_KEY"]))
        assert _get(edge, "other", "API_KEY") == (-4, b"")
    finally:
        failing.stop()
