"""The node's main process: the control-plane link, the desired state, the worker supervisor."""
