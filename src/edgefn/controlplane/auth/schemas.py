"""Request and response bodies of the auth endpoints."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field

from edgefn.controlplane.auth.principal import Role
from edgefn.controlplane.fields import ID_PATTERN, Id, Line, Text, pattern

# An address with one `@` and no space or control character on either side.
EMAIL_PATTERN = pattern(
    r"^[^@\x00-\x20\x7f]+@[^@\x00-\x20\x7f]+$", "an email address (one `@`, no spaces)"
)


class StrictModel(BaseModel):
    """Request bodies refuse fields they do not know (400, not silently ignored),
    and floats that JSON cannot carry back (NaN, Infinity: Python's parser takes
    them). Integer fields are `JsonInt` (no `false` or `"5"`)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class LoginIn(StrictModel):
    email: Line = Field(min_length=3, max_length=320)
    password: Text = Field(min_length=1, max_length=1024)


class TokenOut(BaseModel):
    token: str
    token_type: str = "bearer"
    expires_at: dt.datetime


class ProjectIn(StrictModel):
    name: str = Field(min_length=1, max_length=100, pattern=ID_PATTERN)


class ProjectOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    name: str
    created_at: dt.datetime


class UserIn(StrictModel):
    email: str = Field(min_length=3, max_length=320, pattern=EMAIL_PATTERN)
    password: Text = Field(min_length=8, max_length=1024)


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    email: str
    created_at: dt.datetime


class MemberIn(StrictModel):
    user_id: Id
    role: Role


class MemberOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    user_id: str
    project_id: str
    role: str


class ApiKeyIn(StrictModel):
    name: Line = Field(min_length=1, max_length=100)
    role: Role = "developer"


class ApiKeyInfo(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    project_id: str
    name: str
    role: str
    created_at: dt.datetime


class ApiKeyOut(ApiKeyInfo):
    key: str = Field(description="The secret; shown only in this response.")
