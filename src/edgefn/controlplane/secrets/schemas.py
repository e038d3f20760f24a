"""Request and response bodies of secrets: values go in, never come out (but to a node)."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from edgefn.contract import MAX_SECRETS_PER_FUNCTION, SecretName
from edgefn.controlplane.auth.schemas import StrictModel

MAX_SECRET_BYTES = 64 * 1024


class SecretIn(StrictModel):
    name: SecretName
    # SecretStr: a value never shows in a repr, a validation error or a log line.
    value: SecretStr = Field(max_length=MAX_SECRET_BYTES)


class SecretOut(BaseModel):
    """Names and metadata only."""

    model_config = ConfigDict(from_attributes=True)
    name: str
    project_id: str
    created_at: dt.datetime
    updated_at: dt.datetime
    updated_by: str


class NodeSecretsIn(StrictModel):
    function_id: str = Field(min_length=1, max_length=36)
    names: list[SecretName] = Field(max_length=MAX_SECRETS_PER_FUNCTION)


class NodeSecretsOut(BaseModel):
    """For a node: the values of the names asked for that the function lists;
    `missing` are listed but not set in the project; `denied` are not listed."""

    secrets: dict[str, str]
    missing: list[str]
    denied: list[str]
