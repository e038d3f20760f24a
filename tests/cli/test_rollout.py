"""`edgefn rollout status` as printed: a split rollout names its share."""

from __future__ import annotations

from typing import Any

from edgefn.cli.rollout import render


def _dep(**rollout: Any) -> dict[str, Any]:
    return {"id": "d1", "version": "2.0.0", "previous_version": "1.0.0", "state": "in_progress",
            "rollout": {"state": "baking", "wave": 0, "waves": 2, "reason": None,
                        "rollback_id": None, "nodes": [], **rollout}}


def test_a_split_rollout_shows_its_share_and_waves_of_nodes_do_not() -> None:
    assert render(_dep(percent=30)) == [
        "deployment d1: 2.0.0 (was 1.0.0): baking, wave 1/2 (split 30%)"]
    assert render(_dep(percent=None)) == ["deployment d1: 2.0.0 (was 1.0.0): baking, wave 1/2"]
    assert render(_dep()) == ["deployment d1: 2.0.0 (was 1.0.0): baking, wave 1/2"]
