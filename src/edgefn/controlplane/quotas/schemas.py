"""Bodies of the quotas endpoints: the edge's `QuotaSpec`, so both sides validate alike."""

from __future__ import annotations

import datetime as dt

from pydantic import ConfigDict

from edgefn.contract import QuotaSpec


class QuotasIn(QuotaSpec):
    """`PUT` replaces every field; one left out or null takes the nodes' default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class QuotasOut(QuotaSpec):
    project_id: str
    updated_at: dt.datetime | None = None
