"""Routes: which host and path reach which function."""
