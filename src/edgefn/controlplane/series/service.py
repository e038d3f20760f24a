"""Samples from the nodes' reports and the series read from them.

A node reports each version's figures since it began serving it (`VersionStats`);
what changed since its previous report is one sample of the bucket the report
arrived in. Counters lower than before (the node restarted, or serves the version
afresh after serving another) started again: the new figures are the sample.
Samples are kept `series_retention_s` (pruned by a maintenance duty).
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from edgefn.contract import JSON_INT_MAX, LATENCY_BOUNDS, VersionStats, p99
from edgefn.controlplane.auth.principal import Principal
from edgefn.controlplane.db import utcnow
from edgefn.controlplane.functions.models import Function
from edgefn.controlplane.functions.service import get_function
from edgefn.controlplane.series.models import VersionSample
from edgefn.controlplane.series.schemas import SeriesOut, SeriesPoint, VersionSeries

BUCKET_S = 10
MAX_POINTS = 1440
DEFAULT_WINDOW = dt.timedelta(hours=1)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# The largest finite bound: a p99 in the +Inf bucket reads as this.
_SLOWEST_S = LATENCY_BOUNDS[-2]


@dataclass
class _Sample:
    requests: int = 0
    errors: int = 0
    latency: list[int] = field(default_factory=list)

    def add(self, requests: int, errors: int, latency: list[int]) -> None:
        self.requests += requests
        self.errors += errors
        if latency:
            mine = self.latency or [0] * len(latency)
            self.latency = [a + b for a, b in zip(mine, latency, strict=False)]


def _since(new: VersionStats, old: VersionStats | None) -> _Sample:
    """`new` minus `old`, or `new` itself when its counters started again."""
    errors, old_errors = sum(new.errors.values()), sum((old.errors if old else {}).values())
    if (old is None or new.count < old.count or errors < old_errors
            or len(new.latency) != len(old.latency)
            or any(a < b for a, b in zip(new.latency, old.latency, strict=True))):
        return _Sample(new.count, errors, list(new.latency))
    return _Sample(new.count - old.count, errors - old_errors,
                   [a - b for a, b in zip(new.latency, old.latency, strict=True)])


def bucket_of(at: dt.datetime, step_s: int = BUCKET_S) -> dt.datetime:
    seconds = (at - _EPOCH) // dt.timedelta(seconds=1)
    return _EPOCH + dt.timedelta(seconds=seconds - seconds % step_s)


def record(
    session: Session,
    node_id: str,
    before: dict[str, VersionStats],
    reports: list[VersionStats],
    now: dt.datetime,
) -> None:
    """Add to this bucket's samples of the node what each report adds to `before`
    (the node's previous reports by key). Functions unknown here are left out.
    The caller commits."""
    samples = {}
    for stats in reports:
        sample = _since(stats, before.get(stats.key))
        if sample.requests or sample.errors:
            samples[stats.function_id, stats.version] = sample
    if not samples:
        return
    known = set(session.scalars(
        select(Function.id).where(Function.id.in_({fid for fid, _ in samples}))))
    at = bucket_of(now)
    for (fid, version), sample in samples.items():
        if fid not in known:
            continue
        row = session.get(VersionSample, (fid, at, version, node_id))
        if row is None:
            row = VersionSample(function_id=fid, at=at, version=version, node_id=node_id,
                                requests=0, errors=0, latency=[])
            session.add(row)
        total = _Sample(row.requests, row.errors, list(row.latency or []))
        total.add(sample.requests, sample.errors, sample.latency)
        row.requests = min(total.requests, JSON_INT_MAX)
        row.errors = min(total.errors, JSON_INT_MAX)
        row.latency = [min(n, JSON_INT_MAX) for n in total.latency]


def prune(session: Session, *, retention_s: float, now: dt.datetime | None = None) -> int:
    """Drop the samples older than the retention. A duty: the caller commits."""
    cutoff = (now or utcnow()) - dt.timedelta(seconds=retention_s)
    result = session.execute(delete(VersionSample).where(VersionSample.at < cutoff))
    return int(getattr(result, "rowcount", 0) or 0)


def _clamp(at: dt.datetime, low: dt.datetime, high: dt.datetime) -> dt.datetime:
    if at.tzinfo is None:
        at = at.replace(tzinfo=dt.UTC)
    return min(max(at, low), high)


def read(
    session: Session,
    who: Principal,
    function_id: str,
    *,
    since: dt.datetime | None,
    until: dt.datetime | None,
    step_s: int,
    retention_s: float,
    now: dt.datetime | None = None,
) -> SeriesOut:
    """Each version's requests, errors and p99 per step over [since, until), summed
    over the nodes; the window is held within the retention (default: the last hour)."""
    fn = get_function(session, who, function_id)
    now = now or utcnow()
    oldest = now - dt.timedelta(seconds=retention_s)
    end = now if until is None else _clamp(until, oldest, now)
    start = max(end - DEFAULT_WINDOW, oldest) if since is None else _clamp(since, oldest, end)
    step = max(BUCKET_S, math.ceil(step_s / BUCKET_S) * BUCKET_S)
    span = (end - start).total_seconds()
    if span / step > MAX_POINTS:
        step = math.ceil(span / MAX_POINTS / BUCKET_S) * BUCKET_S
    start = bucket_of(start, step)
    rows = session.execute(
        select(VersionSample.version, VersionSample.at, VersionSample.requests,
               VersionSample.errors, VersionSample.latency)
        .where(VersionSample.function_id == fn.id, VersionSample.at >= start,
               VersionSample.at < end)
        .order_by(VersionSample.at)
    )
    steps: dict[str, dict[int, _Sample]] = defaultdict(lambda: defaultdict(_Sample))
    for version, at, requests, errors, latency in rows:
        i = int((at - start).total_seconds()) // step
        steps[version][i].add(requests, errors, list(latency or []))
    return SeriesOut(
        function_id=fn.id, since=start, until=end, step_s=step, bucket_s=BUCKET_S,
        versions=[
            VersionSeries(version=version, points=[
                SeriesPoint(at=start + dt.timedelta(seconds=i * step), requests=s.requests,
                            errors=s.errors, p99_s=_p99(s.latency))
                for i, s in sorted(points.items())])
            for version, points in steps.items()
        ],
    )


def _p99(latency: list[int]) -> float | None:
    bound = p99(latency)
    return None if bound is None else min(bound, _SLOWEST_S)
