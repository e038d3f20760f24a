"""HTTP surface of the series: read by whoever may read the function."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Query

from edgefn.controlplane.deps import DB, Caller, Ctx
from edgefn.controlplane.errors import CALLER, NotFound, responses
from edgefn.controlplane.fields import PathId
from edgefn.controlplane.series import service
from edgefn.controlplane.series.schemas import SeriesOut

router = APIRouter(tags=["functions"], responses=responses(*CALLER))


@router.get(
    "/functions/{function_id}/series", response_model=SeriesOut, responses=responses(NotFound)
)
def function_series(
    function_id: PathId,
    session: DB,
    ctx: Ctx,
    who: Caller,
    since: Annotated[dt.datetime | None, Query(
        description="Start (RFC 3339; default: an hour before `until`; held within the "
        "retention)")] = None,
    until: Annotated[dt.datetime | None, Query(description="End (default: now)")] = None,
    step_s: Annotated[int, Query(ge=1, le=86_400, description="Seconds per point")] = 60,
) -> SeriesOut:
    return service.read(session, who, function_id, since=since, until=until, step_s=step_s,
                        retention_s=ctx.settings.series_retention_s)
