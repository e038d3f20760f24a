"""The toolchain drivers: one per source language, each knowing how to find its
compiler, say how to install it, and turn a source tree into one `.wasm`.

    c               clang --target=wasm32-wasi (wasi-libc sysroot, wasm-ld)
    wat             wat2wasm (wabt)
    rust            Debian's rustc for wasm32-wasi; one crate, no Cargo, offline
    assemblyscript  asc from the `assemblyscript` package pinned in
                    `assemblyscript/package-lock.json`, installed once per machine

A tree builds as an edge-v1 reactor unless it has a `main` (C `main`, Rust
`src/main.rs`), which makes it a WAGI command. The CLI's local build and the
workers run the same drivers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Protocol

from edgefn.builder.errors import CompileFailed, ToolchainMissing, UnknownLanguage
from edgefn.builder.jail import Jail


@dataclass(frozen=True)
class Probe:
    """Whether a toolchain is usable here; `detail` is its version or what is missing."""

    name: str
    ok: bool
    detail: str
    install: str


class Driver(Protocol):
    language: str

    def probe(self) -> Probe: ...

    def compile(self, jail: Jail, src: Path, out: Path) -> None:
        """Write the module built from the tree `src` to `out`; CompileFailed with
        the compiler's output when it fails."""


def _version(argv: list[str]) -> str | None:
    """The first line a tool prints for `argv`, or None when it does not run."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return (
        (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr) else ""
    )


def _compile(jail: Jail, argv: list[str], src: Path, out: Path, *, network: bool = False) -> None:
    rc, output = jail.run(argv, cwd=src, network=network)
    if rc != 0:
        raise CompileFailed(f"{Path(argv[0]).name} exited with status {rc}:\n{output.strip()}")
    if not out.is_file():
        raise CompileFailed(f"{Path(argv[0]).name} wrote no module")


def _sources(src: Path, suffix: str) -> list[Path]:
    return sorted(
        p for p in src.rglob(f"*{suffix}") if p.is_file() and "node_modules" not in p.parts
    )


# ---- C ---------------------------------------------------------------------------

_C_MAIN = re.compile(rb"\bint\s+main\s*\(")
_C_FLAGS = ["--target=wasm32-wasi", "-O2", "-Wl,--strip-all", "-Wl,--stack-first"]


class CDriver:
    language = "c"

    def __init__(self, clang: str = "clang") -> None:
        self.clang = clang

    def probe(self) -> Probe:
        install = "apt-get install clang lld wasi-libc libclang-rt-14-dev-wasm32"
        found = shutil.which(self.clang)
        # wasi-libc is where clang looks for it when it names a full path for libc.a.
        libc = (
            _version([found, "--target=wasm32-wasi", "-print-file-name=libc.a"]) if found else None
        )
        if not found or not libc or not Path(libc).is_absolute():
            return Probe(self.language, False, "clang or the wasi-libc sysroot is missing", install)
        return Probe(self.language, True, _version([found, "--version"]) or "clang", install)

    def compile(self, jail: Jail, src: Path, out: Path) -> None:
        files = _sources(src, ".c")
        if not files:
            raise CompileFailed("no .c files in the source tree")
        command = any(_C_MAIN.search(f.read_bytes()) for f in files)
        model = [] if command else ["-mexec-model=reactor"]
        includes = sorted({f"-I{h.parent}" for h in _sources(src, ".h")})
        argv = [self.clang, *_C_FLAGS, *model, *includes, "-o", str(out)]
        _compile(jail, [*argv, *(str(f.relative_to(src)) for f in files)], src, out)


# ---- WAT -------------------------------------------------------------------------


class WatDriver:
    language = "wat"

    def probe(self) -> Probe:
        found = shutil.which("wat2wasm")
        version = _version([found, "--version"]) if found else None
        return Probe(
            self.language,
            bool(found),
            f"wat2wasm {version}" if found else "wat2wasm is missing",
            "apt-get install wabt",
        )

    def compile(self, jail: Jail, src: Path, out: Path) -> None:
        files = _sources(src, ".wat")
        if len(files) != 1:
            names = ", ".join(str(f.relative_to(src)) for f in files) or "none"
            raise CompileFailed(f"a wat build takes exactly one .wat file (found: {names})")
        _compile(jail, ["wat2wasm", str(files[0].relative_to(src)), "-o", str(out)], src, out)


# ---- Rust ------------------------------------------------------------------------


class RustDriver:
    """One crate compiled by rustc alone: no Cargo, so no dependency is fetched and
    no build script runs. The crate is `src/lib.rs` (a reactor, `cdylib`) or
    `src/main.rs` (a WAGI command); single-file crates vendored as `sdk/NAME.rs`
    or `vendor/NAME.rs` (the Rust SDK that `edgefn init` copies) are compiled
    first and linked in as `NAME`."""

    language = "rust"

    def __init__(self, rustc: str = "/usr/bin/rustc", target: str | None = None) -> None:
        self.rustc = rustc
        self._target = target

    def target(self) -> str | None:
        """The wasm32 WASI target this rustc has a standard library for."""
        if self._target:
            return self._target
        sysroot = _version([self.rustc, "--print", "sysroot"])
        if sysroot is None:
            return None
        for name in ("wasm32-wasip1", "wasm32-wasi"):
            if (Path(sysroot) / "lib" / "rustlib" / name).is_dir():
                return name
        return None

    def _vendored(self, jail: Jail, src: Path, common: list[str]) -> list[str]:
        """Compile each single-file crate vendored as `sdk/NAME.rs` or `vendor/NAME.rs`
        to an rlib; the `--extern` flags that hand them to the main crate."""
        externs: list[str] = []
        for folder in ("sdk", "vendor"):
            for crate in sorted((src / folder).glob("*.rs")):
                if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", crate.stem):
                    continue
                rlib = jail.scratch / "deps" / f"lib{crate.stem}.rlib"
                rlib.parent.mkdir(exist_ok=True)
                argv = [*common, "--crate-type", "rlib", "--crate-name", crate.stem]
                _compile(jail, [*argv, "-o", str(rlib), str(crate.relative_to(src))], src, rlib)
                externs += ["--extern", f"{crate.stem}={rlib}"]
        return externs

    def probe(self) -> Probe:
        install = "apt-get install rustc libstd-rust-dev-wasm32"
        version = _version([self.rustc, "--version"]) if Path(self.rustc).exists() else None
        if version is None:
            return Probe(self.language, False, f"{self.rustc} is missing", install)
        target = self.target()
        if target is None:
            return Probe(
                self.language, False, f"{version}: no wasm32-wasi standard library", install
            )
        return Probe(self.language, True, f"{version} ({target})", install)

    def compile(self, jail: Jail, src: Path, out: Path) -> None:
        target = self.target()
        if target is None:
            raise ToolchainMissing("rustc has no wasm32-wasi standard library")
        lib, main = src / "src" / "lib.rs", src / "src" / "main.rs"
        root = lib if lib.is_file() else main if main.is_file() else None
        if root is None:
            raise CompileFailed("a rust build needs src/lib.rs or src/main.rs")
        crate_type = ["--crate-type", "cdylib"] if root == lib else ["--crate-type", "bin"]
        common = [self.rustc, "--edition", "2021", "--target", target, "-C", "opt-level=s"]
        externs = self._vendored(jail, src, common)
        argv = [
            *common,
            "-C",
            "strip=symbols",
            "-C",
            "link-arg=-zstack-size=65536",
            "--crate-name",
            "function",
            *crate_type,
            *externs,
            "-o",
            str(out),
            str(root.relative_to(src)),
        ]
        _compile(jail, argv, src, out)


# ---- AssemblyScript --------------------------------------------------------------


def builder_home() -> Path:
    """Where the builder keeps installed toolchains and the npm cache."""
    given = os.environ.get("EDGEFN_BUILDER_HOME")
    if given:
        return Path(given)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgefn" / "builder"


def _pinned() -> resources.abc.Traversable:
    return resources.files("edgefn.builder") / "assemblyscript"


def pinned_assemblyscript() -> str:
    """The `assemblyscript` version every AssemblyScript build uses: the builder's,
    `edgefn init` projects', the SDK tests'. Its one definition is the lockfile of
    `src/edgefn/builder/assemblyscript/`."""
    lock = json.loads((_pinned() / "package-lock.json").read_text())
    return str(lock["packages"]["node_modules/assemblyscript"]["version"])


class AssemblyScriptDriver:
    """asc from the pinned package, installed with `npm ci` into the builder's home
    (from its npm cache when it has the packages, else from the registry)."""

    language = "assemblyscript"

    def __init__(self, home: Path | None = None, registry: str | None = None) -> None:
        self.home = home or builder_home()
        self.registry = registry

    @property
    def prefix(self) -> Path:
        return self.home / f"assemblyscript-{pinned_assemblyscript()}"

    @property
    def asc(self) -> Path:
        return self.prefix / "node_modules" / "assemblyscript" / "bin" / "asc.js"

    @property
    def asc_command(self) -> Path:
        """`asc` as a program (npm's link to `asc`, run by node from PATH)."""
        return self.prefix / "node_modules" / ".bin" / "asc"

    @property
    def npm_cache(self) -> Path:
        return self.home / "npm-cache"

    def npm_env(self) -> dict[str, str]:
        env = {
            "npm_config_cache": str(self.npm_cache),
            "npm_config_update_notifier": "false",
            "npm_config_fund": "false",
            # A registry that does not answer costs seconds, not npm's minutes of
            # backoff: the build then goes on, "not scanned".
            "npm_config_fetch_retries": "1",
            "npm_config_fetch_retry_mintimeout": "1000",
            "npm_config_fetch_retry_maxtimeout": "3000",
        }
        if self.registry:
            env["npm_config_registry"] = self.registry
        return env

    def probe(self) -> Probe:
        install = "npm (apt-get install npm), then `python -m edgefn.builder setup`"
        node = shutil.which("node")
        if node is None or shutil.which("npm") is None:
            return Probe(self.language, False, "node and npm are missing", install)
        if not self.asc.is_file():
            return Probe(self.language, False, f"asc is not installed in {self.prefix}", install)
        node_version = _version([node, "--version"])
        detail = f"asc {pinned_assemblyscript()} ({node_version}) at {self.asc_command}"
        return Probe(self.language, True, detail, install)

    def install(self, jail: Jail) -> None:
        """`npm ci` the pinned package into `prefix`, preferring the cache."""
        if self.asc.is_file():
            return
        if shutil.which("npm") is None:
            raise ToolchainMissing("npm is missing (apt-get install npm)")
        staging = self.prefix.with_name(self.prefix.name + f".tmp{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for name in ("package.json", "package-lock.json"):
            (staging / name).write_text((_pinned() / name).read_text())
        argv = ["npm", "ci", "--prefer-offline", "--ignore-scripts", "--no-audit"]
        rc, output = jail.run(argv, cwd=staging, network=True, env=self.npm_env())
        if rc != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise ToolchainMissing(f"installing assemblyscript failed:\n{output.strip()}")
        try:
            staging.rename(self.prefix)
        except OSError:  # another worker installed it meanwhile
            shutil.rmtree(staging, ignore_errors=True)

    def compile(self, jail: Jail, src: Path, out: Path) -> None:
        self.install(jail)
        entry = src / "assembly" / "index.ts"
        if not entry.is_file():
            files = _sources(src, ".ts")
            if len(files) != 1:
                raise CompileFailed("an assemblyscript build needs assembly/index.ts")
            entry = files[0]
        # `abort=` makes abort a trap instead of an `env.abort` import, which the
        # edge refuses; the runtime is the small incremental GC.
        argv = [
            "node",
            str(self.asc),
            str(entry.relative_to(src)),
            "-o",
            str(out),
            "--optimize",
            "--runtime",
            "incremental",
            "--use",
            "abort=",
        ]
        _compile(jail, argv, src, out)


DRIVERS: dict[
    str, type[CDriver] | type[WatDriver] | type[RustDriver] | type[AssemblyScriptDriver]
] = {
    "c": CDriver,
    "wat": WatDriver,
    "rust": RustDriver,
    "assemblyscript": AssemblyScriptDriver,
}
LANGUAGES = tuple(DRIVERS)


def driver(language: str, *, registry: str | None = None) -> Driver:
    if language == "assemblyscript":
        return AssemblyScriptDriver(registry=registry)
    try:
        return DRIVERS[language]()
    except KeyError:
        raise UnknownLanguage(
            f"unknown language {language!r} (one of: {', '.join(LANGUAGES)})"
        ) from None


def probes() -> list[Probe]:
    return [driver(name).probe() for name in LANGUAGES]
