"""The `--cap-*` options that `edgefn edge serve` and `edgefn cp serve` share: the most
a function may ask for on a node or in a cluster (`edgefn.contract.ResourceCaps`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from edgefn.contract import ResourceCaps

F = TypeVar("F", bound=Callable[..., Any])

_DEFAULTS = ResourceCaps()
# option name -> (ResourceCaps field, what it caps)
_CAPS = {
    "cap_memory_pages": ("memory_pages", "memory_pages (64 KiB pages)"),
    "cap_execution_ms": ("max_execution_ms", "max_execution_ms"),
    "cap_response_bytes": ("max_response_bytes", "max_response_bytes"),
    "cap_request_bytes": ("max_request_bytes", "max_request_bytes (request body)"),
    "cap_hot_instances": ("max_hot_instances", "min/max_hot_instances"),
    "cap_fetch_response_bytes": ("max_fetch_response_bytes", "http_fetch.max_response_bytes"),
}


def cap_options(f: F) -> F:
    for option, (field, what) in reversed(_CAPS.items()):
        f = click.option(
            "--" + option.replace("_", "-"),
            option,
            type=int,
            help=f"Largest {what} a function may ask for [{getattr(_DEFAULTS, field)}].",
        )(f)
    return f


def pop_caps(flags: dict[str, Any]) -> dict[str, Any]:
    """Take the `--cap-*` values out of `flags`: `{"caps": {...}}` with those given (the
    settings merge them over EDGEFN_CAPS), or nothing."""
    given = {
        field: value
        for option, (field, _) in _CAPS.items()
        if (value := flags.pop(option, None)) is not None
    }
    return {"caps": given} if given else {}
