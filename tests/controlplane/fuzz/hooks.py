"""Schemathesis hooks for the control plane's OpenAPI: how to make a value of
the formats the document names beyond JSON Schema's own (loaded by the CLI
through `hooks` in schemathesis.toml)."""

from __future__ import annotations

import schemathesis
from hypothesis import strategies as st

from edgefn.contract import EgressAllowlist
from edgefn.controlplane.errors import InvalidSelector
from edgefn.controlplane.selector import parse_selector

_NAMES = st.sampled_from(["region", "pop", "pop_id", "node_id", "tier", "latency"])
_VALUES = st.one_of(
    st.integers(-1000, 1000).map(str),
    st.sampled_from(["'tokyo'", '"paris"', "true", "false", "1.5", "''"]),
)
_COMPARISON = st.builds(
    lambda name, op, value: f"{name}{op}{value}",
    _NAMES,
    st.sampled_from(["==", "!=", "<", "<=", ">", ">="]),
    _VALUES,
)
_MEMBERSHIP = st.builds(
    lambda name, negated, values: f"{name} {'not ' if negated else ''}in [{','.join(values)}]",
    _NAMES,
    st.booleans(),
    st.lists(_VALUES, min_size=1, max_size=3),
)


def _combined(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.builds(lambda a, op, b: f"{a} {op} {b}", inner, st.sampled_from(["and", "or"]), inner),
        inner.map(lambda e: f"not ({e})"),
        inner.map(lambda e: f"({e})"),
    )


def _valid(source: str) -> bool:
    try:
        parse_selector(source)
    except InvalidSelector:
        return False
    return True


# What the pop_selector grammar accepts (controlplane/selector.py), checked by
# its own parser so that the strategy cannot drift from it.
schemathesis.openapi.format(
    "pop-selector",
    st.recursive(st.one_of(_COMPARISON, _MEMBERSHIP), _combined, max_leaves=4).filter(_valid),
)


def _allowed(entry: str) -> bool:
    try:
        EgressAllowlist((entry,))
    except ValueError:
        return False
    return True


_LABELS = st.from_regex(r"[a-z]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
# What an http_fetch allowlist entry may be, checked by `EgressAllowlist` itself.
schemathesis.openapi.format(
    "host-allowlist-entry",
    st.one_of(
        st.sampled_from(["*", "10.0.0.1", "2001:db8::1", "localhost"]),
        st.lists(_LABELS, min_size=1, max_size=3).map(".".join),
        st.lists(_LABELS, min_size=1, max_size=3).map(lambda labels: "*." + ".".join(labels)),
    ).filter(_allowed),
)

