"""HTTP surface of the audit log: read-only, newest first. Admins see every row,
members the rows of their projects."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from edgefn.controlplane.audit import service
from edgefn.controlplane.audit.schemas import AuditOut
from edgefn.controlplane.deps import DB, Caller
from edgefn.controlplane.errors import CALLER, responses
from edgefn.controlplane.pagination import Page, describe_page, page_params

router = APIRouter(tags=["audit"], responses=responses(*CALLER))


@router.get("/audit", response_model=list[AuditOut])
def list_audit(
    request: Request,
    response: Response,
    session: DB,
    who: Caller,
    page: Annotated[Page, Depends(page_params)],
) -> list[AuditOut]:
    rows, total = service.list_rows(
        session, projects=who.visible_projects(), limit=page.limit, offset=page.offset
    )
    describe_page(request, response, page, total)
    return [AuditOut.model_validate(r) for r in rows]
