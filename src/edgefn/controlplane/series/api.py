"""HTTP surface of the series: read by whoever may read the function."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Query

from edgefn.controlplane.deps import DB, Caller, Ctx
from edgefn.controlplane.errors import CALLER, NotFound, ValidationFailed, responses
from edgefn.controlplane.fields import PathId
from edgefn.controlplane.series import service
from edgefn.controlplane.series.schemas import SeriesOut

router = APIRouter(tags=["functions"], responses=responses(*CALLER))

# RFC 3339 only: pydantic would also take a number as seconds since the epoch, which
# the schema does not say and a client would not mean.
_RFC3339 = (r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?"
            r"([Zz]|[+-][0-9]{2}:[0-9]{2})?$")


def _instant(name: str, value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        at = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValidationFailed(f"{name}: {value!r} is not an RFC 3339 time") from None
    return at if at.tzinfo is not None else at.replace(tzinfo=dt.UTC)


@router.get(
    "/functions/{function_id}/series", response_model=SeriesOut, responses=responses(NotFound)
)
def function_series(
    function_id: PathId,
    session: DB,
    ctx: Ctx,
    who: Caller,
    since: Annotated[str | None, Query(
        pattern=_RFC3339, description="Start (RFC 3339; default: an hour before `until`; "
        "held within the retention)")] = None,
    until: Annotated[str | None, Query(
        pattern=_RFC3339, description="End (RFC 3339; default: now)")] = None,
    step_s: Annotated[int, Query(ge=1, le=86_400, description="Seconds per point")] = 60,
) -> SeriesOut:
    return service.read(session, who, function_id, since=_instant("since", since),
                        until=_instant("until", until), step_s=step_s,
                        retention_s=ctx.settings.series_retention_s)
