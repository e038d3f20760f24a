"""The SDK examples of examples/: which language and source each is, and how it is
built with the same compiler invocations as `edgefn init` projects.

    python sdk/examples.py          # rebuild every example's module in place

`edgefn dev` deploys examples/ as they are, so their modules are kept built; the
tests build them afresh from source.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from edgefn.cli.init import TOOLCHAINS

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SDK = ROOT / "sdk"
SOURCE_LANGS = {".c": "c", ".rs": "rust", ".ts": "as"}
SDK_PATHS = {"c": SDK / "c", "rust": SDK / "rust" / "src" / "lib.rs",
             "as": SDK / "assemblyscript" / "assembly"}


@dataclass(frozen=True)
class Example:
    folder: Path
    lang: str
    source: Path
    artifact: str
    wagi: bool

    @property
    def name(self) -> str:
        return self.folder.name


def discover(root: Path = EXAMPLES) -> list[Example]:
    """Every folder with a function.json and one source file in a known language."""
    found = []
    for folder in sorted(p for p in root.iterdir() if (p / "function.json").is_file()):
        sources = [p for p in sorted(folder.iterdir()) if p.suffix in SOURCE_LANGS]
        if len(sources) != 1:
            continue
        manifest = json.loads((folder / "function.json").read_text())
        found.append(Example(folder, SOURCE_LANGS[sources[0].suffix], sources[0],
                             manifest["artifact"], manifest.get("entrypoint") == "_start"))
    return found


def find_tool(lang: str) -> str | None:
    return TOOLCHAINS[lang].find()


def build(example: Example, out: Path, tool: str) -> None:
    """Compiles `example` to `out`; raises RuntimeError with the compiler's output."""
    chain = TOOLCHAINS[example.lang]
    for argv in chain.commands(example.source, out, SDK_PATHS[example.lang],
                               wagi=example.wagi):
        done = subprocess.run([tool, *argv[1:]], cwd=example.folder, capture_output=True,
                              text=True, timeout=300, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stdout}{done.stderr}")
    for leftover in out.parent.glob("*.rlib"):
        leftover.unlink()


def main() -> int:
    for example in discover():
        tool = find_tool(example.lang)
        if tool is None:
            print(f"skip {example.name}: no {TOOLCHAINS[example.lang].tool}", file=sys.stderr)
            continue
        build(example, example.folder / example.artifact, tool)
        print(f"built {example.name}/{example.artifact}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
