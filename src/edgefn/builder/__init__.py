"""Turning source into a module: safe archive unpacking, confined toolchain runs,
the per-language drivers, the dependency scan and the build queue. Shared by the
control plane's workers, `edgefn build-worker` and `edgefn build`."""

from edgefn.builder.errors import BuildError
from edgefn.builder.job import BuildLimits, BuildResult, BuildSpec, run_build
from edgefn.builder.toolchains import LANGUAGES, Probe, probes

__all__ = [
    "LANGUAGES",
    "BuildError",
    "BuildLimits",
    "BuildResult",
    "BuildSpec",
    "Probe",
    "probes",
    "run_build",
]
