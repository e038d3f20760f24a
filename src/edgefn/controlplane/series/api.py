"""HTTP surface of the series: read by whoever may read the function."""

from __future__ import annotations

import datetime as dt
import re
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
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?"
    r"([Zz]|([+-])([0-9]{2}):([0-9]{2}))")


def _instant(name: str, value: str | None) -> dt.datetime | None:
    """`value` as an aware time; RFC 3339's year 0000 and leap second are held to
    the nearest instant Python has (the window is clamped to the retention anyway)."""
    if value is None:
        return None
    m = _RFC3339.fullmatch(value)
    try:
        if m is None:
            raise ValueError
        year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
        micro = int((m.group(7) or ".0")[1:7].ljust(6, "0"))
        tz = dt.UTC
        if m.group(9):
            sign = -1 if m.group(9) == "-" else 1
            tz = dt.timezone(sign * dt.timedelta(hours=int(m.group(10)),
                                                 minutes=int(m.group(11))))
        return dt.datetime(max(year, 1), month, day, hour, minute, min(second, 59), micro,
                           tzinfo=tz)
    except ValueError:
        raise ValidationFailed(f"{name}: {value!r} is not an RFC 3339 time") from None


@router.get(
    "/functions/{function_id}/series", response_model=SeriesOut, responses=responses(NotFound)
)
def function_series(
    function_id: PathId,
    session: DB,
    ctx: Ctx,
    who: Caller,
    since: Annotated[str | None, Query(
        description="Start (RFC 3339; default: an hour before `until`; held within the "
        "retention)", json_schema_extra={"format": "date-time"})] = None,
    until: Annotated[str | None, Query(
        description="End (RFC 3339; default: now)",
        json_schema_extra={"format": "date-time"})] = None,
    step_s: Annotated[int, Query(ge=1, le=86_400, description="Seconds per point")] = 60,
) -> SeriesOut:
    return service.read(session, who, function_id, since=_instant("since", since),
                        until=_instant("until", until), step_s=step_s,
                        retention_s=ctx.settings.series_retention_s)
