"""The package's optional C extensions (`setup.py`): each is the fast half of a
module whose Python counterpart stays the version of record and runs wherever the
extension was not built."""

from __future__ import annotations

import importlib
from typing import Any


def part(name: str) -> Any:
    """The extension `name` (`edgefn.sandbox._abi`, ...), or None where it was not built."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None
