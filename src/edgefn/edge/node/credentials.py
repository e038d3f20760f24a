"""The control-plane credentials a node may be started with, and keeping them from its
workers: the workers run tenants' code, so they inherit none of them."""

from __future__ import annotations

import os
from collections.abc import MutableMapping

# Environment variables holding a credential of the control plane or its stores.
CREDENTIAL_ENV = (
    "EDGEFN_NODE_TOKEN",
    "EDGEFN_BOOTSTRAP_TOKEN",
    "EDGEFN_TOKEN",
    "EDGEFN_SECRET_KEY",
    "EDGEFN_S3_SECRET_ACCESS_KEY",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
)


def without_credentials(environ: MutableMapping[str, str]) -> dict[str, str]:
    """A copy of `environ` for a process that must hold no control-plane credential."""
    return {k: v for k, v in environ.items() if k not in CREDENTIAL_ENV}


def scrub_credentials(environ: MutableMapping[str, str] = os.environ) -> list[str]:
    """Remove the credentials from `environ` in place (the main process's, before it
    starts workers, which inherit it); returns the names removed."""
    removed = [name for name in CREDENTIAL_ENV if name in environ]
    for name in removed:
        del environ[name]
    return removed
