"""Functions' log lines from every node, kept briefly and followed (`edgefn logs`)."""
