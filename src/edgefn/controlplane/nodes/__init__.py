"""Edge nodes: registration, node tokens, heartbeats, liveness."""
