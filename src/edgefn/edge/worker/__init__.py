"""An HTTP worker process: the front, the runtime, instance pools, routing, host functions."""
