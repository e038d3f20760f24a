"""`python -m edgefn.builder setup`: install the pinned AssemblyScript compiler into
the builder's home (idempotent; CI and worker images run it once)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from edgefn.builder.errors import BuildError
from edgefn.builder.jail import Jail, JailLimits
from edgefn.builder.toolchains import AssemblyScriptDriver


def _echo(text: str) -> None:
    sys.stderr.write(text)


def main(argv: list[str]) -> int:
    if argv != ["setup"]:
        print("usage: python -m edgefn.builder setup", file=sys.stderr)
        return 2
    tool = AssemblyScriptDriver()
    with tempfile.TemporaryDirectory(prefix="edgefn-setup-") as scratch:
        jail = Jail(Path(scratch), JailLimits(timeout_s=600), on_output=_echo)
        try:
            tool.install(jail)
        except BuildError as exc:
            print(exc.message, file=sys.stderr)
            return 1
    print(tool.probe().detail)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
