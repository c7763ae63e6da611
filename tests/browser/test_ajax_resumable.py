"""/ajax in its resumable mode (tus, static/sessup-tus.js) in Chromium: a
50 MiB upload, sent as four parallel parts, survives a page reload and each
part continues at the server's offset; a dropped connection is retried;
Cancel deletes the unfinished upload (every part); small files go whole."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from .conftest import App, MiB, random_file, sha256_of, start_app, throttle_upload

pytestmark = [pytest.mark.browser, pytest.mark.server]

TUS = {"Tus-Resumable": "1.0.0"}
STORED_KEY = "Object.keys(localStorage).filter(k => k.startsWith('sessup-tus:'))"


def every_file(app: App) -> list[str]:
    """Everything under the upload directory: stored files, .tmp and .tus state."""
    return sorted(str(p.relative_to(app.upload_dir)) for p in app.upload_dir.rglob("*") if p.is_file())


def resumable_page(app: App) -> Any:
    page = app.new_page()
    page.goto("/ajax")
    switch = page.locator("#resumable")
    assert page.locator("label[for=resumable]").inner_text() == "Resumable (tus)"
    assert not switch.is_checked()  # the default stays the multipart upload
    switch.check()
    return page


def server_offset(page: Any, url: str) -> int:
    """HEAD the upload with the page's cookies (it belongs to the page's session)."""
    res = page.request.head(url, headers=TUS)
    assert res.status == 200, res.status
    return int(res.headers["upload-offset"])


def is_patch(offset_at_least: int) -> Any:
    def match(response: Any) -> bool:
        return (response.request.method == "PATCH" and response.status == 204
                and int(response.headers.get("upload-offset", "0")) >= offset_at_least)
    return match


@pytest.mark.slow
def test_resumable_upload_survives_a_reload(app: App, tmp_path: Path) -> None:
    # 50 MiB is ten 5 MiB chunks: sent as four parallel parts (concatenation).
    size = 50 * MiB
    original = random_file(tmp_path, "fifty.bin", size)
    page = resumable_page(app)
    throttle_upload(page, 10 * MiB)  # about five seconds: the reload lands midway
    creations: list[str] = []
    page.on("request", lambda r: creations.append(r.headers.get("upload-concat", "-")) if r.method == "POST" else None)
    page.set_input_files("#inputFile", str(original))
    with page.expect_response(is_patch(5 * MiB), timeout=60_000):
        page.click("#start")
    assert creations == ["partial"] * 4  # created one after the other: one session owns them all
    assert page.locator("#results li").count() == 0
    keys = page.evaluate(STORED_KEY)
    assert len(keys) == 1 and keys[0].startswith(f"sessup-tus:fifty.bin:{size}:")
    parts = json.loads(page.evaluate("key => localStorage.getItem(key)", keys[0]))["parts"]
    assert [(p["start"], p["end"]) for p in parts] == [(i * size // 4, (i + 1) * size // 4) for i in range(4)]
    urls = [p["url"] for p in parts]

    page.reload()
    offsets = [server_offset(page, url) for url in urls]
    assert 5 * MiB <= sum(offsets) < size
    assert page.locator("#resumable").is_checked()  # the mode is remembered
    requests: list[tuple[str, str, str, str]] = []
    page.on("request", lambda r: requests.append((r.method, r.url, r.headers.get("upload-offset", ""),
                                                  r.headers.get("upload-concat", ""))))
    page.set_input_files("#inputFile", str(original))  # the same file again
    # Before anything is sent, the bar already starts at the server's offsets
    # (HEAD of each part).  A chunk that arrived whole just before the reload
    # may still have moved them on since: hence >=.
    page.wait_for_function("() => document.querySelector('#queue progress').value > 0")
    bar = page.locator("#queue progress")
    assert round(sum(offsets) / size * 1000) / 10 <= float(bar.get_attribute("aria-valuenow")) < 100
    page.click("#start")
    page.wait_for_function("() => document.getElementById('status').textContent.startsWith('Resuming fifty.bin at ')")
    page.wait_for_selector("#results a.result-link", timeout=120_000)

    patches = [(u, int(o)) for method, u, o, _ in requests if method == "PATCH"]
    assert {u for u, _ in patches} <= set(urls)
    for url, offset in zip(urls, offsets):  # each part continued where the server stopped, not from 0
        first = [o for u, o in patches if u == url][:1]
        assert not first or first[0] >= offset
    assert any(o > 0 for _, o in patches)
    posts = [concat for method, _, _, concat in requests if method == "POST"]
    assert posts == ["final;" + " ".join(urls)]  # no part was created again; one final joined them
    assert page.locator("#status").inner_text() == "All files uploaded."
    assert bar.get_attribute("aria-valuenow") == "100"
    assert page.locator("#overall").get_attribute("aria-valuenow") == "100"
    link = page.locator("#results a.result-link")
    assert link.inner_text() == "fifty.bin"
    digest = sha256_of(original)
    assert digest in page.locator("#results").inner_text()
    with page.expect_download() as info:
        link.click()
    assert sha256_of(info.value.path()) == digest
    assert page.evaluate(STORED_KEY) == []
    assert len(app.stored()) == 1 and not [f for f in every_file(app) if f.endswith(".part")]
    for url in urls:  # joined, then removed
        assert page.request.head(url, headers=TUS).status == 404


@pytest.mark.slow
def test_resumable_upload_survives_a_dropped_connection(app: App, tmp_path: Path) -> None:
    original = random_file(tmp_path, "dropped.bin", 16 * MiB)
    page = resumable_page(app)
    conditions = {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 8 * MiB}
    cdp = throttle_upload(page, conditions["uploadThroughput"])
    page.set_input_files("#inputFile", str(original))
    with page.expect_response(is_patch(5 * MiB), timeout=60_000):
        page.click("#start")
    cdp.send("Network.emulateNetworkConditions", {**conditions, "offline": True})
    page.wait_for_function("() => Number(document.getElementById('ajax-upload').dataset.tusRetries || 0) >= 1")
    assert "retrying" in page.locator("#status").inner_text()
    cdp.send("Network.emulateNetworkConditions", conditions)
    page.wait_for_selector("#results a.result-link", timeout=120_000)
    assert page.locator("#error").is_hidden()
    href = page.locator("#results a.result-link").get_attribute("href")
    assert page.request.get(app.url + href).body() == original.read_bytes()


@pytest.mark.slow
def test_resumable_cancel_leaves_nothing_on_the_server(app: App, tmp_path: Path) -> None:
    original = random_file(tmp_path, "cancel.bin", 40 * MiB)
    page = resumable_page(app)
    throttle_upload(page, 4 * MiB)  # ten seconds for the whole file: cancel well before
    page.set_input_files("#inputFile", str(original))
    with page.expect_response(is_patch(5 * MiB), timeout=60_000):
        page.click("#start")
    assert any(f.endswith(".part") for f in every_file(app))  # the server holds the first chunk
    page.wait_for_function("() => document.getElementById('overall').value >= 15")  # the next chunk in flight
    # (A DELETE may first get 409 while the server still applies a chunk
    # that arrived whole; the client retries.)
    failed: list[str] = []
    page.on("requestfailed", lambda r: failed.append(r.method))
    with page.expect_response(lambda r: r.request.method == "DELETE" and r.status == 204):
        page.click("#cancel")  # 40 MiB goes in four parts: each one is deleted
    assert failed and set(failed) == {"PATCH"}  # the chunks in flight (one per part) were aborted
    page.wait_for_function("() => document.getElementById('status').textContent.includes('cancelled')")
    assert page.locator("#status").inner_text() == \
        "Upload cancelled; the unfinished upload was removed from the server."
    assert page.locator("#results li").count() == 0
    assert page.evaluate(STORED_KEY) == []
    # The aborted PATCH must not bring anything back (bounded look).
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        assert every_file(app) == []
        time.sleep(0.25)
    # The page still works in this mode: a small upload goes through.
    throttle_upload(page, -1)
    page.set_input_files("#inputFile", str(random_file(tmp_path, "after.txt", 100)))
    page.click("#start")
    page.wait_for_selector("#results a.result-link")
    assert len(app.stored()) == 1


@pytest.fixture
def zh_app(tmp_path: Path, browser: Any) -> Iterator[App]:
    server, app = start_app(tmp_path, browser, locale="zh-CN")
    try:
        yield app
    finally:
        app.context.close()
        server.stop()


def test_resumable_mode_in_chinese_and_several_files(zh_app: App, tmp_path: Path) -> None:
    files = [random_file(tmp_path, "一.bin", 300_000), random_file(tmp_path, "two.txt", 10)]
    page = zh_app.new_page()
    page.goto("/ajax")
    assert page.locator("label[for=resumable]").inner_text() == "可续传（tus）"
    page.check("#resumable")
    concat: list[str] = []
    page.on("request", lambda r: concat.append(r.headers.get("upload-concat", "")) if r.method == "POST" else None)
    page.set_input_files("#inputFile", [str(f) for f in files])
    page.click("#start")
    page.wait_for_function("() => document.querySelectorAll('#results a.result-link').length === 2")
    assert concat == ["", ""]  # small files go whole: one upload each, no parts
    links = page.locator("#results a.result-link")
    assert links.all_inner_texts() == ["一.bin", "two.txt"]  # in the order they were sent
    for i, original in enumerate(files):
        assert page.request.get(zh_app.url + links.nth(i).get_attribute("href")).body() == original.read_bytes()
    assert page.locator("#queue progress").evaluate_all("bars => bars.map(b => b.getAttribute('aria-valuenow'))") \
        == ["100", "100"]
    assert page.locator("#status").inner_text() == "所有文件已上传。"
