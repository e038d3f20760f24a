"""Deployments, their per-node state, and the outbox of per-node instructions."""
