"""The negative return codes of the `edge` host functions (docs/edge.md, Host functions)."""

NOT_FOUND = -1
DENIED = -2
QUOTA_EXCEEDED = -3
FAILED = -4
