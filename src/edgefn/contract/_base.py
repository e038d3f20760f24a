"""The base of every record of the contract."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Record(BaseModel):
    """No field but those declared, and immutable once read."""

    model_config = ConfigDict(extra="forbid", frozen=True)
