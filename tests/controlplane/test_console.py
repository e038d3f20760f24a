"""The web console's files, served by the CP at /console/: HTML, JavaScript and CSS
with their types and headers, no data in them, and an API that still wants a token."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from edgefn.controlplane.console import STATIC_DIR
from tests.controlplane.conftest import ADMIN, CP


@pytest.fixture
def database_url(sqlite_template: Path, tmp_path: Path) -> str:
    # Static files do not touch the database: one kind is enough.
    target = tmp_path / "cp.db"
    shutil.copyfile(sqlite_template, target)
    return f"sqlite:///{target}"


def test_index_is_served_with_the_app_script(cp: CP) -> None:
    r = cp.client.get("/console/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="app.js"></script>' in r.text
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"
    # Without the slash the browser is sent to the directory.
    moved = cp.client.get("/console", follow_redirects=False)
    assert moved.status_code in (307, 308) and moved.headers["location"].endswith("/console/")


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("app.js", "javascript"),
        ("api.js", "javascript"),
        ("dom.js", "javascript"),
        ("functions.js", "javascript"),
        ("deployments.js", "javascript"),
        ("nodes.js", "javascript"),
        ("audit.js", "javascript"),
        ("charts.js", "javascript"),
        ("console.css", "text/css"),
    ],
)
def test_assets_have_their_types(cp: CP, name: str, kind: str) -> None:
    r = cp.client.get(f"/console/{name}")
    assert r.status_code == 200
    # Module scripts are refused by browsers unless served as JavaScript.
    assert kind in r.headers["content-type"]
    assert r.content == (STATIC_DIR / name).read_bytes()


def test_every_module_the_page_imports_is_served(cp: CP) -> None:
    for path in STATIC_DIR.glob("*.js"):
        for imported in re.findall(r'from "\./([\w.]+)"', path.read_text()):
            assert cp.client.get(f"/console/{imported}").status_code == 200, (path, imported)


def test_files_hold_no_data_and_the_api_wants_a_token(cp: CP) -> None:
    fn = cp.function(ADMIN, "secret-name", owner_project_id=cp.project("alpha"))
    for path in STATIC_DIR.iterdir():
        body = cp.client.get(f"/console/{path.name}").text
        assert "secret-name" not in body and fn["id"] not in body
    r = cp.call("GET", "/functions")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"
    assert cp.client.get("/console/missing.js").status_code == 404


def test_nothing_rendered_goes_through_html_parsing() -> None:
    # API data reaches the page as text nodes and attributes only.
    for path in STATIC_DIR.glob("*.js"):
        text = path.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in text, (path.name, sink)
