"""What a person sees when something goes wrong, in Chromium, in English and
Chinese: the form's 413, /ajax's refusals (before sending and from the
server), forms and uploads whose CSRF token died with the session, and a
reload after a successful form upload."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Iterator

import pytest

from .conftest import App, start_app
from .conftest import random_file as random_bytes


def random_file(directory: Path, name: str, size: int) -> Path:
    """A file of ``size`` random bytes; random text for a ``.txt`` (the content
    check refuses a ``.txt`` that is not text)."""
    if not name.endswith(".txt"):
        return random_bytes(directory, name, size)
    path = directory / name
    path.write_bytes(bytes(random.choice(b"abcdefghijklmnopqrstuvwxyz \n") for _ in range(size)))
    return path


pytestmark = [pytest.mark.browser, pytest.mark.server]

LIMITS = {"sessup.upload.max_file_size": "100000", "sessup.upload.max_total_size": "150000",
          "sessup.upload.max_files": "3"}

#: Expected texts by locale.
TEXT = {
    "en": {
        "form_413": "big.bin is larger than 97.66 KiB, the limit per file.",
        "expired": "This form has expired",
        "file_too_large": "big.bin is larger than 97.66 KiB, the limit per file.",
        "type": "evil.exe is not an accepted type (accepted: .txt, .bin).",
        "count": "Too many files: at most 3 per upload.",
        "total": "Together the files are larger than 146.48 KiB, the limit per upload.",
        "server_413": "The upload is larger than the server accepts.",
        "not_stored": "Not stored",
        "saved_1": "Saved 1 file.",
        "bytes": "12 bytes",
    },
    "zh_CN": {
        "form_413": "big.bin 超过了每个文件 97.66 KiB 的上限。",
        "expired": "此表单已过期",
        "file_too_large": "big.bin 超过了每个文件 97.66 KiB 的上限。",
        "type": "evil.exe 的类型不被接受（可接受：.txt, .bin）。",
        "count": "文件太多：每次最多上传 3 个。",
        "total": "这些文件合计超过了每次上传 146.48 KiB 的上限。",
        "server_413": "上传的内容超过了服务器可接受的大小。",
        "not_stored": "未保存",
        "saved_1": "已保存 1 个文件。",
        "bytes": "12 字节",
    },
}
BROWSER_LOCALE = {"en": "en-US", "zh_CN": "zh-CN"}


@pytest.fixture(params=["en", "zh_CN"])
def locale(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def limited(tmp_path: Path, browser: Any, locale: str) -> Iterator[App]:
    server, app = start_app(tmp_path, browser, {**LIMITS, "sessup.upload.allowed_extensions": "txt bin"},
                            locale=BROWSER_LOCALE[locale],
                            # waitress's own body limit: past it, its bare 413 page.
                            server={"max_request_body_size": "200000"})
    try:
        yield app
    finally:
        app.context.close()
        server.stop()


def upload_posts(page: Any) -> list[str]:
    """Records the page's POSTs to /upFile (their URLs), as they are sent."""
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" and r.url.endswith("/upFile") else None)
    return posts


# -- the upload form ----------------------------------------------------------------------

def test_form_413_names_the_limit_keeps_description_and_files_then_no_duplicate_on_reload(
        limited: App, tmp_path: Path, locale: str) -> None:
    text = TEXT[locale]
    fits = random_file(tmp_path, "fits.txt", 12)
    big = random_file(tmp_path, "big.bin", 160_000)  # over the total too: the pipeline stops there
    page = limited.new_page()
    page.goto("/upload")
    page.set_input_files("input[name=inputFile]", [str(fits), str(big)])
    page.fill("input[name=description]", "two files")
    with page.expect_navigation() as navigation:
        page.click("#upload-formsubmit")
    assert navigation.value.status == 413
    box = page.locator("#form-errors")
    assert box.inner_text().strip() == text["form_413"]
    assert box.get_attribute("role") == "alert" and "alert-danger" in box.get_attribute("class")
    assert page.locator(".flash").count() == 0  # not an info banner
    assert page.input_value("input[name=description]") == "two files"
    assert page.locator(".kept-name").all_inner_texts() == ["fits.txt"]
    assert page.locator(".kept-file .text-muted").inner_text() == f"({text['bytes']})"
    assert limited.stored() == []
    # Send again as is: the kept file is stored, and the browser lands on a GET.
    page.click("#upload-formsubmit")
    page.wait_for_selector("#stored-files")
    assert "/upload/done?r=" in page.url
    assert page.inner_text("#saved") == text["saved_1"]
    assert page.locator("a.file-link").all_inner_texts() == ["fits.txt"]
    stored = limited.stored()
    assert len(stored) == 1
    page.reload()  # no "resend the form?": nothing is posted again
    page.wait_for_selector("#stored-files")
    assert limited.stored() == stored


