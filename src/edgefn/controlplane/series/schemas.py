"""What `GET /functions/{id}/series` answers."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field


class SeriesPoint(BaseModel):
    at: dt.datetime = Field(description="Start of the step.")
    requests: int
    errors: int
    p99_s: float | None = Field(
        description="Upper bound of the latency bucket holding the 99th percentile of the "
        "step's requests over every node (at most 10.0: slower ones count as 10 s); null "
        "without latency figures."
    )


class VersionSeries(BaseModel):
    version: str
    points: list[SeriesPoint] = Field(description="Steps with requests only, oldest first.")


class SeriesOut(BaseModel):
    function_id: str
    since: dt.datetime = Field(description="Start of the first step.")
    until: dt.datetime
    step_s: int = Field(description="The step used: the one asked for, rounded up to a "
                        "multiple of bucket_s and raised to keep at most 1440 steps.")
    bucket_s: int = Field(description="The stored samples' granularity.")
    versions: list[VersionSeries]
