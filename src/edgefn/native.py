"""The package's optional C extensions (`setup.py`): each is the fast half of a
module whose Python counterpart stays the version of record and runs wherever the
extension was not built, or where `EDGEFN_NATIVE=off` turns them all off (read at
import: a process started with it runs Python only, to rule the C out when
looking for a fault)."""

from __future__ import annotations

import importlib
import os
from typing import Any


def enabled() -> bool:
    """Whether the extensions may be used in this process (`EDGEFN_NATIVE`, default on)."""
    return os.environ.get("EDGEFN_NATIVE", "on").strip().lower() not in ("off", "0", "false")


def part(name: str) -> Any:
    """The extension `name` (`edgefn.sandbox._abi`, ...), or None where it was not built
    or the extensions are off."""
    if not enabled():
        return None
    try:
        return importlib.import_module(name)
    except ImportError:
        return None
