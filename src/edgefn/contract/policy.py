"""What a function may use and how its instances are kept, deny by default: the same
fields in `function.json`, on a control-plane function and in its deploy instruction."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StrictBool, WithJsonSchema, field_validator

from edgefn.contract._base import Record
from edgefn.contract.egress_allowlist import EgressAllowlist
from edgefn.contract.numbers import HotInstances, IdleTimeout, JsonInt, Limit, RequestBytes

Isolation = Literal["reuse", "per-request"]

# `EgressAllowlist` decides what an entry may be, which no pattern states; the
# OpenAPI document names it as a format.
AllowEntry = Annotated[
    str,
    WithJsonSchema(
        {
            "type": "string",
            "format": "host-allowlist-entry",
            "description": "`*`, `*.example.com`, a host name, or an IP address in canonical form",
        }
    ),
]

# A secret's name: what `secret_get` asks for and `POST /projects/{id}/secrets` stores.
SecretName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
MAX_SECRETS_PER_FUNCTION = 64


class KvPolicy(Record):
    enabled: StrictBool = False
    max_key_bytes: Limit = 512
    max_value_bytes: Limit = 64 * 1024
    max_keys: Limit = 10_000
    max_ttl_seconds: Limit = 30 * 86400


class HttpFetchPolicy(Record):
    # Hosts the function may reach; `*.example.com` matches subdomains. Empty: none.
    allow_hosts: tuple[AllowEntry, ...] = Field(default=(), max_length=256)
    # Asks for the non-public networks the node's operator opened (`edgefn edge serve
    # --allow-private-egress CIDR`); alone, on a node that opened none, it reaches nothing
    # more (docs/security.md, Egress).
    allow_private: StrictBool = False
    max_response_bytes: Limit = 1024 * 1024
    max_redirects: JsonInt = Field(default=3, ge=0, le=10)

    @field_validator("allow_hosts")
    @classmethod
    def _allow_hosts(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        """`*`, `*.domain`, a name or an IP address; what `EgressAllowlist` reads, checked by it."""
        normalized = tuple(entry.strip().lower() for entry in v)
        EgressAllowlist(normalized)  # raises ValueError naming the bad entry
        return normalized


class FunctionPolicy(Record):
    """What a function may use and how its instances are kept, deny by default.

    The same fields in `function.json`, on a control-plane function and in its
    deploy instruction; the control plane validates them with this model.
    """

    max_request_bytes: RequestBytes | None = None
    kv: KvPolicy = KvPolicy()
    http_fetch: HttpFetchPolicy = HttpFetchPolicy()
    isolation: Isolation = "reuse"
    min_hot_instances: HotInstances = 1
    max_hot_instances: HotInstances = 10
    idle_timeout_s: IdleTimeout = 300.0
    # Names of the project's secrets the function may read with `secret_get`; values
    # never travel with the spec (docs/security.md, Secrets).
    secrets: tuple[SecretName, ...] = Field(default=(), max_length=MAX_SECRETS_PER_FUNCTION)
    # WAGI only: the argv template (`${SCRIPT_NAME}`, `${ARGS}`, docs/wagi.md); None:
    # WAGI's default, the request path then the query's `&`-separated items.
    argv: str | None = Field(default=None, max_length=4096, pattern=r"^[^\x00-\x1f\x7f]*$")

    @field_validator("secrets")
    @classmethod
    def _secrets(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(sorted(set(v)))


POLICY_FIELDS: tuple[str, ...] = tuple(FunctionPolicy.model_fields)
