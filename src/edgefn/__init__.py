"""edgefn: WebAssembly HTTP handlers on edge nodes, run from a control plane."""

__version__ = "0.1.0"
