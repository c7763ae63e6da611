"""The pages in Chromium: the upload form, /ajax, the session page, Chinese."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import App, MiB, random_file, sha256_of, throttle_upload

pytestmark = [pytest.mark.browser, pytest.mark.server]


@pytest.mark.slow
def test_form_three_files_download_byte_for_byte(app: App, tmp_path: Path) -> None:
    files = [random_file(tmp_path, "big.bin", 20 * MiB), random_file(tmp_path, "small.txt", 1234),
             random_file(tmp_path, "图像.png", 50_000)]
    page = app.new_page()
    page.goto("/upload")
    page.set_input_files("input[name=inputFile]", [str(f) for f in files])
    page.fill("input[name=description]", "three files")
    page.click("#upload-formsubmit")
    page.wait_for_selector("#stored-files")
    links = page.locator("a.file-link")
    assert links.count() == 3
    assert [links.nth(i).inner_text() for i in range(3)] == [f.name for f in files]
    for i, original in enumerate(files):
        with page.expect_download() as info:
            links.nth(i).click()
        download = info.value
        assert download.suggested_filename == original.name
        assert sha256_of(download.path()) == sha256_of(original)
        assert Path(download.path()).read_bytes() == original.read_bytes()
    assert len(app.stored()) == 3 and app.temporary() == []


def test_form_failure_then_fix_without_picking_files_again(app: App, tmp_path: Path) -> None:
    files = [random_file(tmp_path, "a.bin", 300_000), random_file(tmp_path, "b.txt", 10)]
    page = app.new_page()
    page.goto("/upload")
    page.set_input_files("input[name=inputFile]", [str(f) for f in files])
    page.click("#upload-formsubmit")  # description left empty
    page.wait_for_selector(".invalid-feedback")
    assert page.locator(".invalid-feedback").all_inner_texts() == ["Required"]
    assert page.locator(".kept-name").all_inner_texts() == ["a.bin", "b.txt"]
    assert page.locator("input[name=inputFile]").evaluate("el => el.files.length") == 0
    page.fill("input[name=description]", "fixed")
    page.click("#upload-formsubmit")
    page.wait_for_selector("#stored-files")
    links = page.locator("a.file-link")
    assert links.all_inner_texts() == ["a.bin", "b.txt"]
    for i, original in enumerate(files):
        with page.expect_download() as info:
            links.nth(i).click()
        assert Path(info.value.path()).read_bytes() == original.read_bytes()


# Records every value the overall <progress> takes, from the page's own script.
RECORD_PROGRESS = """
window.__progress = [];
document.addEventListener('DOMContentLoaded', () => {
  const bar = document.getElementById('overall');
  new MutationObserver(() => window.__progress.push([bar.value, bar.max, bar.getAttribute('aria-valuenow')]))
    .observe(bar, {attributes: true, childList: true, characterData: true, subtree: true});
});
"""


@pytest.mark.slow
def test_ajax_upload_shows_progress_then_link(app: App, tmp_path: Path) -> None:
    original = random_file(tmp_path, "fifty.bin", 50 * MiB)
    page = app.new_page()
    page.add_init_script(RECORD_PROGRESS)
    page.goto("/ajax")
    throttle_upload(page, 25 * MiB)  # about two seconds for 50 MiB
    page.set_input_files("#inputFile", str(original))
    page.click("#start")
    page.wait_for_function(
        "() => { const p = document.getElementById('overall'); return p.value > 0 && p.value < p.max; }")
    in_flight = page.evaluate("document.querySelector('#queue progress').value")
    assert 0 < in_flight < 100
    page.wait_for_selector("#results a.result-link", timeout=120_000)
    values = page.evaluate("window.__progress")
    assert any(0 < value < maximum for value, maximum, _ in values)
    assert values[-1][0] == 100 and values[-1][2] == "100"
    link = page.locator("#results a.result-link")
    assert link.inner_text() == "fifty.bin"
    assert sha256_of(original) in page.locator("#results").inner_text()
    with page.expect_download() as info:
        link.click()
    assert sha256_of(info.value.path()) == sha256_of(original)
    assert page.locator("#status").inner_text() == "All files uploaded."


@pytest.mark.slow
def test_ajax_cancel_leaves_nothing_on_the_server(app: App, tmp_path: Path) -> None:
    original = random_file(tmp_path, "cancel.bin", 40 * MiB)
    page = app.new_page()
    page.goto("/ajax")
    throttle_upload(page, 4 * MiB)  # ten seconds for the whole file: cancel well before
    page.set_input_files("#inputFile", str(original))
    page.click("#start")
    page.wait_for_function("() => document.getElementById('overall').value >= 5")
    assert page.evaluate("document.getElementById('overall').value") < 100
    page.click("#cancel")
    page.wait_for_function("() => document.getElementById('status').textContent.includes('cancelled')")
    assert page.locator("#results li").count() == 0
    # Give the server time to see the closed connection, then look (bounded).
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        assert app.stored() == [] and app.temporary() == []
        time.sleep(0.25)
    # The page (and server) still work: a small upload goes through.
    small = random_file(tmp_path, "after.txt", 100)
    throttle_upload(page, -1)
    page.set_input_files("#inputFile", str(small))
    page.click("#start")
    page.wait_for_selector("#results a.result-link")
    assert len(app.stored()) == 1 and app.temporary() == []


def _cookie(app: App) -> str:
    return next(c["value"] for c in app.context.cookies() if c["name"] == "sessup")


def test_session_page_count_regenerate_destroy(app: App) -> None:
    page = app.new_page()
    page.goto("/session/page")
    assert page.inner_text("#views") == "0"
    assert [c["name"] for c in app.context.cookies()] == ["sessup_csrf"]  # viewing stores no session
    page.click("#count")
    page.wait_for_function("() => document.getElementById('views').textContent === '1'")
    page.click("#count")
    page.wait_for_function("() => document.getElementById('views').textContent === '2'")
    page.reload()
    assert page.inner_text("#views") == "2"
    before = _cookie(app)
    page.click("#regenerate")
    page.wait_for_selector(".flash")
    assert page.inner_text("#views") == "2"
    assert _cookie(app) != before
    page.click("#count")  # the page's token is the new one
    page.wait_for_function("() => document.getElementById('views').textContent === '3'")
    page.once("dialog", lambda dialog: dialog.accept())  # "Destroy this session?" (see the next test)
    page.click("#destroy")
    page.wait_for_function("() => document.getElementById('views').textContent === '0'")
    page.click("#count")
    page.wait_for_function("() => document.getElementById('views').textContent === '1'")


@pytest.mark.parametrize("locale, question", [
    ("en", "Destroy this session? Its data is lost and you start over."),
    ("zh", "要销毁此会话吗？其中的数据会丢失，一切从头开始。"),
])
def test_destroy_asks_first(app: App, zh_app: App, locale: str, question: str) -> None:
    """"Destroy session" asks, in the page's language; cancelling keeps the session."""
    target = zh_app if locale == "zh" else app
    page = target.new_page()
    page.goto("/session/page")
    page.click("#count")
    page.wait_for_function("() => document.getElementById('views').textContent === '1'")
    before = _cookie(target)
    asked: list[str] = []

    def answer(accept: bool) -> Any:
        def handle(dialog: Any) -> None:
            asked.append(dialog.message)
            dialog.accept() if accept else dialog.dismiss()
        return handle

    page.once("dialog", answer(False))
    page.click("#destroy")
    page.click("#count")  # still the same session: the cancelled destroy sent nothing
    page.wait_for_function("() => document.getElementById('views').textContent === '2'")
    assert _cookie(target) == before
    page.once("dialog", answer(True))
    page.click("#destroy")
    page.wait_for_function("() => document.getElementById('views').textContent === '0'")
    assert asked == [question, question]


