"""Uppy's Tus plugin (@uppy/core and @uppy/tus from npm, with the tus-js-client
inside) in Chromium against /files/: three files at once, each sent as four
parallel partial uploads joined by a final upload, after the page's usual
set-up (GET /csrf: the visitor cookie and the CSRF token); stored byte-exact.

The page and the bundle come from tests/browser/uppy/ (``npm ci`` there
bundles the two packages with esbuild; scripts/test.sh does it), served at
the application's own origin by Playwright, so the upload requests are the
same-origin requests a page of the application makes.  Nothing is loaded
from anywhere else."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from ..support import unavailable
from .conftest import App, MiB, random_file, sha256_of

pytestmark = [pytest.mark.browser, pytest.mark.server]

UPPY = Path(__file__).resolve().parent / "uppy"
BUNDLE = UPPY / "build" / "uppy-bundle.js"
TUS = {"Tus-Resumable": "1.0.0"}


def serve_test_page(app: App) -> list[str]:
    """Serve tests/browser/uppy at <app>/uppy-test/; return every URL the page asks for."""
    if not BUNDLE.is_file():
        unavailable(f"{BUNDLE} is missing: npm ci in tests/browser/uppy (scripts/test.sh does it)")
    files = {"index.html": (UPPY / "page.html", "text/html"), "uppy-bundle.js": (BUNDLE, "text/javascript")}
    seen: list[str] = []

    def handle(route: Any) -> None:
        name = route.request.url.split("/uppy-test/", 1)[1].split("?", 1)[0]
        if name not in files:
            route.fulfill(status=404, body="")
            return
        path, content_type = files[name]
        route.fulfill(status=200, body=path.read_bytes(), content_type=content_type)

    app.context.on("request", lambda request: seen.append(request.url))
    app.context.route(f"{app.url}/uppy-test/**", handle)
    return seen


def test_uppy_uploads_three_files_in_parallel_parts(app: App, tmp_path: Path) -> None:
    seen = serve_test_page(app)
    files = [random_file(tmp_path, "one.bin", 6 * MiB + 1), random_file(tmp_path, "two.txt", 3 * MiB),
             random_file(tmp_path, "three.png", 200_000)]
    page = app.new_page()
    creations: list[tuple[str, str]] = []

    def creation(request: Any) -> None:
        if request.method == "POST" and request.url.startswith(app.url + "/files"):
            creations.append((request.headers.get("upload-concat", ""), request.headers.get("x-csrf-token", "")))

    page.on("request", creation)
    page.goto("/uppy-test/index.html")
    page.wait_for_selector("#status:has-text('ready')")
    assert [c["name"] for c in page.context.cookies()] == ["sessup_csrf"]  # set by GET /csrf; no session record
    page.set_input_files("#files", [str(f) for f in files])
    page.click("#upload")
    page.wait_for_selector("body[data-result]", timeout=120_000)
    assert page.get_attribute("body", "data-error") is None
    result = json.loads(page.get_attribute("body", "data-result") or "{}")
    assert result["failed"] == []
    assert sorted(f["name"] for f in result["successful"]) == sorted(f.name for f in files)

    # Four partial uploads per file, then one final upload each, every one with the page's token.
    kinds = [concat.split(";")[0] for concat, _ in creations]
    assert kinds.count("partial") == 12 and kinds.count("final") == 3
    assert all(token for _, token in creations)

    by_name = {f.name: f for f in files}
    for uploaded in result["successful"]:
        original = by_name[uploaded["name"]]
        head = page.request.head(uploaded["url"], headers=TUS)
        assert head.status == 200 and head.headers["upload-concat"].startswith("final;")
        assert len(head.headers["upload-concat"][len("final;"):].split()) == 4
        info = page.request.get(uploaded["url"]).json()
        assert info["complete"] and info["filename"] == original.name and info["size"] == original.stat().st_size
        assert info["sha256"] == sha256_of(original)
        download = page.request.get(app.url + info["url"])
        assert download.status == 200 and hashlib.sha256(download.body()).hexdigest() == sha256_of(original)

    assert len(app.stored()) == 3 and app.temporary() == []
    # The partial uploads were joined and removed: only the finals' records remain.
    assert sorted({p.suffix for p in (app.upload_dir / ".tus").iterdir()}) == [".json", ".lock"]
    assert len(list((app.upload_dir / ".tus").glob("*.json"))) == 3
    assert seen and all(url.startswith(app.url + "/") for url in seen)  # nothing from another origin
