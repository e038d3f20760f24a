"""The web console in a real browser: a real CP process, data made through the API,
and headless Chromium rendering the console's views from it."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from urllib.parse import quote

import pytest

from edgefn.cluster import Cluster
from tests.e2e.conftest import module

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


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
        "--window-size=1280,1000", "--virtual-time-budget=5000",
    ]


def console_url(cluster: Cluster, view: str = "") -> str:
    fragment = f"token={quote(cluster.token, safe='')}"
    if view:
        fragment += f"&view={quote(view, safe='/')}"
    return f"http://127.0.0.1:{cluster.api_port}/console/#{fragment}"


def rendered(browser: list[str], url: str) -> str:
    """The page's tabs, error banner and <main> after its scripts ran (the sign-in
    <template> is left out: it is in every page)."""
    out = subprocess.run([*browser, "--dump-dom", url], capture_output=True, timeout=60,
                         check=True)
    page = out.stdout.decode()
    parts = re.findall(
        r'<nav id="tabs".*?</nav>|<div id="error".*?</div>|<main id="view".*?</main>', page, re.S
    )
    assert len(parts) == 3, page
    return "\n".join(parts)


def test_console_renders_functions_versions_and_deployments(
    cluster: Cluster, browser: list[str], tmp_path: Path
) -> None:
    fid = cluster.function("console-hello", pop_selector="region=='tokyo'")
    version = cluster.upload(fid, "1.0.0", module("hello-c"))
    cluster.route(fid, "/console-hello")
    cluster.deploy(fid, "1.0.0")

    listing = rendered(browser, console_url(cluster))
    assert "console-hello" in listing and 'aria-current="page"' in listing
    assert "Sign in" not in listing
    # The token was taken out of the address bar; it is not in the page either.
    assert cluster.token not in listing

    detail = rendered(browser, console_url(cluster, f"functions/{fid}"))
    for text in ("1.0.0", version["sha256"], version["abi"], "/console-hello", "region=='tokyo'",
                 "Deploy", "Roll back"):
        assert text in detail, text

    deployments = rendered(browser, console_url(cluster, f"deployments/{fid}"))
    assert "Deploy 1.0.0" in deployments and "succeeded" in deployments

    shot = tmp_path / "console.png"
    subprocess.run([*browser, f"--screenshot={shot}", console_url(cluster, f"functions/{fid}")],
                   capture_output=True, timeout=60, check=True)
    data = shot.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000


def test_console_without_a_token_asks_for_one(cluster: Cluster, browser: list[str]) -> None:
    cluster.function("hidden-fn")
    page = rendered(browser, f"http://127.0.0.1:{cluster.api_port}/console/")
    assert "Sign in" in page and 'for="signin-token"' in page
    assert "hidden-fn" not in page


def test_console_shows_the_api_error_for_a_bad_token(cluster: Cluster, browser: list[str]) -> None:
    page = rendered(browser, f"http://127.0.0.1:{cluster.api_port}/console/#token=wrong")
    # The API's own message, from its JSON body, and the sign-in form again.
    assert "unauthorized" in page and "Sign in" in page
