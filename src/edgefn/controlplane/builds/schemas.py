"""What the builds API answers."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

BuildState = Literal["queued", "running", "succeeded", "failed"]


class BuildOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    function_id: str
    language: str
    state: BuildState
    version: str
    allow_critical: bool
    source_sha256: str
    source_size: int
    error: str | None = None
    # The dependency scan's report (AssemblyScript builds): counts by severity,
    # or `{"scanned": false, "reason": ...}` where the registry did not answer.
    scan: dict[str, Any] | None = None
    # The module's sha256 once the version exists.
    sha256: str | None = None
    created_at: dt.datetime
    finished_at: dt.datetime | None = None
    # Set when a git push started the build (docs/builds.md, "Builds from git").
    git_commit: str | None = None
    auto_deploy: bool = False


class BuildDetail(BuildOut):
    log: str = ""
