"""`edgefn.native`: the optional C extensions, and the switch that turns them off."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edgefn import native

# What each C part replaces: the module attribute that holds it where it is used.
USES = {
    "edgefn.sandbox._abi":
        "from edgefn.sandbox import abi; print(abi._parse_native, abi._encode_native)",
    "edgefn.edge._logline": "from edgefn.edge import logs; print(logs._line_native)",
    "edgefn.edge._quota": "from edgefn.edge import quotas; print(quotas._QUOTA)",
    "edgefn.edge.worker._answer":
        "from edgefn.edge.worker import front; print(front._serialize_native)",
    "edgefn.edge.worker._http1":
        "from edgefn.edge.worker import front; print(front._read_native)",
    "edgefn.sandbox._edgecall":
        "from edgefn.sandbox import wasmtime_engine as w; print(w._EXCHANGE)",
}


@pytest.mark.parametrize("setting", ["off", "0", "False"])
def test_off_turns_every_part_off(monkeypatch: pytest.MonkeyPatch, setting: str) -> None:
    monkeypatch.setenv("EDGEFN_NATIVE", setting)
    assert not native.enabled()
    assert all(native.part(name) is None for name in USES)


@pytest.mark.parametrize("name", USES)
def test_a_process_started_with_off_uses_python(name: str) -> None:
    run = [sys.executable, "-c", USES[name]]
    off = subprocess.run(run, env={"EDGEFN_NATIVE": "off", "PATH": ""}, capture_output=True,
                         text=True, check=True).stdout
    assert set(off.split()) == {"None"}
    if native.part(name) is not None:  # built here: used unless turned off
        on = subprocess.run(run, capture_output=True, text=True, check=True).stdout
        assert "None" not in on
