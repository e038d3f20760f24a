"""Reading and setting a project's quotas; a change reaches every node in its next
config instruction."""

from __future__ import annotations

from sqlalchemy.orm import Session

from edgefn.controlplane.audit import service as audit
from edgefn.controlplane.auth import service as auth
from edgefn.controlplane.auth.principal import Principal
from edgefn.controlplane.db import utcnow
from edgefn.controlplane.deployments import outbox
from edgefn.controlplane.quotas.models import ProjectQuota
from edgefn.controlplane.quotas.schemas import QuotasIn, QuotasOut


def _out(project_id: str, row: ProjectQuota | None) -> QuotasOut:
    if row is None:
        return QuotasOut(project_id=project_id)
    return QuotasOut(project_id=project_id, updated_at=row.updated_at, **row.spec().model_dump())


def get_quotas(session: Session, who: Principal, project_id: str) -> QuotasOut:
    """Any member of the project (and the admin) may read them."""
    auth.get_project(session, who, project_id)
    return _out(project_id, session.get(ProjectQuota, project_id))


def set_quotas(session: Session, who: Principal, project_id: str, body: QuotasIn) -> QuotasOut:
    auth.require_admin(who)
    auth.get_project(session, who, project_id)
    row = session.get(ProjectQuota, project_id)
    before = None if row is None else row.spec().model_dump()
    if row is None:
        row = ProjectQuota(project_id=project_id)
        session.add(row)
    row.max_concurrency = body.max_concurrency
    row.invocations_per_minute = body.invocations_per_minute
    row.cpu_seconds_per_day = body.cpu_seconds_per_day
    row.updated_at = utcnow()
    session.flush()
    audit.record(
        session, who, "project.quotas", target_type="project", target_id=project_id,
        project_id=project_id, details={"before": before, "after": body.model_dump()},
    )
    outbox.broadcast_config(session)
    session.commit()
    return _out(project_id, row)
