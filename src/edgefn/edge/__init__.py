"""The edge node: HTTP in, route, pooled WebAssembly instance, HTTP out."""
