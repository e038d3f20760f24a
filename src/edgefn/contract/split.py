"""A deploy's traffic split: the share of a function's requests its new version
serves, the rest going to the version before it, sticky by a client key."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator, Field, field_validator

from edgefn.contract._base import Record
from edgefn.contract.numbers import json_integer

# `cookie:NAME` or `header:NAME` (an HTTP token); "" is the client's address. In the
# field's schema too, so that the API's OpenAPI states what it accepts.
_KEY_PATTERN = r"^((cookie|header):[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128})?$"
_KEY = re.compile(_KEY_PATTERN)

Percent = Annotated[int, Field(ge=0, le=100), BeforeValidator(json_integer)]


class TrafficSplit(Record):
    """`percent` of the requests go to the deployed version, chosen by a hash of the
    client key `key` names, so one client keeps landing on the same version. 100 is
    the new version alone (a promote), 0 the previous one alone (a rollback)."""

    percent: Percent
    key: str = Field(default="", pattern=_KEY_PATTERN)

    @field_validator("key")
    @classmethod
    def _key(cls, v: str) -> str:
        if not _KEY.fullmatch(v):
            raise ValueError("key is 'cookie:NAME', 'header:NAME' or empty (the client address)")
        kind, _, name = v.partition(":")
        # Header names are matched as the front hands them over: lower-case.
        return f"{kind}:{name.lower()}" if kind == "header" else v
