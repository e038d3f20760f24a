"""HTTP surface of precompiled artifacts: what was compiled ahead for a version, per
engine tag, for whoever may read the function. The code itself is only ever handed
to nodes, as signed URLs inside their deploy instructions."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict
from sqlalchemy import select

from edgefn.controlplane.deps import DB, Caller
from edgefn.controlplane.errors import CALLER, NotFound, responses
from edgefn.controlplane.fields import SEMVER_PATTERN, PathId
from edgefn.controlplane.functions import service as functions
from edgefn.controlplane.precompiled.models import PrecompiledArtifact

router = APIRouter(tags=["functions"], responses=responses(*CALLER))


class PrecompiledOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    engine_tag: str
    state: str
    sha256: str | None
    size: int | None
    compile_ms: int | None
    error: str | None
    created_at: dt.datetime


@router.get(
    "/functions/{function_id}/versions/{version}/precompiled",
    response_model=list[PrecompiledOut],
    responses=responses(NotFound),
)
def list_precompiled(
    function_id: PathId,
    version: Annotated[str, Path(max_length=100, pattern=SEMVER_PATTERN)],
    session: DB,
    who: Caller,
) -> list[PrecompiledOut]:
    """The version's code compiled ahead per engine tag (`ready`), or why not (`failed`);
    a tag with no row is not reported by any node, not produced by this control plane,
    or not done yet."""
    fn = functions.get_function(session, who, function_id)
    rows = session.scalars(
        select(PrecompiledArtifact)
        .where(PrecompiledArtifact.function_id == fn.id, PrecompiledArtifact.version == version)
        .order_by(PrecompiledArtifact.engine_tag)
    )
    return [PrecompiledOut.model_validate(r) for r in rows]