def test_chinese_locale_text_and_validation_messages(zh_app: App, tmp_path: Path) -> None:
    page = zh_app.new_page()
    page.goto("/upload")
    assert page.inner_text("h1") == "上传表单"
    assert page.get_attribute("html", "lang") == "zh-CN"
    page.click("#upload-formsubmit")
    page.wait_for_selector(".invalid-feedback")
    # colander's own message, ours, and deform's banner, all in Chinese.
    assert page.locator(".invalid-feedback").all_inner_texts() == ["必需", "请至少选择一个文件。"]
    assert "提交的内容有误" in page.inner_text(".alert-danger")
    big = random_file(tmp_path, "太大.bin", 2 * MiB)
    page.set_input_files("input[name=inputFile]", str(big))
    page.fill("input[name=description]", "说明")
    page.click("#upload-formsubmit")
    page.wait_for_selector(".invalid-feedback")
    assert page.locator(".invalid-feedback").all_inner_texts() == ["太大.bin 的大小为 2 MiB；每个文件的上限是 1 MiB。"]
    # The visible switch goes to English and sticks.
    page.click(".lang-switch a[lang=en]")
    assert page.inner_text("h1") == "Upload form"
    page.goto("/session/page")
    assert page.inner_text("h1") == "Session"


def test_sessup_upload_ports_an_ajax_file_upload_call(app: App, tmp_path: Path) -> None:
    original = random_file(tmp_path, "seed.bin", 200_000)
    page = app.new_page()
    page.goto("/ajax")
    page.set_input_files("#inputFile", str(original))
    # The seed's $.ajaxFileUpload({url, fileElementId, dataType, success}) with the name changed.
    text = page.evaluate("""() => new Promise((resolve, reject) => sessupUpload({
        url: '/upFile', fileElementId: 'inputFile', dataType: 'string',
        success: (data, status) => resolve([data, status]), error: (xhr, status, e) => reject(status + ' ' + e)}))""")
    assert text[1] == "success" and text[0].startswith("/uploads/")
    assert page.request.get(app.url + text[0]).body() == original.read_bytes()
    # Without the <meta> token, the token comes from GET /csrf; JSON answers are parsed.
    result = page.evaluate("""() => { document.querySelector('meta[name=csrf-token]').remove();
        return new Promise((resolve, reject) => sessupUpload({
            url: '/upFile', fileElementId: 'inputFile', dataType: 'json',
            success: (data) => resolve(data), error: (xhr, status, e) => reject(status + ' ' + e)})); }""")
    assert result["files"][0]["filename"] == "seed.bin"
    assert result["files"][0]["sha256"] == sha256_of(original)
    # A wrong token the caller insists on (retryCsrf: false) is refused; the error
    # callback gets the server's message and its JSON.
    error = page.evaluate("""() => new Promise((resolve) => sessupUpload({
        url: '/upFile', fileElementId: 'inputFile', dataType: 'json', csrfToken: 'wrong', retryCsrf: false,
        success: () => resolve('unexpected success'),
        error: (xhr, status, message, info) => resolve([xhr.status, message, info.code])}))""")
    assert error[0] == 403 and error[2] == "csrf_token_invalid" and "GET /csrf" in error[1]
    assert len(app.stored()) == 2


