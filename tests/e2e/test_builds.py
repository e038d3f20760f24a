"""From source to a served response: the control plane builds each language's
tree, the version is deployed to an edge node, and the node answers with it."""

from __future__ import annotations

import pytest

from edgefn.builder.toolchains import driver
from edgefn.cluster import Cluster, wait_until
from tests.builder.sources import TREES, tgz

pytestmark = pytest.mark.e2e


def test_each_language_is_built_deployed_and_served(cluster: Cluster) -> None:
    edge = cluster.add_edge("tokyo-1", "jp-t1", region="tokyo")
    languages = [
        lang for lang in TREES if lang == "assemblyscript" or driver(lang).probe().ok
    ]
    builds: dict[str, tuple[str, str]] = {}
    for lang in languages:
        fid = cluster.function(f"built-{lang}")
        build = cluster.call(
            "POST",
            f"/functions/{fid}/builds",
            data={"language": lang, "version": "1.0.0"},
            files={"source": ("src.tar.gz", tgz(TREES[lang]), "application/gzip")},
        )
        builds[lang] = (fid, build["id"])
    for lang, (fid, build_id) in builds.items():
        wait_until(
            f"{lang} finished",
            lambda b=build_id: cluster.call("GET", f"/builds/{b}")["state"]
            in ("succeeded", "failed"),
            timeout=120,
        )
        done = cluster.call("GET", f"/builds/{build_id}")
        assert done["state"] == "succeeded", done["log"]
        cluster.route(fid, f"/{lang}")
        cluster.deploy(fid, "1.0.0")
    golden = {"c": b"c", "wat": b"wat", "rust": b"rust", "assemblyscript": b"as"}
    for lang in builds:
        needle = b"hello from " + golden[lang] + b"\n"
        wait_until(
            f"{lang} served",
            lambda p=f"/{lang}", n=needle: edge.get(p).content == n,
        )
