"""Errors of the key-value stores; redis-py and sqlite3 exceptions never leave their adapter.

    KvError
    ├── KvUnavailable      the backend failed, timed out or cannot be reached
    └── KvQuotaExceeded    a put would take the namespace past its `max_keys`
"""

from __future__ import annotations


class KvError(Exception):
    """Base of every key-value store error."""


class KvUnavailable(KvError):
    """The backend did not answer correctly; the call may succeed later."""


class KvQuotaExceeded(KvError):
    """The namespace already holds `max_keys` live keys and the key is a new one."""
