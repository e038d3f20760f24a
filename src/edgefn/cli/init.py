"""`edgefn init`: a new function project (source, the SDK it needs, `build.sh`,
`function.json`, `golden.json`), and the compiler invocations that build it, which
the repository's own SDK examples are built with too."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import click

from edgefn.builder.toolchains import AssemblyScriptDriver, pinned_assemblyscript
from edgefn.cli.golden import GOLDEN_FILE

LANGS = ("c", "rust", "as", "wat")
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,62}$")


@dataclass(frozen=True)
class Toolchain:
    """How one language becomes an `edge-v1` module (or, with `wagi`, a WASI command).

    `tool` is the program, found as the environment variable `env` names or on PATH;
    `commands` are argv lists whose first element is replaced by the program found.
    """

    lang: str
    tool: str
    env: str
    install: str

    def find(self) -> str | None:
        explicit = os.environ.get(self.env)
        if explicit:
            return explicit
        if self.lang == "rust" and Path("/usr/bin/rustc").exists():
            # Debian's rustc carries the wasm32-wasi standard library; a rustup one
            # earlier on PATH often does not.
            return "/usr/bin/rustc"
        found = shutil.which(self.tool)
        if found is None and self.lang == "as":
            # The pinned compiler `python -m edgefn.builder setup` installed.
            installed = AssemblyScriptDriver().asc_command
            return str(installed) if installed.exists() else None
        return found

    def commands(self, source: Path, out: Path, sdk: Path, *, wagi: bool = False,
                 work: Path | None = None) -> list[list[str]]:
        """Compile `source` to `out`; `sdk` is the SDK as this language imports it
        (C: the folder of edgefn.h; Rust: edgefn's lib.rs; AS: unused, sources import
        it by relative path). `work` holds intermediate files (default: out's folder)."""
        work = work or out.parent
        if self.lang == "c":
            flags = ["--target=wasm32-wasi", "-O2", "-Wall", "-Wextra", "-Werror",
                     "-I", str(sdk), "-Wl,--strip-all", "-Wl,--stack-first"]
            return [[self.tool, *flags, *([] if wagi else ["-mexec-model=reactor"]),
                     "-o", str(out), str(source)]]
        if self.lang == "rust":
            common = [self.tool, "--edition", "2021", "--target", "wasm32-wasi", "-O",
                      "-C", "link-arg=-s"]
            if wagi:
                return [[*common, "--crate-type", "bin", "-o", str(out), str(source)]]
            rlib = work / "libedgefn.rlib"
            return [
                [*common, "--crate-type", "rlib", "--crate-name", "edgefn", str(sdk),
                 "-o", str(rlib)],
                [*common, "--crate-type", "cdylib", "--extern", f"edgefn={rlib}",
                 "-o", str(out), str(source)],
            ]
        if self.lang == "as":
            runtime = ["--runtime", "stub", "--exportStart", "_start"] if wagi else [
                "--runtime", "incremental"]
            return [[self.tool, str(source), *runtime, "--use", "abort=", "-O3",
                     "-o", str(out)]]
        return [[self.tool, str(source), "-o", str(out)]]


TOOLCHAINS = {
    "c": Toolchain("c", "clang", "CLANG",
                   "clang with wasm32-wasi: apt-get install clang lld wasi-libc "
                   "libclang-rt-dev-wasm32"),
    "rust": Toolchain("rust", "rustc", "RUSTC",
                      "apt-get install rustc libstd-rust-dev-wasm32"),
    "as": Toolchain("as", "asc", "ASC",
                    "python -m edgefn.builder setup (the pinned assemblyscript), or "
                    "npm install in the project"),
    "wat": Toolchain("wat", "wat2wasm", "WAT2WASM", "apt-get install wabt"),
}


@dataclass(frozen=True)
class Layout:
    """Where a project of one language keeps its files."""

    source: str
    sdk: str  # what `Toolchain.commands` gets as `sdk`, relative to the project
    vendored: tuple[tuple[str, str], ...]  # (template under templates/sdk, project path)


LAYOUTS = {
    "c": Layout("hello.c", ".", (("edgefn.h", "edgefn.h"),)),
    "rust": Layout("src/lib.rs", "sdk/edgefn.rs", (("edgefn.rs", "sdk/edgefn.rs"),)),
    "as": Layout("assembly/index.ts", "sdk/edgefn", (
        ("edgefn-as/index.ts", "sdk/edgefn/index.ts"),
        ("edgefn-as/wagi.ts", "sdk/edgefn/wagi.ts"),
    )),
    "wat": Layout("hello.wat", ".", ()),
}
ARTIFACT = "hello.wasm"


def _templates() -> Any:
    return resources.files("edgefn.cli") / "templates"


def _manifest(name: str, lang: str) -> dict[str, Any]:
    return {
        "id": name,
        "name": name,
        "version": "0.1.0",
        "entrypoint": "handle",
        "artifact": ARTIFACT,
        # AssemblyScript's runtime and Rust's allocator start above 1 MiB.
        "memory_pages": 32 if lang in ("rust", "as") else 16,
        "max_execution_ms": 500,
        "max_response_bytes": 65536,
        "routes": [{"host": "*", "path": f"/{name}", "methods": ["GET"]}],
    }


def _golden(name: str, lang: str) -> dict[str, Any]:
    plain = {"content-type": "text/plain; charset=utf-8"}
    cases = [{"name": "greets the world", "request": {"path": f"/{name}"},
              "response": {"status": 200, "headers": plain, "body": "Hello, world!\n"}}]
    if lang != "wat":
        cases.append({"name": "greets by name", "request": {"path": f"/{name}?name=Ada"},
                      "response": {"status": 200, "headers": plain, "body": "Hello, Ada!\n"}})
    return {"cases": cases}


def build_script(lang: str) -> str:
    """`build.sh` of a project: the toolchain's commands, the program overridable."""
    chain, layout = TOOLCHAINS[lang], LAYOUTS[lang]
    default = {"rust": "$(command -v /usr/bin/rustc || command -v rustc)",
               "as": "node_modules/.bin/asc"}.get(lang, chain.tool)
    lines = ["#!/bin/sh", f"# Builds {ARTIFACT}; then `edgefn test .` runs golden.json.",
             "set -eu", 'cd "$(dirname "$0")"']
    if lang == "as":
        lines.append(f'[ -n "${{{chain.env}:-}}" ] || [ -x {default} ] || '
                     "npm install --no-audit --no-fund")
    lines.append(f'{chain.env}="${{{chain.env}:-{default}}}"')
    if lang == "rust":
        lines.append("mkdir -p target")
    work = Path("target") if lang == "rust" else None
    for argv in chain.commands(Path(layout.source), Path(ARTIFACT), Path(layout.sdk),
                               work=work):
        lines.append(" ".join([f'"${chain.env}"', *map(shlex.quote, argv[1:])]))
    return "\n".join(lines) + "\n"


def write_project(folder: Path, name: str, lang: str) -> None:
    """Writes a new project for `lang` into `folder`, which must not exist or be empty."""
    if folder.exists() and any(folder.iterdir()):
        raise click.UsageError(f"{folder} exists and is not empty")
    templates = _templates()
    source = templates / lang
    layout = LAYOUTS[lang]
    files: dict[str, bytes] = {layout.source: (source / layout.source).read_bytes()}
    for template, dest in layout.vendored:
        files[dest] = (templates / "sdk" / template).read_bytes()
    files["function.json"] = (json.dumps(_manifest(name, lang), indent=2) + "\n").encode()
    files[GOLDEN_FILE] = (json.dumps(_golden(name, lang), indent=2) + "\n").encode()
    files["build.sh"] = build_script(lang).encode()
    ignored = ["*.wasm", "target/"] if lang == "rust" else ["*.wasm"]
    if lang == "as":
        package = {"name": name, "version": "0.1.0", "private": True,
                   "devDependencies": {"assemblyscript": pinned_assemblyscript()}}
        files["package.json"] = (json.dumps(package, indent=2) + "\n").encode()
        ignored.append("node_modules/")
    files[".gitignore"] = ("\n".join(ignored) + "\n").encode()
    for rel, data in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (folder / "build.sh").chmod(0o755)


@click.command()
@click.argument("name")
@click.option("--lang", type=click.Choice(LANGS), required=True,
              help="c, rust, as (AssemblyScript) or wat.")
@click.option("--dir", "folder", type=click.Path(path_type=Path, file_okay=False),
              help="Where to write the project [./NAME].")
def init(name: str, lang: str, folder: Path | None) -> None:
    """Start a function project NAME: source, SDK, build.sh, function.json, golden.json."""
    if not NAME_PATTERN.match(name):
        raise click.BadParameter("lower-case letters, digits and '-', starting with a "
                                 "letter", param_hint="NAME")
    folder = folder or Path(name)
    write_project(folder, name, lang)
    chain = TOOLCHAINS[lang]
    click.echo(f"created {folder}/ ({lang})")
    click.echo(f"  build:  {folder}/build.sh")
    click.echo(f"  test:   edgefn test {folder}")
    click.echo(f"  deploy: edgefn deploy {folder}")
    if chain.find() is None and lang != "as":
        click.echo(f"note: {chain.tool} is not installed; {chain.install}")
