"""The control plane and the edge share only the contract: neither imports the
other, and the contract imports neither (edgefn.cluster and edgefn.cli may use both)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import edgefn

SRC = Path(edgefn.__file__).parent


def imported_modules(package: str) -> dict[str, set[str]]:
    """Every module each file of `package` imports, TYPE_CHECKING blocks and
    function-level imports included, by file."""
    found: dict[str, set[str]] = {}
    for path in sorted((SRC / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
        found[str(path.relative_to(SRC))] = names
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("controlplane", ("edgefn.edge",)),
        ("edge", ("edgefn.controlplane",)),
        ("contract", ("edgefn.edge", "edgefn.controlplane")),
    ],
)
def test_the_halves_share_only_the_contract(package: str, forbidden: tuple[str, ...]) -> None:
    crossing = sorted(
        f"{path}: {name}"
        for path, names in imported_modules(package).items()
        for name in names
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    )
    assert not crossing, f"edgefn.{package} imports what it must not: {crossing}"


def test_the_walk_sees_imports() -> None:
    """The check above would pass on a walk that found nothing."""
    edge = set().union(*imported_modules("edge").values())
    assert "edgefn.contract" in edge
    assert "edgefn.contract" in set().union(*imported_modules("controlplane").values())
