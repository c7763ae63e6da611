"""static/sessup-tus.js in Chromium on the minimal page ``GET /tus-demo``:
50 MiB, the page reloaded midway, the same file chosen again, the upload
resumes at the server's offset and the stored file downloads byte-exact; a
dropped connection is retried.  The same client behind /ajax's "Resumable
(tus)" switch is tested in tests/browser/test_ajax_resumable.py."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterator

import pytest

from ..browser.conftest import CHROMIUM, CHROMIUM_ARGS
from ..support import IN_CI, free_port, running_server
from .servers import tus_ini

pytestmark = [pytest.mark.browser, pytest.mark.server, pytest.mark.slow]

MiB = 1024 * 1024
SIZE = 50 * MiB
CHUNK = 2 * MiB


@pytest.fixture
def browser() -> Iterator[object]:
    if not os.path.exists(CHROMIUM):
        if IN_CI:
            pytest.fail(f"{CHROMIUM} is missing (CI=true: a missing browser fails the run)")
        pytest.skip(f"{CHROMIUM} is missing")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if IN_CI:
            pytest.fail("playwright is not installed")
        pytest.skip("playwright is not installed")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def test_resumable_upload_survives_a_reload(browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    source = tmp_path / "movie.bin"
    digest = hashlib.sha256()
    with open(source, "wb") as f:
        for _ in range(SIZE // MiB):
            block = os.urandom(MiB)
            digest.update(block)
            f.write(block)
    port = free_port()
    ini = tus_ini(tmp_path / "srv", tmp_path / "uploads", tmp_path / "sessions", port)
    with running_server(ini, port) as server:
        context = browser.new_context()
        page = context.new_page()
        # A slow uplink (about 20 MiB/s), so the reload lands mid-upload.
        cdp = context.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0,
                                                      "downloadThroughput": -1, "uploadThroughput": 20 * MiB})
        page.goto(f"{server.url}/tus-demo?chunk={CHUNK}")
        page.set_input_files("#tus-file", str(source))
        page.wait_for_function(f"Number(document.getElementById('tus-form').dataset.tusSent || 0) >= {8 * CHUNK}",
                               timeout=60_000)
        assert page.get_attribute("#tus-form", "data-tus-done") is None
        page.reload()

        key = page.evaluate("Object.keys(localStorage).find(k => k.startsWith('sessup-tus:'))")
        assert key and key.startswith("sessup-tus:movie.bin:" + str(SIZE) + ":")
        page.set_input_files("#tus-file", str(source))  # the same file again: found by name+size+lastModified
        page.wait_for_selector("#tus-form[data-tus-done]", timeout=120_000)
        assert page.get_attribute("#tus-form", "data-tus-error") is None
        result = page.evaluate("JSON.parse(document.getElementById('tus-form').dataset.tusDone)")
        assert 8 * CHUNK <= result["resumedAt"] < SIZE  # continued, not restarted
        assert result["size"] == SIZE and result["sha256"] == digest.hexdigest()
        assert "resumed at" in page.inner_text("#tus-status")
        assert page.evaluate("Object.keys(localStorage).filter(k => k.startsWith('sessup-tus:')).length") == 0

        href = page.get_attribute("#tus-result", "href")
        assert href == result["url"]
        download = context.request.get(server.url + href)
        assert download.status == 200
        assert hashlib.sha256(download.body()).hexdigest() == digest.hexdigest()
        context.close()


def test_resumable_upload_survives_a_dropped_connection(browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    size = 20 * MiB
    data = os.urandom(size)
    source = tmp_path / "dropped.bin"
    source.write_bytes(data)
    port = free_port()
    ini = tus_ini(tmp_path / "srv", tmp_path / "uploads", tmp_path / "sessions", port)
    with running_server(ini, port) as server:
        context = browser.new_context()
        page = context.new_page()
        cdp = context.new_cdp_session(page)
        cdp.send("Network.enable")
        slow = {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 10 * MiB}
        cdp.send("Network.emulateNetworkConditions", slow)
        page.goto(f"{server.url}/tus-demo?chunk={MiB}")
        page.set_input_files("#tus-file", str(source))
        page.wait_for_function(f"Number(document.getElementById('tus-form').dataset.tusSent || 0) >= {4 * MiB}",
                               timeout=60_000)
        cdp.send("Network.emulateNetworkConditions", {**slow, "offline": True})
        page.wait_for_timeout(1500)  # the client retries (HEAD) while the network is down
        cdp.send("Network.emulateNetworkConditions", slow)
        page.wait_for_selector("#tus-form[data-tus-done]", timeout=120_000)
        assert page.get_attribute("#tus-form", "data-tus-error") is None
        assert int(page.get_attribute("#tus-form", "data-tus-retries") or 0) >= 1  # it did fail, and recovered
        result = page.evaluate("JSON.parse(document.getElementById('tus-form').dataset.tusDone)")
        assert result["sha256"] == hashlib.sha256(data).hexdigest()
        download = context.request.get(server.url + result["url"])
        assert download.body() == data
        context.close()
