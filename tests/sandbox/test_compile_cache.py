"""The sealed compile cache: only code this node compiled, from this module, for this
engine, is ever loaded; anything else is deleted and compiled again."""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from pathlib import Path

import pytest

from edgefn.sandbox import Limits, WasiOptions, create_engine
from edgefn.sandbox.compilecache import CompileCache, load_or_create_key
from edgefn.sandbox.engine import Engine
from tests.conftest import wasm_path

ENGINE = "wasmtime-test"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cache_at(tmp_path: Path, key: bytes = b"k" * 32) -> tuple[CompileCache, list[str]]:
    reasons: list[str] = []
    return CompileCache(tmp_path / "compiled", key, on_reject=reasons.append), reasons


def test_sealed_code_round_trips_and_files_are_private(tmp_path: Path) -> None:
    cache, reasons = cache_at(tmp_path)
    cache.store(sha(b"module"), ENGINE, b"machine code")
    assert cache.load(sha(b"module"), ENGINE) == b"machine code"
    path = cache.path_for(sha(b"module"), ENGINE)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cache.root.stat().st_mode) == 0o700
    assert reasons == [] and cache.rejected == 0


@pytest.mark.parametrize("damage", ["flip a code byte", "flip a seal byte", "truncate",
                                    "plain cwasm", "empty"])
def test_a_damaged_file_is_refused_and_deleted(tmp_path: Path, damage: str) -> None:
    cache, reasons = cache_at(tmp_path)
    source = sha(b"module")
    cache.store(source, ENGINE, b"machine code" * 100)
    path = cache.path_for(source, ENGINE)
    data = bytearray(path.read_bytes())
    if damage == "flip a code byte":
        data[-1] ^= 1
    elif damage == "flip a seal byte":
        data[30] ^= 1
    elif damage == "truncate":
        data = data[:-10]
    elif damage == "plain cwasm":  # what an unsealed cache (or an attacker) would write
        data = bytearray(b"\x7fELF" + b"machine code" * 100)
    else:
        data = bytearray()
    path.write_bytes(bytes(data))
    assert cache.load(source, ENGINE) is None
    assert not path.exists()
    assert cache.rejected == 1 and reasons == ["its seal does not match"]


def test_code_is_bound_to_its_source_its_engine_and_the_key(tmp_path: Path) -> None:
    cache, _ = cache_at(tmp_path)
    a, b = sha(b"module a"), sha(b"module b")
    cache.store(a, ENGINE, b"code of a")
    cache.store(b, ENGINE, b"code of b")
    # b's sealed file in a's place: the seal names b's module, so a refuses it.
    cache.path_for(a, ENGINE).write_bytes(cache.path_for(b, ENGINE).read_bytes())
    assert cache.load(a, ENGINE) is None
    assert cache.load(b, ENGINE) == b"code of b"
    # Another engine (version, settings) never loads it, even from the same path.
    cache.store(a, ENGINE, b"code of a")
    other_engine = cache.path_for(a, "wasmtime-other")
    other_engine.write_bytes(cache.path_for(a, ENGINE).read_bytes())
    assert cache.load(a, "wasmtime-other") is None
    # Another node's cache (another key) is refused as a whole.
    stranger, _ = cache_at(tmp_path, key=b"x" * 32)
    assert stranger.load(a, ENGINE) is None


def test_the_key_is_made_once_0600_and_shared_by_processes_starting_together(
    tmp_path: Path,
) -> None:
    path = tmp_path / "keys" / "compile.key"
    keys: list[bytes] = []
    threads = [threading.Thread(target=lambda: keys.append(load_or_create_key(path)))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(keys)) == 1 and len(keys[0]) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["compile.key"]  # no temp file left
    path.write_text("not a key\n")
    with pytest.raises(ValueError, match="compile-cache key"):
        load_or_create_key(path)


def run(engine: Engine, module: str, body: bytes = b"ping") -> bytes:
    from edgefn.sandbox import GuestRequest
    from tests.sandbox.test_engine_conformance import FakeHost

    compiled = engine.compile(wasm_path(module).read_bytes(), Limits(), WasiOptions())
    inst = compiled.instantiate()
    try:
        return inst.invoke(GuestRequest(b"POST", b"/x", b"", body), FakeHost())
    finally:
        inst.close()
        compiled.close()


def test_wasmtime_refuses_another_modules_compiled_file_and_runs_its_own(
    tmp_path: Path,
) -> None:
    key = load_or_create_key(tmp_path / "compile.key")
    root = tmp_path / "compiled"
    first = create_engine("wasmtime", compile_cache=CompileCache(root, key))
    try:
        echo = run(first, "echo", b"mine")
        assert b"mine" in echo
        (echo_file,) = root.glob("*.cwasm")
        headers = run(first, "headers", b"mine")
        (headers_file,) = set(root.glob("*.cwasm")) - {echo_file}
    finally:
        first.close()
    assert echo != headers
    os.replace(headers_file, echo_file)  # the other function's machine code, in echo's place

    rejected: list[str] = []
    second = create_engine("wasmtime", compile_cache=CompileCache(root, key,
                                                                  on_reject=rejected.append))
    try:
        assert run(second, "echo", b"mine") == echo
    finally:
        second.close()
    assert rejected == ["its seal does not match"]
    # Compiled again from the module and sealed again: the next load uses it.
    third_rejects: list[str] = []
    third = create_engine("wasmtime", compile_cache=CompileCache(root, key,
                                                                 on_reject=third_rejects.append))
    try:
        assert run(third, "echo", b"mine") == echo
    finally:
        third.close()
    assert third_rejects == [] and echo_file.exists()


def test_wasmedge_keeps_aot_code_in_the_cache_it_is_given(tmp_path: Path) -> None:
    """Needs libwasmedge built with LLVM; skipped, saying so, where it is not."""
    from edgefn.sandbox import WasmEdgeOptions
    from edgefn.sandbox.errors import EngineUnavailable

    key = load_or_create_key(tmp_path / "compile.key")
    root = tmp_path / "compiled"
    try:
        engine = create_engine("wasmedge", options=WasmEdgeOptions(aot=True),
                               compile_cache=CompileCache(root, key))
    except EngineUnavailable as exc:
        pytest.skip(f"wasmedge engine unavailable: {exc}")
    try:
        if not engine.describe()["compiler"].startswith("LLVM AOT"):
            pytest.skip("libwasmedge was built without LLVM: nothing to cache")
        assert b"mine" in run(engine, "echo", b"mine")
        assert len(list(root.glob("*.cwasm"))) == 1
    finally:
        engine.close()
    again = create_engine("wasmedge", options=WasmEdgeOptions(aot=True),
                          compile_cache=CompileCache(root, key))
    try:
        assert b"again" in run(again, "echo", b"again")
        assert len(list(root.glob("*.cwasm"))) == 1
    finally:
        again.close()
