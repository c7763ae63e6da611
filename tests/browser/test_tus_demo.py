"""static/sessup-tus.js in Chromium on the minimal page ``GET /tus-demo``:
50 MiB, the page reloaded midway, the same file chosen again, the upload
resumes at the server's offset and the stored file downloads byte-exact; a
dropped connection is retried.  The same client behind /ajax's "Resumable
(tus)" switch is tested in test_ajax_resumable.py.

(Here, beside the other browser tests, so that one Playwright instance, the
session-wide ``browser`` fixture of conftest.py, serves them all.)"""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from .conftest import App, MiB, random_file, sha256_of, throttle_upload

pytestmark = [pytest.mark.browser, pytest.mark.server, pytest.mark.slow]

SIZE = 50 * MiB
CHUNK = 2 * MiB
FORM = "document.getElementById('tus-form').dataset"


def test_resumable_upload_survives_a_reload(app: App, tmp_path: Path) -> None:
    source = random_file(tmp_path, "movie.bin", SIZE)
    digest = sha256_of(source)
    page = app.new_page()
    throttle_upload(page, 20 * MiB)  # a slow uplink, so the reload lands mid-upload
    page.goto(f"/tus-demo?chunk={CHUNK}")
    page.set_input_files("#tus-file", str(source))
    page.wait_for_function(f"Number({FORM}.tusSent || 0) >= {8 * CHUNK}")
    assert page.get_attribute("#tus-form", "data-tus-done") is None
    page.reload()

    key = page.evaluate("Object.keys(localStorage).find(k => k.startsWith('sessup-tus:'))")
    assert key and key.startswith("sessup-tus:movie.bin:" + str(SIZE) + ":")
    page.set_input_files("#tus-file", str(source))  # the same file again: found by name+size+lastModified
    page.wait_for_selector("#tus-form[data-tus-done]", timeout=120_000)
    assert page.get_attribute("#tus-form", "data-tus-error") is None
    result = page.evaluate(f"JSON.parse({FORM}.tusDone)")
    assert 8 * CHUNK <= result["resumedAt"] < SIZE  # continued, not restarted
    assert result["size"] == SIZE and result["sha256"] == digest
    assert "resumed at" in page.inner_text("#tus-status")
    assert page.evaluate("Object.keys(localStorage).filter(k => k.startsWith('sessup-tus:')).length") == 0

    href = page.get_attribute("#tus-result", "href")
    assert href == result["url"]
    download = page.request.get(app.url + href)
    assert download.status == 200
    assert hashlib.sha256(download.body()).hexdigest() == digest


def test_resumable_upload_survives_a_dropped_connection(app: App, tmp_path: Path) -> None:
    source = random_file(tmp_path, "dropped.bin", 20 * MiB)
    page = app.new_page()
    slow = {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 10 * MiB}
    cdp = throttle_upload(page, slow["uploadThroughput"])
    page.goto(f"/tus-demo?chunk={MiB}")
    page.set_input_files("#tus-file", str(source))
    page.wait_for_function(f"Number({FORM}.tusSent || 0) >= {4 * MiB}")
    cdp.send("Network.emulateNetworkConditions", {**slow, "offline": True})
    page.wait_for_timeout(1500)  # the client retries (HEAD) while the network is down
    cdp.send("Network.emulateNetworkConditions", slow)
    page.wait_for_selector("#tus-form[data-tus-done]", timeout=120_000)
    assert page.get_attribute("#tus-form", "data-tus-error") is None
    assert int(page.get_attribute("#tus-form", "data-tus-retries") or 0) >= 1  # it did fail, and recovered
    result = page.evaluate(f"JSON.parse({FORM}.tusDone)")
    assert result["sha256"] == sha256_of(source)
    assert page.request.get(app.url + result["url"]).body() == source.read_bytes()

