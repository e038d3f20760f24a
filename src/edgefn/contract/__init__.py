"""What the control plane and the edge agree on: the function policy, routes, limit
bounds, quotas, the route tenancy rule, and the instructions a node is sent.

Both halves import this package and neither imports the other
(tests/test_layering.py); it imports neither of them.
"""

from edgefn.contract.data import DataArchive
from edgefn.contract.egress_allowlist import EgressAllowlist, InvalidHost, parse_host
from edgefn.contract.health import LATENCY_BOUNDS, VersionStats, p99
from edgefn.contract.instructions import (
    AckState,
    ConfigInstruction,
    DeployInstruction,
    Instruction,
    InstructionAck,
    InstructionType,
    LoadState,
    PrecompiledCode,
    TraceContext,
    UndeployInstruction,
)
from edgefn.contract.limits import (
    ExecutionMs,
    MemoryPages,
    QuotaSpec,
    ResourceCaps,
    ResponseBytes,
)
from edgefn.contract.numbers import (
    JSON_INT_MAX,
    Count,
    CpuSeconds,
    HotInstances,
    IdleTimeout,
    JsonInt,
    RequestBytes,
    json_integer,
)
from edgefn.contract.policy import (
    MAX_SECRETS_PER_FUNCTION,
    POLICY_FIELDS,
    FunctionPolicy,
    HttpFetchPolicy,
    Isolation,
    KvPolicy,
    SecretName,
)
from edgefn.contract.routes import HTTP_METHODS, RouteSpec
from edgefn.contract.split import TrafficSplit

__all__ = [
    "HTTP_METHODS",
    "JSON_INT_MAX",
    "LATENCY_BOUNDS",
    "MAX_SECRETS_PER_FUNCTION",
    "POLICY_FIELDS",
    "AckState",
    "ConfigInstruction",
    "Count",
    "CpuSeconds",
    "DataArchive",
    "DeployInstruction",
    "EgressAllowlist",
    "ExecutionMs",
    "FunctionPolicy",
    "HotInstances",
    "HttpFetchPolicy",
    "IdleTimeout",
    "Instruction",
    "InstructionAck",
    "InstructionType",
    "InvalidHost",
    "Isolation",
    "JsonInt",
    "KvPolicy",
    "LoadState",
    "MemoryPages",
    "PrecompiledCode",
    "QuotaSpec",
    "RequestBytes",
    "ResourceCaps",
    "ResponseBytes",
    "RouteSpec",
    "SecretName",
    "TraceContext",
    "TrafficSplit",
    "UndeployInstruction",
    "VersionStats",
    "json_integer",
    "p99",
    "parse_host",
]
