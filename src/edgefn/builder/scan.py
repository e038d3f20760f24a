"""The dependency scan of AssemblyScript builds: `npm audit --json` over the
tree's lockfile, reduced to counts by severity. Where the registry does not
answer, the report says so ("not scanned") instead of failing the build.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgefn.builder.jail import Jail

SEVERITIES = ("info", "low", "moderate", "high", "critical")


def not_scanned(reason: str) -> dict[str, Any]:
    return {"scanned": False, "reason": reason}


def audit(jail: Jail, src: Path, npm_env: dict[str, str]) -> dict[str, Any]:
    """The scan report of the npm project at `src` (which has a lockfile)."""
    rc, output = jail.run(
        ["npm", "audit", "--json", "--omit=dev"], cwd=src, network=True, env=npm_env
    )
    try:
        report = json.loads(output[output.find("{") :]) if "{" in output else {}
    except json.JSONDecodeError:
        report = {}
    counts = report.get("metadata", {}).get("vulnerabilities")
    if not isinstance(counts, dict):
        error = report.get("error", {})
        reason = (error.get("summary") if isinstance(error, dict) else None) or report.get(
            "message"
        )
        return not_scanned(reason or f"npm audit exited with status {rc} and no report")
    advisories = [
        {"name": name, "severity": v.get("severity"), "range": v.get("range")}
        for name, v in sorted(report.get("vulnerabilities", {}).items())
        if isinstance(v, dict)
    ]
    return {
        "scanned": True,
        "tool": "npm audit",
        "counts": {s: int(counts.get(s, 0)) for s in SEVERITIES},
        "advisories": advisories,
    }


def critical(report: dict[str, Any]) -> int:
    return int(report.get("counts", {}).get("critical", 0)) if report.get("scanned") else 0
