"""Errors of the builder; each carries the build state it leads to.

    BuildError                  a build that did not produce a module
    ├── ArchiveRefused          the source archive is hostile, malformed or too big
    ├── UnknownLanguage         no driver for the language asked for
    ├── ToolchainMissing        the driver's compiler is not installed here
    ├── CompileFailed           the compiler ran and failed (its output is in the log)
    ├── LimitExceeded           the time limit or the output size limit was passed
    ├── VulnerableDependencies  the dependency scan found critical advisories
    ├── RepositoryRefused       a repository URL this builder will not fetch from
    └── FetchFailed             git could not fetch the commit asked for

Library errors (tarfile, zipfile, OSError, subprocess) are translated where they
are raised, in `archive` and `jail`.
"""

from __future__ import annotations


class BuildError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ArchiveRefused(BuildError):
    pass


class UnknownLanguage(BuildError):
    pass


class ToolchainMissing(BuildError):
    pass


class CompileFailed(BuildError):
    pass


class LimitExceeded(BuildError):
    pass


class VulnerableDependencies(BuildError):
    pass


class RepositoryRefused(BuildError):
    pass


class FetchFailed(BuildError):
    pass
