"""Bodies of git links and of the push webhook's answer; the webhook secret goes
in and never comes out."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import BaseModel, Field, SecretStr, StringConstraints

from edgefn.builder import LANGUAGES
from edgefn.controlplane.auth.schemas import StrictModel
from edgefn.controlplane.builds.schemas import BuildOut
from edgefn.controlplane.fields import LINE_PATTERN, pattern

BRANCH_PATTERN = pattern(
    r"^[A-Za-z0-9_][A-Za-z0-9._/-]*$", "a branch name of letters, digits, `.`, `_`, `-` and `/`"
)
SUBDIRECTORY_PATTERN = pattern(
    r"^[A-Za-z0-9._/-]*$", "a folder of the repository: letters, digits, `.`, `_`, `-` and `/`"
)


class GitLinkIn(StrictModel):
    repository: Annotated[
        str, StringConstraints(min_length=1, max_length=1000, pattern=LINE_PATTERN)
    ] = Field(description="the repository's URL, e.g. https://github.com/acme/hello.git")
    branch: Annotated[
        str, StringConstraints(min_length=1, max_length=255, pattern=BRANCH_PATTERN)
    ] = "main"
    subdirectory: Annotated[
        str, StringConstraints(max_length=500, pattern=SUBDIRECTORY_PATTERN)
    ] = Field("", description="the folder the function's source is in; '' for the root")
    language: str = Field(json_schema_extra={"enum": list(LANGUAGES)})
    # Required when the link is made; left out later, the stored one is kept.
    secret: SecretStr | None = Field(
        None, min_length=16, max_length=256, description="the webhook's HMAC secret"
    )
    auto_deploy: bool = False


class GitLinkOut(BaseModel):
    function_id: str
    repository: str
    branch: str
    subdirectory: str
    language: str
    auto_deploy: bool
    # Where the repository's push webhook goes (this control plane's public URL).
    hook_url: str
    created_at: dt.datetime
    updated_at: dt.datetime


HookStatus = Literal["building", "ignored", "duplicate", "failed"]


class HookResult(BaseModel):
    function_id: str
    status: HookStatus
    reason: str | None = None
    build: BuildOut | None = None


class HookOut(BaseModel):
    """What one push delivery did to each function linked to its repository."""

    delivery: str | None
    results: list[HookResult]
