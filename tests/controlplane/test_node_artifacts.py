"""A node asks for a fresh URL of an artifact it was sent (its cached copy went bad
after the deploy's URL expired); it gets one only for what was deployed to it."""

from __future__ import annotations

import hashlib
import time
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.controlplane.conftest import ADMIN, CP, bearer


@pytest.fixture
def setup(cp: CP, team: SimpleNamespace, wasm: SimpleNamespace) -> SimpleNamespace:
    """Project A's function on tokyo (1.0.0 deployed, 1.1.0 only uploaded); project B's
    on osaka only."""
    tokyo, osaka = cp.node("jp-t1", "tokyo-1"), cp.node("jp-o1", "osaka-1")
    a = cp.function(team.a_dev, "shop")
    b = cp.function(team.b_dev, "bank")
    for headers, fn, version, data in (
        (team.a_dev, a, "1.0.0", wasm.edge_v1),
        (team.a_dev, a, "1.1.0", wasm.edge_v1_b),
        (team.b_dev, b, "1.0.0", wasm.edge_v1_b),
    ):
        assert cp.upload(headers, fn["id"], version, data).status_code == 201
    cp.ok("POST", f"/functions/{a['id']}/deploy", team.a_dev, 202,
          json={"version": "1.0.0", "target_pop": ["jp-t1"]})
    cp.ok("POST", f"/functions/{b['id']}/deploy", team.b_dev, 202,
          json={"version": "1.0.0", "target_pop": ["jp-o1"]})
    return SimpleNamespace(tokyo=tokyo, osaka=osaka, a=a, b=b)


def grant(cp: CP, node: dict[str, Any], function_id: str, version: str,
          token: str | None = None, as_node: str | None = None) -> Any:
    path = f"/nodes/{as_node or node['id']}/artifacts/{function_id}/{version}"
    return cp.call("GET", path, bearer(token or node["token"]))


def test_a_node_gets_a_fresh_working_url_for_what_it_was_sent(
    cp: CP, setup: SimpleNamespace, wasm: SimpleNamespace
) -> None:
    before = time.time()
    r = grant(cp, setup.tokyo, setup.a["id"], "1.0.0")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["sha256"] == hashlib.sha256(wasm.edge_v1).hexdigest()
    assert body["expires_in"] == cp.settings.download_url_ttl_s
    expires = int(parse_qs(urlsplit(body["artifact_url"]).query)["expires"][0])
    assert expires >= int(before) + cp.settings.download_url_ttl_s
    download = cp.client.get(body["artifact_url"])
    assert download.status_code == 200 and download.content == wasm.edge_v1
    # Delivered or not, acked or not: the deploy was queued for this node.
    cp.heartbeat(setup.tokyo)
    assert grant(cp, setup.tokyo, setup.a["id"], "1.0.0").status_code == 200


def test_a_node_cannot_fetch_what_was_not_deployed_to_it(
    cp: CP, setup: SimpleNamespace
) -> None:
    # Another tenant's function, deployed elsewhere: 404, as if it did not exist.
    r = grant(cp, setup.tokyo, setup.b["id"], "1.0.0")
    assert r.status_code == 404 and "artifact_url" not in r.text
    assert grant(cp, setup.tokyo, setup.b["id"], "9.9.9").status_code == 404
    # Its own tenant's version that was uploaded but never deployed: 404 too.
    assert grant(cp, setup.tokyo, setup.a["id"], "1.1.0").status_code == 404
    assert grant(cp, setup.tokyo, "no-such-function", "1.0.0").status_code == 404
    # Asking in another node's name is refused; other tokens are not node tokens.
    r = grant(cp, setup.tokyo, setup.b["id"], "1.0.0", as_node="osaka-1")
    assert r.status_code == 403
    r = cp.call("GET", f"/nodes/tokyo-1/artifacts/{setup.a['id']}/1.0.0", ADMIN)
    assert r.status_code == 403
    r = cp.call("GET", f"/nodes/tokyo-1/artifacts/{setup.a['id']}/1.0.0")
    assert r.status_code == 401
    # osaka may fetch B's, the version it was sent.
    assert grant(cp, setup.osaka, setup.b["id"], "1.0.0").status_code == 200


def test_nothing_once_undeployed_and_the_latest_rollout_counts(
    cp: CP, team: SimpleNamespace, setup: SimpleNamespace
) -> None:
    a = setup.a["id"]
    cp.ok("POST", f"/functions/{a}/deploy", team.a_dev, 202,
          json={"version": "1.1.0", "target_pop": ["jp-t1"]})
    # Both versions were sent: the node may still serve 1.0.0 until it applies 1.1.0.
    assert grant(cp, setup.tokyo, a, "1.0.0").status_code == 200
    assert grant(cp, setup.tokyo, a, "1.1.0").status_code == 200
    assert cp.call("DELETE", f"/functions/{a}", team.a_owner).status_code == 204
    assert grant(cp, setup.tokyo, a, "1.0.0").status_code == 404
    assert grant(cp, setup.tokyo, a, "1.1.0").status_code == 404
