"""The negative return codes of the `edge` host functions (CONTRACT section 3)."""

NOT_FOUND = -1
DENIED = -2
QUOTA_EXCEEDED = -3
FAILED = -4
