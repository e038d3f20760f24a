"""Body of an audit row as the API shows it."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator


class AuditOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    at: str
    actor: str
    action: str
    target_type: str
    target_id: str | None
    project_id: str | None
    request_id: str | None
    details: dict[str, Any]
    prev_hash: str
    hash: str

    @field_validator("details", mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        # Stored as the exact text the hash covers; shown as the object it encodes.
        return json.loads(value) if isinstance(value, str) else value
