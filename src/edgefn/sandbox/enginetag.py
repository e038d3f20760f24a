"""Engine tags: one string naming everything that makes compiled code loadable.

Machine code compiled by one engine loads only into an engine of the same name,
version and code-affecting settings, on a CPU with the features it was compiled
for. A tag pins all of it, so a control plane that precompiles a module and a
node that loads it agree by comparing two strings (docs/engines.md, Precompiled
artifacts); the node's own compile cache files compiled code by the same tag.
"""

from __future__ import annotations

import hashlib
import platform
import re
from functools import cache
from pathlib import Path

# The CPU features compilers choose instructions by (Cranelift's and LLVM's host
# detection on x86-64 and aarch64). Features outside this list do not change code.
_CODE_FEATURES = frozenset({
    "sse3", "pni", "ssse3", "sse4_1", "sse4_2", "popcnt", "avx", "avx2", "bmi1", "bmi2",
    "lzcnt", "abm", "fma", "f16c", "movbe", "avx512f", "avx512vl", "avx512dq", "avx512bw",
    "avx512cd", "avx512vbmi", "avx512bitalg", "avx512vpopcntdq", "cmpxchg16b", "cx16",
    "asimd", "atomics", "lse", "fp16", "sha3", "sve", "paca", "pacg", "bti",
})
_TAG_TEXT = re.compile(r"[^A-Za-z0-9._-]+")


@cache
def host_cpu() -> str:
    """`<machine>-<digest of its code-affecting CPU features>` (just the machine where
    the features cannot be read): part of every tag of code compiled on this host."""
    machine = platform.machine().lower() or "unknown"
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return machine
    features: set[str] = set()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            features.update(value.split())
            break  # every core of one host reports the same
    wanted = sorted(features & _CODE_FEATURES)
    return f"{machine}-{hashlib.sha256(' '.join(wanted).encode()).hexdigest()[:8]}"


def engine_tag(*parts: str) -> str:
    """A tag of `parts` (engine, version, settings) and the host CPU, in the characters
    an object key and a file name take."""
    return _TAG_TEXT.sub("_", "-".join([*parts, host_cpu()]))


__all__ = ["engine_tag", "host_cpu"]
