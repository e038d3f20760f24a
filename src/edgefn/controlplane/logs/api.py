"""HTTP surface of function logs: the recent lines of a function, and following them.

A function's logs are readable by whoever may read the function (404 to other
projects, 403 to node tokens). The answer is NDJSON: each line one JSON log line
as the node wrote it (redacted), a `{"type": "dropped", ...}` line where this
follower fell behind and lines were left out, and blank lines to keep an idle
follow alive through proxies.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from edgefn.controlplane.deps import DB, Caller, Ctx
from edgefn.controlplane.errors import CALLER, NotFound, responses
from edgefn.controlplane.fields import PathId
from edgefn.controlplane.functions import service as functions

router = APIRouter(tags=["functions"], responses=responses(*CALLER))
NDJSON = "application/x-ndjson"
KEEPALIVE_S = 15.0
_BATCH = 500


@router.get(
    "/functions/{function_id}/logs",
    response_class=StreamingResponse,
    responses={200: {"content": {NDJSON: {"schema": {"type": "string"}}},
                     "description": "JSON log lines, one a line"},
               **responses(NotFound)},
)
def function_logs(
    function_id: PathId,
    session: DB,
    ctx: Ctx,
    who: Caller,
    follow: Annotated[bool, Query(description="keep streaming new lines as they arrive")] = False,
    tail: Annotated[int, Query(ge=0, le=1000, description="recent lines sent first")] = 100,
) -> StreamingResponse:
    """The function's recent JSON log lines from every node; with `follow=true`, then
    each new line as a node sends it, until the client goes away."""
    functions.get_function(session, who, function_id)  # 404/403 unless the caller may read it
    session.rollback()  # no connection held while streaming
    hub = ctx.logs

    async def lines() -> AsyncIterator[str]:
        recent = hub.recent(function_id, tail)
        if not follow:
            for line in recent:
                yield line + "\n"
            return
        with hub.follow(function_id) as follower:
            for line in recent:
                yield line + "\n"
            missed = 0
            while not ctx.notifier.closed:
                try:
                    line = await asyncio.wait_for(follower.queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    yield "\n"
                    continue
                batch = [line]
                with contextlib.suppress(asyncio.QueueEmpty):
                    while len(batch) < _BATCH:  # what else is waiting, in one write
                        batch.append(follower.queue.get_nowait())
                if follower.missed != missed:
                    note = {"type": "dropped", "count": follower.missed - missed}
                    batch.insert(0, json.dumps(note))
                    missed = follower.missed
                yield "\n".join(batch) + "\n"

    return StreamingResponse(lines(), media_type=NDJSON)
