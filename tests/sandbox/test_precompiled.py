"""Precompiled code on every engine: what `precompile` makes loads through
`compile(precompiled=...)` in an engine of the same tag, runs like the module, and
lands in the sealed compile cache; what an engine will not load is `PrecompiledRefused`."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefn.sandbox import (
    Engine,
    GuestRequest,
    InvalidModule,
    Limits,
    PrecompiledRefused,
    WasiOptions,
    WasmtimeOptions,
    create_engine,
)
from edgefn.sandbox.compilecache import CompileCache, load_or_create_key
from edgefn.sandbox.enginetag import engine_tag, host_cpu
from tests.conftest import wasm_path
from tests.sandbox.test_engine_conformance import FakeHost


def invoke(engine: Engine, wasm: bytes, body: bytes, precompiled: bytes | None = None) -> bytes:
    module = engine.compile(wasm, Limits(), WasiOptions(), precompiled=precompiled)
    inst = module.instantiate()
    try:
        return inst.invoke(GuestRequest(b"POST", b"/x", b"", body), FakeHost())
    finally:
        inst.close()
        module.close()


def test_precompiled_code_runs_like_the_module(any_engine: Engine) -> None:
    echo = wasm_path("echo").read_bytes()
    if not any_engine.tag:  # the interpreter: nothing compiled ahead to hand out
        with pytest.raises(InvalidModule):
            any_engine.precompile(echo)
        return
    code = any_engine.precompile(echo)
    assert code and code != echo
    assert invoke(any_engine, echo, b"mine", precompiled=code) == invoke(any_engine, echo, b"mine")


def test_code_an_engine_will_not_load_is_refused(any_engine: Engine) -> None:
    if not any_engine.tag:
        pytest.skip("the interpreter never loads precompiled code")
    echo = wasm_path("echo").read_bytes()
    for junk in (b"\x7fELF" + b"\0" * 60, b"not compiled code at all"):
        with pytest.raises(PrecompiledRefused):
            any_engine.compile(echo, Limits(), WasiOptions(), precompiled=junk)


def test_adopted_code_is_sealed_in_the_nodes_cache(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path / "compile.key")
    root = tmp_path / "compiled"
    rejected: list[str] = []
    echo = wasm_path("echo").read_bytes()
    maker = create_engine("wasmtime")
    node = create_engine("wasmtime", compile_cache=CompileCache(root, key,
                                                                on_reject=rejected.append))
    try:
        code = maker.precompile(echo)
        assert node.tag == maker.tag
        assert b"mine" in invoke(node, echo, b"mine", precompiled=code)
        (sealed,) = root.glob("*.cwasm")
        assert sealed.read_bytes().endswith(code)
        # A worker of the node loads it from the cache, seal checked, nothing refused.
        assert b"again" in invoke(node, echo, b"again")
        assert rejected == []
    finally:
        maker.close()
        node.close()


def test_the_tag_pins_engine_version_settings_and_cpu() -> None:
    speed, none = create_engine("wasmtime"), create_engine(
        "wasmtime", options=WasmtimeOptions(opt_level="none"))
    try:
        assert speed.tag != none.tag
        assert speed.tag.startswith("wasmtime-") and "-speed-epoch-" in speed.tag
        assert speed.tag.endswith(host_cpu())
        assert speed.describe()["tag"] == speed.tag
    finally:
        speed.close()
        none.close()
    # Only characters an object key and a file name take.
    assert engine_tag("wasmedge", "0.14.1/rc 1", "aot") == f"wasmedge-0.14.1_rc_1-aot-{host_cpu()}"