def test_form_with_a_dead_token_offers_to_reload(limited: App, tmp_path: Path, locale: str) -> None:
    page = limited.new_page()
    page.goto("/upload")
    token = page.get_attribute("meta[name=csrf-token]", "content")
    # The session ends (here destroyed from another tab) while the form is open.
    assert page.request.post(limited.url + "/session/destroy", headers={"X-CSRF-Token": token}).ok
    page.set_input_files("input[name=inputFile]", str(random_file(tmp_path, "a.txt", 100)))
    page.fill("input[name=description]", "late")
    with page.expect_navigation() as navigation:
        page.click("#upload-formsubmit")
    assert navigation.value.status == 403
    assert page.inner_text("h1") == TEXT[locale]["expired"]
    assert page.locator("#stale").get_attribute("role") == "alert"
    assert limited.stored() == [] and limited.temporary() == []
    page.click("#reload-form")
    page.wait_for_selector("#upload-formsubmit")
    page.set_input_files("input[name=inputFile]", str(random_file(tmp_path, "a.txt", 100)))
    page.fill("input[name=description]", "again")
    page.click("#upload-formsubmit")
    page.wait_for_selector("#stored-files")
    assert len(limited.stored()) == 1


def test_session_button_with_a_dead_token_offers_to_reload(limited: App, locale: str) -> None:
    page = limited.new_page()
    page.goto("/session/page")
    page.context.clear_cookies()  # the session is gone (as after it expired)
    page.click("#regenerate")
    assert page.inner_text("h1") == TEXT[locale]["expired"]
    page.click("#reload-form")
    page.wait_for_selector("#regenerate")
    page.click("#regenerate")
    page.wait_for_selector(".flash")


# -- /ajax ------------------------------------------------------------------------------

def _pick(page: Any, files: list[Path]) -> None:
    page.set_input_files("#inputFile", [str(f) for f in files])


def test_ajax_checks_before_sending(limited: App, tmp_path: Path, locale: str) -> None:
    text = TEXT[locale]
    page = limited.new_page()
    posts = upload_posts(page)
    page.goto("/ajax")
    # A file over the per-file limit: its own row says why, nothing is sent.
    _pick(page, [random_file(tmp_path, "ok.txt", 12), random_file(tmp_path, "big.bin", 100_001)])
    assert page.inner_text("#queue li:nth-child(1) .name") == "ok.txt"
    assert page.get_attribute("#queue li:nth-child(1) .name", "title") == f"ok.txt ({text['bytes']})"
    page.click("#start")
    assert page.inner_text("#error") == text["file_too_large"]
    assert page.inner_text("#queue li:nth-child(2) .file-error") == text["file_too_large"]
    assert page.inner_text("#queue li:nth-child(2) .progress-text") == text["not_stored"]
    # A type the server does not take, too many files, too much in total.
    _pick(page, [random_file(tmp_path, "evil.exe", 10)])
    page.click("#start")
    assert page.inner_text("#error") == text["type"]
    _pick(page, [random_file(tmp_path, f"{i}.txt", 10) for i in range(4)])
    page.click("#start")
    assert page.inner_text("#error") == text["count"]
    _pick(page, [random_file(tmp_path, "a.bin", 80_000), random_file(tmp_path, "b.bin", 80_000)])
    page.click("#start")
    assert page.inner_text("#error") == text["total"]
    assert posts == [] and limited.stored() == []
    # What fits goes.
    _pick(page, [random_file(tmp_path, "fine.txt", 12)])
    page.click("#start")
    page.wait_for_selector("#results a.result-link")
    assert len(posts) == 1 and len(limited.stored()) == 1


