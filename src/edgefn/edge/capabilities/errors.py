"""Internal errors of the capabilities; each carries the host-function code the guest gets.

    CapabilityError
    ├── Denied          the function's policy refuses the call (-2)
    ├── QuotaExceeded   a size or count limit was hit (-3)
    └── CallFailed      malformed input, a network error or a timeout (-4)

They never reach a guest: a capability's per-call method returns `exc.code`.
"""

from __future__ import annotations

from edgefn.sandbox.hostcodes import DENIED, FAILED, QUOTA_EXCEEDED


class CapabilityError(Exception):
    code = FAILED


class Denied(CapabilityError):
    code = DENIED


class QuotaExceeded(CapabilityError):
    code = QUOTA_EXCEEDED


class CallFailed(CapabilityError):
    code = FAILED
