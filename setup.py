"""The native parts of the package, beside pyproject.toml's metadata: every `_*.c`
under `src/edgefn/` is the extension of the same dotted name. Each is optional:
where one does not build (no C compiler), its Python counterpart runs instead.

- `sandbox/_epochtick.c`: wasmtime's deadline thread, plain C loaded with ctypes
  (else a Python thread ticks, `sandbox/epoch_timer.py`);
- `sandbox/_abi.c`: the edge-v1 response read and the request's header block
  written on every call (else `abi.py`'s);
- `sandbox/_edgecall.c`: an edge-v1 call on wasmtime in one C call, a suspended
  guest's call up to its first wait and its answer, and an instance's store and
  instantiation; the same call on WasmEdge
  (else a ctypes call a step, in the engines' Python);
- `edge/_logline.c`: the per-invocation log line (else `logs.py`'s);
- `edge/_quota.c`: a project's quota admitted and released (else `quotas.py`'s);
- `edge/worker/_http1.c`: a plain HTTP/1.1 request that arrives whole, read in one
  call (else httptools, which reads every other);
- `edge/worker/_answer.c`: the HTTP/1.1 answer (else `front.py`'s).
"""

from pathlib import Path

from setuptools import Extension, setup

SRC = Path("src")


def native_parts(src: Path) -> list[Extension]:
    """`edgefn/<package>/_<name>.c` under `src` as the extension `edgefn.<package>._<name>`."""
    # No fused multiply-add: `_logline.c` rounds times exactly as Python does.
    return [Extension(".".join(c.relative_to(src).with_suffix("").parts), [c.as_posix()],
                      extra_compile_args=["-O2", "-ffp-contract=off"], optional=True)
            for c in sorted(src.glob("edgefn/**/_*.c"))]


setup(ext_modules=native_parts(SRC))
