"""One build from archive to module: unpack into a fresh scratch directory, scan
the dependencies (AssemblyScript), compile, check the product's size. Used by the
control plane's workers, `edgefn build-worker` and `edgefn build` alike.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgefn.builder import scan
from edgefn.builder.archive import ArchiveLimits, extract
from edgefn.builder.errors import (
    BuildError,
    LimitExceeded,
    ToolchainMissing,
    VulnerableDependencies,
)
from edgefn.builder.jail import Jail, JailLimits
from edgefn.builder.toolchains import AssemblyScriptDriver, Driver, driver


@dataclass(frozen=True)
class BuildLimits:
    timeout_s: float = 120.0
    max_output_bytes: int = 10 * 1024 * 1024
    archive: ArchiveLimits = field(default_factory=ArchiveLimits)


@dataclass
class BuildResult:
    wasm: bytes | None = None
    error: str | None = None
    scan: dict[str, Any] | None = None
    log: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.wasm is not None


@dataclass(frozen=True)
class BuildSpec:
    language: str
    allow_critical: bool = False
    limits: BuildLimits = field(default_factory=BuildLimits)
    npm_registry: str | None = None
    # Directories the build's commands must not see.
    private: Sequence[Path] = ()
    scratch_root: Path | None = None


def build_tree(
    spec: BuildSpec, src: Path, jail: Jail, *, on_scan: Callable[[dict[str, Any]], None]
) -> bytes:
    """Compile the tree `src` (inside the jail's scratch) to module bytes."""
    tool: Driver = driver(spec.language, registry=spec.npm_registry)
    probe = tool.probe()
    if not probe.ok and not isinstance(tool, AssemblyScriptDriver):
        raise ToolchainMissing(f"{spec.language}: {probe.detail} (install: {probe.install})")
    if isinstance(tool, AssemblyScriptDriver):
        report = _dependencies(tool, jail, src)
        on_scan(report)
        found = scan.critical(report)
        if found and not spec.allow_critical:
            raise VulnerableDependencies(
                f"the dependency scan found {found} critical advisories "
                "(ask for allow_critical to build anyway)"
            )
    out = jail.scratch / "out.wasm"
    tool.compile(jail, src, out)
    size = out.stat().st_size
    if size > spec.limits.max_output_bytes:
        raise LimitExceeded(
            f"the module is {size} bytes; the limit is {spec.limits.max_output_bytes}"
        )
    return out.read_bytes()


def _dependencies(tool: AssemblyScriptDriver, jail: Jail, src: Path) -> dict[str, Any]:
    """Install the tree's own npm dependencies (no install scripts) and audit them."""
    if not (src / "package.json").is_file():
        return {
            "scanned": True,
            "tool": "npm audit",
            "counts": dict.fromkeys(scan.SEVERITIES, 0),
            "advisories": [],
            "note": "the tree declares no npm dependencies",
        }
    env = tool.npm_env()
    lock = (src / "package-lock.json").is_file()
    argv = [
        "npm",
        "ci" if lock else "install",
        "--ignore-scripts",
        "--no-audit",
        "--prefer-offline",
    ]
    rc, output = jail.run(argv, cwd=src, network=True, env=env)
    if rc != 0:
        if not (src / "package-lock.json").is_file():
            return scan.not_scanned(f"dependencies did not install: {output.strip()[-500:]}")
        jail.say("dependencies did not install; scanning the lockfile anyway")
    return scan.audit(jail, src, env)


def run_build(spec: BuildSpec, source: bytes, on_output: Callable[[str], None]) -> BuildResult:
    """The whole build of `source` (an archive); never raises a BuildError."""
    result = BuildResult()

    def emit(text: str) -> None:
        result.log.append(text)
        on_output(text)

    scratch = Path(tempfile.mkdtemp(prefix="edgefn-build-", dir=spec.scratch_root))
    try:
        jail = Jail(
            scratch,
            JailLimits(
                timeout_s=spec.limits.timeout_s,
                max_file_bytes=max(spec.limits.max_output_bytes, 64 * 1024 * 1024),
            ),
            private=spec.private,
            on_output=emit,
        )
        src = scratch / "src"
        src.mkdir()
        try:
            files = extract(source, src, spec.limits.archive)
            jail.say(f"unpacked {len(files)} files; building {spec.language}")
            result.wasm = build_tree(spec, src, jail, on_scan=lambda r: setattr(result, "scan", r))
            jail.say(f"built a module of {len(result.wasm)} bytes")
        except BuildError as exc:
            result.error = exc.message
            jail.say(f"build failed: {exc.message}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return result
