"""Builds: source archives compiled by the builder's workers into new versions."""
