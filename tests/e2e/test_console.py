"""The web console in a real browser: a real CP process, data made through the API,
and headless Chromium rendering the console's views from it."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edgefn.cluster import Cluster, ClusterError, wait_until
from tests.e2e.cdp import Browser
from tests.e2e.conftest import module

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# Where the control plane says its edge serves functions: a function page shows its URLs.
EDGE_URL = "http://edge.test:8000"


@pytest.fixture
def cluster(tmp_path: Path, transport: str) -> Iterator[Cluster]:
    c = Cluster(tmp_path, token="e2e-admin-token", project="e2e")
    c.env["EDGEFN_TRANSPORT"] = transport
    c.cp_env["EDGEFN_EDGE_URL"] = EDGE_URL
    c.start_cp()
    yield c
    c.close()


@pytest.fixture
def browser(tmp_path: Path) -> list[str]:
    if not CHROMIUM.exists():
        # CI installs it (.ci/run); there a missing browser is a failure, not a skip.
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing and CI=true (apt-get install -y chromium)")
        pytest.skip(f"{CHROMIUM} is not installed (set CI=true to make this fail)")
    return [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'chromium'}",
        "--window-size=1280,1000",
    ]


def console_url(cluster: Cluster, view: str = "") -> str:
    return f"http://127.0.0.1:{cluster.api_port}/console/" + (f"#{view}" if view else "")


_PARTS = (
    "['#tabs', '#error', '#view'].map(s => document.querySelector(s).outerHTML).join('\\n')"
)


@pytest.fixture
def sign_in(cluster: Cluster, browser: list[str]) -> Iterator[Callable[[], Browser]]:
    """Opens a browser tab on the console and signs in by typing the token into the form."""
    tabs: list[Browser] = []

    def open_() -> Browser:
        tab = Browser(browser)
        tabs.append(tab)
        tab.goto(console_url(cluster))
        tab.wait_for("!!document.getElementById('signin-token')")
        tab.evaluate(
            f"(() => {{ const input = document.getElementById('signin-token');"
            f" input.value = {json.dumps(cluster.token)}; input.form.requestSubmit(); }})()"
        )
        tab.wait_for("location.hash === '#functions' && !document.querySelector('#view .signin')")
        return tab

    yield open_
    for tab in tabs:
        tab.close()


def view(tab: Browser, hash_: str, text: str) -> str:
    """The tabs, error banner and <main> once the view at `hash_` shows `text`."""
    tab.evaluate(f"location.hash = {json.dumps(hash_)}")
    tab.wait_for(f"document.querySelector('#view').textContent.includes({json.dumps(text)})")
    parts: str = tab.evaluate(_PARTS)
    return parts


def rendered(browser: list[str], url: str) -> str:
    """The page's tabs, error banner and <main> after its scripts ran (the sign-in
    <template> is left out: it is in every page)."""
    out = subprocess.run([*browser, "--virtual-time-budget=5000", "--dump-dom", url],
                         capture_output=True, timeout=60, check=True)
    page = out.stdout.decode()
    parts = re.findall(
        r'<nav id="tabs".*?</nav>|<div id="error".*?</div>|<main id="view".*?</main>', page, re.S
    )
    assert len(parts) == 3, page
    return "\n".join(parts)


def test_console_renders_functions_versions_and_deployments(
    cluster: Cluster, sign_in: Callable[[], Browser]
) -> None:
    fid = cluster.function("console-hello", pop_selector="region=='tokyo'")
    version = cluster.upload(fid, "1.0.0", module("hello-c"))
    cluster.route(fid, "/console-hello")
    cluster.deploy(fid, "1.0.0")
    signed_in = sign_in()

    listing = view(signed_in, "#functions", "console-hello")
    assert 'aria-current="page"' in listing and "Sign in" not in listing
    # The token stays in the tab's storage: not in the page, not in the address.
    assert cluster.token not in listing
    assert cluster.token not in signed_in.evaluate("location.href")

    detail = view(signed_in, f"#functions/{fid}", version["sha256"])
    for text in ("1.0.0", version["sha256"], version["abi"], "/console-hello", "region=='tokyo'",
                 "Deploy", "Roll back", "Served at", f'href="{EDGE_URL}/console-hello"'):
        assert text in detail, text

    deployments = view(signed_in, f"#deployments/{fid}", "Deploy 1.0.0")
    assert "succeeded" in deployments

    view(signed_in, f"#functions/{fid}", version["sha256"])
    data = signed_in.screenshot()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000


def test_console_shows_a_rollouts_timeline(
    cluster: Cluster, sign_in: Callable[[], Browser]
) -> None:
    for i in range(2):
        cluster.register_node(f"quiet-{i}", "pop", {})
    fid = cluster.function("console-gated")
    cluster.upload(fid, "1.0.0", module("hello-c"))
    cluster.upload(fid, "2.0.0", module("counter"))
    cluster.deploy(fid, "1.0.0")
    dep = cluster.deploy(fid, "2.0.0", strategy="canary", gates={})
    signed_in = sign_in()
    page = view(signed_in, f"#deployments/{fid}", "No decision yet.")
    assert "Rollout" in page and "wave 1 of 2" in page and "badge-pending" in page
    cluster.call("POST", f"/deployments/{dep}/abort")
    page = view(signed_in, f"#deployments/{fid}/{dep}", "wave 1: abort")
    assert "aborted by admin" in page and 'aria-label="Rollout timeline"' in page
    # A gated split names its share (1.0.0 is active again after the abort).
    split = cluster.deploy(fid, "2.0.0", split={"percent": 20}, gates={})
    page = view(signed_in, f"#deployments/{fid}/{split}", "(split 20%)")
    assert "wave 1 of 2 (split 20%)" in page


_CHARTS = """(() => [...document.querySelectorAll('#view figure.chart')].map(f => ({
  metric: f.dataset.metric,
  caption: f.querySelector('figcaption').textContent,
  lines: [...f.querySelectorAll('path.line')].map(p => p.dataset.version),
  drawn: [...f.querySelectorAll('path.line')]
    .every(p => /^M[0-9.]+,[0-9.]+/.test(p.getAttribute('d'))),
  tips: [...f.querySelectorAll('circle.dot > title')].map(t => t.textContent),
  ticks: [...f.querySelectorAll('text.tick')].map(t => t.textContent),
})))()"""


def test_a_functions_page_charts_each_versions_traffic(
    cluster: Cluster, sign_in: Callable[[], Browser]
) -> None:
    edge = cluster.add_edge("tokyo-1", "jp-t1")
    fid = cluster.function("charted")
    cluster.upload(fid, "1.0.0", module("echo"))
    cluster.upload(fid, "2.0.0", module("headers"))
    cluster.route(fid, "/charted")
    quiet = cluster.function("quiet")
    cluster.deploy(fid, "1.0.0")
    wait_until("1.0.0 serving", lambda: edge.get("/charted").status_code == 200)
    # Half the clients on 2.0.0, the others still on 1.0.0: both serve at once.
    dep = cluster.deploy(fid, "2.0.0", split={"percent": 50, "key": "header:x-user"})
    wait_until("split applied", lambda: cluster.node_states(dep) == {"tokyo-1": "cached"})
    with httpx.Client(base_url=edge.url, timeout=5) as c:
        for i in range(60):
            assert c.get("/charted", headers={"x-user": f"user-{i}"}).status_code == 200

    def counted() -> dict[str, int]:
        """What the node counted per version, from its own /metrics."""
        text = httpx.get(f"http://127.0.0.1:{edge.metrics_port}/metrics", timeout=5).text
        out: dict[str, int] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if (sample.name == "wasm_invoke_count_total"
                        and sample.labels.get("function_id") == fid):
                    version = sample.labels["version"]
                    out[version] = out.get(version, 0) + int(sample.value)
        return out

    def totals() -> dict[str, int]:
        out = cluster.call("GET", f"/functions/{fid}/series?step_s=10")
        return {v["version"]: sum(p["requests"] for p in v["points"]) for v in out["versions"]}

    try:
        wait_until("every request reported", lambda: totals() == counted())
    except ClusterError as exc:
        raise AssertionError(f"series {totals()}, node {counted()}") from exc
    assert sum(totals().values()) >= 60 and len(totals()) == 2
    tab = sign_in()
    view(tab, f"#functions/{fid}", "Traffic per version")
    tab.wait_for("document.querySelectorAll('#view figure.chart').length === 3")
    charts = tab.evaluate(_CHARTS)
    assert [c["metric"] for c in charts] == ["requests", "errors", "p99"]
    assert [c["caption"] for c in charts] == [
        "Requests (req/s)", "Errors (errors/s)", "p99 latency (ms)"]
    for chart in charts:
        assert sorted(chart["lines"]) == ["1.0.0", "2.0.0"], chart
        assert chart["drawn"] and len(chart["ticks"]) == 5 + 4, chart
    # Each point's tooltip: its version, time and figures; they add up to what was sent.
    per_version = {v: sum(int(t.split(": ", 1)[1].split(" requests", 1)[0])
                          for t in charts[0]["tips"] if t.startswith(v + " at "))
                   for v in ("1.0.0", "2.0.0")}
    assert per_version == totals() and 0 < per_version["2.0.0"] < 60
    legend = tab.evaluate("[...document.querySelectorAll('#view .legend li')]"
                          ".map(li => li.textContent)")
    assert sorted(legend) == [f"{v} {n} requests, 0 errors" for v, n in per_version.items()]

    # A function nothing served: no chart, a sentence saying so.
    page = view(tab, f"#functions/{quiet}", "No requests reported")
    assert "<svg" not in page.split("Traffic per version", 1)[1].split("Settings", 1)[0]


def test_console_without_a_token_asks_for_one(cluster: Cluster, browser: list[str]) -> None:
    cluster.function("hidden-fn")
    page = rendered(browser, f"http://127.0.0.1:{cluster.api_port}/console/")
    assert "Sign in" in page and 'for="signin-token"' in page
    assert "hidden-fn" not in page


def test_console_shows_the_api_error_for_a_bad_token(cluster: Cluster, browser: list[str]) -> None:
    tab = Browser(browser)
    try:
        tab.goto(console_url(cluster))
        tab.wait_for("!!document.getElementById('signin-token')")
        tab.evaluate("(() => { const input = document.getElementById('signin-token');"
                     " input.value = 'wrong'; input.form.requestSubmit(); })()")
        tab.wait_for("!document.getElementById('error').hidden")
        page = tab.evaluate(_PARTS)
    finally:
        tab.close()
    # The API's own message, from its JSON body, and the sign-in form again.
    assert "unauthorized" in page and "Sign in" in page


def test_a_token_in_the_link_signs_nobody_in(cluster: Cluster, browser: list[str]) -> None:
    """Login CSRF: a link carrying someone's token must not sign its visitor in as them.
    The console ignores the token, drops it from the address, and asks for a sign-in."""
    cluster.function("attacker-fn")
    url = f"{console_url(cluster)}#token={quote(cluster.token, safe='')}&view=functions"
    tab = Browser(browser)
    try:
        tab.goto(url)
        tab.wait_for("!!document.getElementById('signin-token')")
        page = tab.evaluate(_PARTS)
        address = tab.evaluate("location.href")
        stored = tab.evaluate("sessionStorage.getItem('edgefn.token')")
    finally:
        tab.close()
    assert "Sign in" in page and "attacker-fn" not in page
    assert "not used" in page
    assert cluster.token not in address and stored is None
