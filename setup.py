"""The one native part of the package, beside pyproject.toml's metadata: wasmtime's
deadline thread (`src/edgefn/sandbox/_epochtick.c`), plain C loaded with ctypes.
Optional: where it does not build (no C compiler), the engine ticks from a Python
thread instead (`sandbox/epoch_timer.py`)."""

from setuptools import Extension, setup

setup(ext_modules=[
    Extension("edgefn.sandbox._epochtick", ["src/edgefn/sandbox/_epochtick.c"],
              extra_compile_args=["-O2"], optional=True),
])
