"""Health gates of a rollout: a wave's bake window, the new version's figures against
the previous version's, the decision they lead to, and a split rollout's shares
(rules in docs/rollouts.md).

Pure of transport and of the deployment's other rows: `service` moves the state
machine, this module says where it should go and why.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from edgefn.contract import TrafficSplit, VersionStats, p99
from edgefn.controlplane.deployments.models import Deployment
from edgefn.controlplane.deployments.schemas import DeploySplit, Gates
from edgefn.controlplane.nodes.models import Node


@dataclass
class Figures:
    """One version's invocation figures summed over some nodes."""

    nodes: int = 0
    count: int = 0
    errors: int = 0
    latency: list[int] | None = None

    def add(self, stats: VersionStats) -> None:
        self.nodes += 1
        self.count += stats.count
        self.errors += sum(stats.errors.values())
        if stats.latency:
            mine = self.latency or [0] * len(stats.latency)
            self.latency = [a + b for a, b in zip(mine, stats.latency, strict=False)]

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.count if self.count else None

    @property
    def p99_s(self) -> float | None:
        return p99(self.latency or [])

    def as_json(self) -> dict[str, Any]:
        return {"nodes": self.nodes, "requests": self.count, "errors": self.errors,
                "error_rate": self.error_rate, "p99_s": self.p99_s}


def node_stats(node: Node) -> dict[str, VersionStats]:
    out = {}
    for raw in (node.version_stats or {}).values():
        try:
            stats = VersionStats.model_validate(raw)
        except ValueError:
            continue
        out[stats.key] = stats
    return out


def figures(nodes: list[Node], function_id: str, version: str | None) -> Figures:
    total = Figures()
    if version is None:
        return total
    for node in nodes:
        stats = node_stats(node).get(f"{function_id}@{version}")
        if stats is not None:
            total.add(stats)
    return total


def summary(stats: VersionStats | None) -> dict[str, Any] | None:
    if stats is None:
        return None
    one = Figures()
    one.add(stats)
    return one.as_json()


def gates_of(dep: Deployment) -> Gates:
    return Gates.model_validate(dep.gates or {})


def split_of(dep: Deployment) -> DeploySplit | None:
    return DeploySplit.model_validate(dep.split) if dep.split else None


def shares(dep: Deployment) -> list[int]:
    """A split rollout's shares of the traffic, one a step (`dep.wave` is the current
    one's index): `percent`, then the `steps` above it in rising order, then 100 if
    they did not end there. Just `percent` without gates (nothing moves it on);
    empty for a deploy without a split."""
    split = split_of(dep)
    if split is None:
        return []
    out = [split.percent]
    if dep.gates is not None:
        out += sorted({s for s in split.steps or [] if s > split.percent})
        if out[-1] != 100:
            out.append(100)
    return out


def steps_left(dep: Deployment) -> bool:
    """Whether a gated split has a share after the current one: once every node
    serves the current share it bakes, rather than being done."""
    return dep.rollout_state is not None and dep.wave + 1 < len(shares(dep))


def split_at(dep: Deployment, step: int) -> TrafficSplit | None:
    """What a split rollout's step `step` sends the nodes: its share under the deploy's
    key, or at 100 no split at all (a plain deploy of the new version, which ends the
    split on the nodes and lets them drop the previous version)."""
    split = split_of(dep)
    if split is None:
        return None
    percent = shares(dep)[step]
    return None if percent == 100 and step > 0 else TrafficSplit(percent=percent, key=split.key)


def baked(dep: Deployment, now: dt.datetime) -> bool:
    start = dep.bake_started_at
    return start is not None and (now - start).total_seconds() >= gates_of(dep).bake_s


def judge(gates: Gates, new: Figures, old: Figures) -> tuple[str, str]:
    """("promote" | "rollback" | "wait", why) from one bake window's figures."""
    if new.count < gates.min_requests:
        return "wait", f"{new.count} requests to the new version, gates need {gates.min_requests}"
    new_rate = new.error_rate or 0.0
    old_rate = (old.error_rate or 0.0) if old.count >= gates.min_requests else 0.0
    if new_rate > old_rate + gates.max_error_rate_increase:
        return "rollback", (
            f"error rate {new_rate:.1%} against {old_rate:.1%} before "
            f"(at most {gates.max_error_rate_increase:.1%} more allowed)")
    new_p99, old_p99 = new.p99_s, old.p99_s
    if (new_p99 is not None and old_p99 is not None and old.count >= gates.min_requests
            and new_p99 > max(old_p99 * gates.max_p99_ratio, gates.p99_floor_s)):
        return "rollback", (
            f"p99 {new_p99 * 1000:g} ms against {old_p99 * 1000:g} ms before "
            f"(at most {gates.max_p99_ratio:g}x allowed)")
    return "promote", (
        f"error rate {new_rate:.1%} (before {old_rate:.1%}), p99 "
        f"{'-' if new_p99 is None else f'{new_p99 * 1000:g} ms'} over {new.count} requests")
