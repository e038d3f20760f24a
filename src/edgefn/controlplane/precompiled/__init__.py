"""Precompiled artifacts: each version compiled ahead for every engine tag the nodes
report, kept beside its `.wasm` (docs/engines.md, Precompiled artifacts)."""