def test_ajax_drag_and_drop(app: App) -> None:
    page = app.new_page()
    page.goto("/ajax")
    page.evaluate("""() => {
        const data = new DataTransfer();
        data.items.add(new File([new Uint8Array([1, 2, 3])], 'dropped-1.bin'));
        data.items.add(new File(['hello'], 'dropped-2.txt', {type: 'text/plain'}));
        const zone = document.getElementById('dropzone');
        zone.dispatchEvent(new DragEvent('dragover', {dataTransfer: data, bubbles: true, cancelable: true}));
        zone.dispatchEvent(new DragEvent('drop', {dataTransfer: data, bubbles: true, cancelable: true}));
    }""")
    assert page.locator("#queue li .name").all_inner_texts() == ["dropped-1.bin", "dropped-2.txt"]
    assert page.locator("#queue progress").count() == 2
    page.click("#start")
    page.wait_for_function("() => document.querySelectorAll('#results a.result-link').length === 2")
    assert page.locator("#results a.result-link").all_inner_texts() == ["dropped-1.bin", "dropped-2.txt"]
    hrefs = page.locator("#results a.result-link").evaluate_all("links => links.map(a => a.getAttribute('href'))")
    assert page.request.get(app.url + hrefs[1]).body() == b"hello"
    assert page.locator("#queue progress").evaluate_all("bars => bars.map(b => b.getAttribute('aria-valuenow'))") \
        == ["100", "100"]
