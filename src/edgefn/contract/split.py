"""A deploy's traffic split: the share of a function's requests its new version
serves, the rest going to the version before it, sticky by a client key."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field, field_validator

from edgefn.contract._base import Record

# `cookie:NAME` or `header:NAME` (an HTTP token); "" is the client's address.
_KEY = re.compile(r"(cookie|header):[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}")

Percent = Annotated[int, Field(ge=0, le=100)]


class TrafficSplit(Record):
    """`percent` of the requests go to the deployed version, chosen by a hash of the
    client key `key` names, so one client keeps landing on the same version. 100 is
    the new version alone (a promote), 0 the previous one alone (a rollback)."""

    percent: Percent
    key: str = ""

    @field_validator("key")
    @classmethod
    def _key(cls, v: str) -> str:
        if v and not _KEY.fullmatch(v):
            raise ValueError("key is 'cookie:NAME', 'header:NAME' or empty (the client address)")
        kind, _, name = v.partition(":")
        # Header names are matched as the front hands them over: lower-case.
        return f"{kind}:{name.lower()}" if kind == "header" else v