def test_ajax_server_refusal_is_short_translated_and_the_bar_is_not_full(
        limited: App, tmp_path: Path, locale: str) -> None:
    text = TEXT[locale]
    page = limited.new_page()
    posts = upload_posts(page)
    page.goto("/ajax")
    # The page believes anything goes (as with limits it does not know): the server judges.
    page.evaluate("""() => { document.getElementById('sessup-limits').textContent =
        JSON.stringify({max_file_size: 1e12, max_total_size: 1e12, max_files: 1000,
                        allowed_extensions: [], allowed_types: []}); }""")
    _pick(page, [random_file(tmp_path, "ok.txt", 500), random_file(tmp_path, "big.bin", 100_001)])
    page.click("#start")
    page.wait_for_function("() => !document.getElementById('error').hidden")
    assert page.inner_text("#error") == text["file_too_large"]  # not "sessup.upload.max_file_size"
    assert page.inner_text("#queue li:nth-child(2) .file-error") == text["file_too_large"]
    bars = page.locator("#queue progress").evaluate_all("bars => bars.map(b => b.value)")
    assert bars == [0, 0]  # all or nothing: neither file was stored, neither bar is full
    assert page.locator("#queue li:nth-child(1) .progress-text").inner_text() == text["not_stored"]
    assert page.evaluate("document.getElementById('overall').value") == 0
    assert len(posts) == 1 and limited.stored() == []
    # A body over the server's own limit (waitress's max_request_body_size): its bare
    # "Request Entity Too Large" page becomes the short message.
    _pick(page, [random_file(tmp_path, "a.bin", 110_000), random_file(tmp_path, "b.bin", 110_000)])
    page.click("#start")
    page.wait_for_function("() => !document.getElementById('error').hidden")
    assert page.inner_text("#error") == text["server_413"]
    assert "Request Entity" not in page.inner_text("main")
    assert limited.stored() == [] and limited.temporary() == []


def test_ajax_upload_after_the_session_died_fetches_a_token_and_retries_once(
        limited: App, tmp_path: Path, locale: str) -> None:
    page = limited.new_page()
    posts = upload_posts(page)
    page.goto("/ajax")
    old = page.get_attribute("meta[name=csrf-token]", "content")
    assert page.request.post(limited.url + "/session/destroy", headers={"X-CSRF-Token": old}).ok
    _pick(page, [random_file(tmp_path, "a.txt", 100), random_file(tmp_path, "b.txt", 200)])
    page.click("#start")
    page.wait_for_function("() => document.querySelectorAll('#results a.result-link').length === 2")
    assert len(posts) == 2  # the refused one, then one retry with the fresh token
    fresh = page.get_attribute("meta[name=csrf-token]", "content")
    assert fresh and fresh != old
    assert len(limited.stored()) == 2  # no file lost, none twice
    # The fresh token is used from now on: one POST.
    _pick(page, [random_file(tmp_path, "c.txt", 10)])
    page.click("#start")
    page.wait_for_function("() => document.querySelectorAll('#results a.result-link').length === 3")
    assert len(posts) == 3


def test_sessup_upload_retries_only_once(limited: App, tmp_path: Path) -> None:
    page = limited.new_page()
    posts = upload_posts(page)
    page.goto("/ajax")
    # /csrf keeps handing out a token the server refuses.
    page.route("**/csrf", lambda route: route.fulfill(status=200, content_type="application/json",
                                                       body='{"csrf_token": "still-wrong"}'))
    page.evaluate("document.querySelector('meta[name=csrf-token]').setAttribute('content', 'dead')")
    _pick(page, [random_file(tmp_path, "a.txt", 100)])
    result = page.evaluate("""() => new Promise((resolve) => sessupUpload({
        url: '/upFile', fileElementId: 'inputFile', dataType: 'json',
        success: () => resolve('unexpected success'),
        error: (xhr, status, message, info) => resolve([xhr.status, info && info.code])}))""")
    assert result == [403, "csrf_token_invalid"]
    assert len(posts) == 2 and limited.stored() == []
