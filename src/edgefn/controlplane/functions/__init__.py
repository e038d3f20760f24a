"""Functions and their immutable versions (the registry)."""
