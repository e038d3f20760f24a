"""Who a request acts as, once its bearer token has been checked."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

ROLE_RANK = {"viewer": 1, "developer": 2, "owner": 3}
Role = Literal["viewer", "developer", "owner"]


@dataclass(frozen=True)
class Principal:
    kind: Literal["admin", "user", "api_key", "node", "anonymous"]
    id: str
    roles: Mapping[str, str] = field(default_factory=dict)
    request_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.kind == "admin"

    @property
    def actor(self) -> str:
        """How the audit log names this caller."""
        return self.kind if self.kind == "admin" else f"{self.kind}:{self.id}"

    def role_in(self, project_id: str) -> str | None:
        if self.is_admin:
            return "owner"
        return self.roles.get(project_id)

    def has_role(self, project_id: str, minimum: str) -> bool:
        role = self.role_in(project_id)
        return role is not None and ROLE_RANK[role] >= ROLE_RANK[minimum]

    def visible_projects(self) -> set[str] | None:
        """Project ids this caller may read; None means every project (admin)."""
        return None if self.is_admin else set(self.roles)
