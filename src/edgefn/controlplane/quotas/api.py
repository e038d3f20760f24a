"""HTTP surface of project quotas: `GET` for the project's members, `PUT` for the admin."""

from __future__ import annotations

from fastapi import APIRouter

from edgefn.controlplane.deps import DB, Caller
from edgefn.controlplane.errors import CALLER, NotFound, responses
from edgefn.controlplane.fields import PathId
from edgefn.controlplane.quotas import service
from edgefn.controlplane.quotas.schemas import QuotasIn, QuotasOut

router = APIRouter(tags=["quotas"], responses=responses(*CALLER))


@router.get("/projects/{project_id}/quotas", response_model=QuotasOut,
            responses=responses(NotFound))
def get_quotas(project_id: PathId, session: DB, who: Caller) -> QuotasOut:
    return service.get_quotas(session, who, project_id)


@router.put("/projects/{project_id}/quotas", response_model=QuotasOut,
            responses=responses(NotFound))
def set_quotas(project_id: PathId, body: QuotasIn, session: DB, who: Caller) -> QuotasOut:
    return service.set_quotas(session, who, project_id, body)
