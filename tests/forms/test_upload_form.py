"""``GET/POST /upload`` through WebTest: the streaming pipeline, deform, the
session-backed kept files, every validator, CSRF."""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
import webtest

from .. import samples
from .conftest import FormClient, errors, form_errors, kept_uids, sha, stored_files, temp_files

MiB = 1024 * 1024


def stored_links(html: str) -> list[tuple[str, str]]:
    """(href, filename) of each file on the success page."""
    return re.findall(r'<a class="file-link" href="([^"]+)" download="[^"]*">([^<]*)</a>', html)


def test_get_renders_one_multiple_file_input(form: FormClient) -> None:
    page = form.open()
    inputs = re.findall(r'<input type="file"[^>]*>', page.text)
    assert len(inputs) == 1
    assert 'name="inputFile"' in inputs[0] and 'multiple="multiple"' in inputs[0]
    assert 'name="csrf_token"' in page.text
    assert page.headers["Cache-Control"] == "no-store"
    # Styles come from this server, never a CDN.
    assert re.findall(r'href="(https?:)?//', page.text) == []


def test_several_files_in_one_input_stored_byte_exact(form: FormClient, upload_dir: Path) -> None:
    files = [("a.txt", b"hello"), ("all-bytes.bin", bytes(range(256)) * 40), ("empty.dat", b""),
             ("图片.png", b"\x89PNG\r\n\x1a\n" + os.urandom(3000))]
    page = form.post(files, description="four files", status=303).follow()
    links = stored_links(page.text)
    assert [name for _, name in links] == [name for name, _ in files]
    for (href, _), (name, data) in zip(links, files):
        download = form.app.get(href)
        assert download.body == data
        assert sha(data) in page.text
    # Real sizes, not -1.
    for _, data in files:
        assert f'title="{len(data)}"' in page.text
    assert len(stored_files(upload_dir)) == 4
    assert temp_files(upload_dir) == []
    assert "four files" in page.text


def test_failed_then_fixed_keeps_files_without_sending_them_again(form: FormClient, upload_dir: Path) -> None:
    files = [("one.txt", b"1" * 1000), ("two.txt", b"2" * 2000), ("three.bin", os.urandom(5000))]
    failed = form.post(files, description="", status=400)
    assert errors(failed.text) == ["Required"]
    uids = kept_uids(failed.text)
    assert len(uids) == 3
    assert all(name in failed.text for name, _ in files)
    assert stored_files(upload_dir) == [] and len(temp_files(upload_dir)) == 3

    done = form.post([], description="fixed", keep=uids, status=303).follow()
    links = stored_links(done.text)
    assert [name for _, name in links] == ["one.txt", "two.txt", "three.bin"]
    for (href, _), (_, data) in zip(links, files):
        assert form.app.get(href).body == data
    assert temp_files(upload_dir) == []
    # A uid is used once: sending it again finds nothing.
    again = form.post([], description="again", keep=uids, status=400)
    assert errors(again.text) == ["Choose at least one file."]


def test_kept_and_new_files_together_and_untick_drops(form: FormClient, upload_dir: Path) -> None:
    failed = form.post([("a.txt", b"a"), ("b.txt", b"b")], description="", status=400)
    uid_a, uid_b = kept_uids(failed.text)
    done = form.post([("c.txt", b"c")], description="ok", keep=[uid_a], status=303).follow()
    assert [name for _, name in stored_links(done.text)] == ["a.txt", "c.txt"]


def test_uid_of_another_session_is_ignored(form: FormClient, app, upload_dir: Path) -> None:
    failed = form.post([("secret.txt", b"secret")], description="", status=400)
    [uid] = kept_uids(failed.text)
    other = FormClient(webtest.TestApp(app, extra_environ={"HTTP_HOST": "example.com"}))
    other.open()
    page = other.post([], description="steal", keep=[uid], status=400)
    assert errors(page.text) == ["Choose at least one file."]
    assert "secret.txt" not in page.text


def test_no_file_is_an_error(form: FormClient) -> None:
    page = form.post([], description="nothing", status=400)
    assert errors(page.text) == ["Choose at least one file."]


def test_description_too_long(form: FormClient, upload_dir: Path) -> None:
    page = form.post([("a.txt", b"a")], description="x" * 501, status=400)
    assert len(errors(page.text)) == 1 and "500" in errors(page.text)[0]
    assert len(kept_uids(page.text)) == 1


def test_file_over_per_file_limit_is_named_and_dropped(make_form, upload_dir: Path) -> None:
    form = make_form(**{"sessup.upload.max_file_size": "1000", "sessup.upload.max_total_size": "100000"})
    page = form.post([("big.bin", b"x" * 1001), ("fine.txt", b"y" * 1000)], status=400)
    assert errors(page.text) == ["big.bin is 1001 bytes; the limit is 1000 bytes per file."]
    # The good file is kept, the oversized one is gone from disk.
    assert re.findall(r'class="kept-name">([^<]+)<', page.text) == ["fine.txt"]
    assert len(temp_files(upload_dir)) == 1 and stored_files(upload_dir) == []


def test_file_exactly_at_limit_is_accepted(make_form) -> None:
    form = make_form(**{"sessup.upload.max_file_size": "1000", "sessup.upload.max_total_size": "100000"})
    page = form.post([("edge.bin", b"x" * 1000)], status=303).follow()
    assert len(stored_links(page.text)) == 1


def test_total_size_over_limit(make_form, upload_dir: Path) -> None:
    form = make_form(**{"sessup.upload.max_file_size": "1000", "sessup.upload.max_total_size": "1500"})
    first = form.post([("a.bin", b"a" * 1000)], description="", status=400)
    uid = kept_uids(first.text)
    # Kept 1000 + new 1000 bytes > 1500 in total: named in the message, files kept.
    page = form.post([("b.bin", b"b" * 1000)], keep=uid, status=400)
    assert errors(page.text) == ["Together the files are 1.95 KiB; the limit is 1.46 KiB."]
    assert len(kept_uids(page.text)) == 2
    # Dropping one fixes it.
    done = form.post([], keep=kept_uids(page.text)[:1], status=303).follow()
    assert [name for _, name in stored_links(done.text)] == ["a.bin"]


def test_too_many_files(make_form, upload_dir: Path) -> None:
    form = make_form(**{"sessup.upload.max_files": "2"})
    page = form.post([("1.txt", b"1"), ("2.txt", b"2"), ("3.txt", b"3")], status=400)
    assert errors(page.text) == ["3 files chosen; at most 2 are accepted."]
    assert len(kept_uids(page.text)) == 3
    done = form.post([], keep=kept_uids(page.text)[:2], status=303).follow()
    assert len(stored_links(done.text)) == 2


def test_far_too_many_files_is_refused_by_the_pipeline(make_form, upload_dir: Path) -> None:
    form = make_form(**{"sessup.upload.max_files": "2"})
    page = form.post([(f"{i}.txt", b"x") for i in range(5)], status=413)
    # The limit people are held to (2), not the pipeline's looser cut-off for the form (4).
    assert form_errors(page.text) == ["Too many files: at most 2 per upload."]
    assert 'id="upload-form"' in page.text
    assert temp_files(upload_dir) == [] and stored_files(upload_dir) == []


def test_allowed_extensions(make_form, upload_dir: Path) -> None:
    form = make_form(**{"sessup.upload.allowed_extensions": "png txt"})
    page = form.post([("evil.html", b"<script>"), ("ok.txt", b"ok")], status=400)
    assert errors(page.text) == ["evil.html is not an accepted type (accepted: .png, .txt)."]
    assert re.findall(r'class="kept-name">([^<]+)<', page.text) == ["ok.txt"]
    assert len(temp_files(upload_dir)) == 1


def test_allowed_types(make_form, upload_dir: Path) -> None:
    form = make_form(**{"sessup.upload.allowed_types": "image/*"})
    page = form.post([("doc.pdf", b"%PDF-1.4")], status=400)
    assert errors(page.text) == ["doc.pdf is not an accepted type (accepted: image/*)."]
    assert temp_files(upload_dir) == []
    done = form.post([("pic.png", samples.png())], status=303).follow()
    assert [name for _, name in stored_links(done.text)] == ["pic.png"]


def test_bad_csrf_token_is_403_and_leaves_nothing(form: FormClient, upload_dir: Path) -> None:
    response = form.post([("a.txt", b"a" * 5000)], token="wrong", status=403)
    assert "<h1>This form has expired</h1>" in response.text
    assert re.search(r'<a class="btn btn-primary" id="reload-form" href="/upload"', response.text)
    assert temp_files(upload_dir) == [] and stored_files(upload_dir) == []


def test_missing_csrf_token_is_403(form: FormClient, upload_dir: Path) -> None:
    response = form.app.post("/upload", [("description", "x")], upload_files=[("inputFile", "a.txt", b"a")],
                             status=403)
    assert response.status_int == 403
    assert temp_files(upload_dir) == []


def test_not_multipart_is_415(form: FormClient, upload_dir: Path) -> None:
    response = form.app.post("/upload", {"csrf_token": form.token, "description": "x"}, status=415)
    assert 'id="upload-form"' in response.text
    assert temp_files(upload_dir) == []


def test_truncated_body_is_400_and_leaves_nothing(form: FormClient, upload_dir: Path) -> None:
    boundary = "b0undary"
    data = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"csrf_token\"\r\n\r\n{form.token}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"inputFile\"; filename=\"a.txt\"\r\n\r\n"
            ).encode() + b"x" * 10000
    # TestApp.request skips extra_environ: the Host header makes the session cookie go along.
    response = form.app.request("/upload", method="POST", body=data, status=400,
                                headers={"Content-Type": f"multipart/form-data; boundary={boundary}",
                                         "Host": "example.com"})
    assert response.status_int == 400
    assert temp_files(upload_dir) == [] and stored_files(upload_dir) == []


def test_kept_files_expire_and_are_removed(make_form, upload_dir: Path) -> None:
    form = make_form(**{"sessup.upload.temp_max_age": "1"})
    failed = form.post([("a.txt", b"a")], description="", status=400)
    uids = kept_uids(failed.text)
    assert len(temp_files(upload_dir)) == 1
    time.sleep(1.2)  # let the entry outlive sessup.upload.temp_max_age
    form.open()  # any use of the store purges expired entries
    assert temp_files(upload_dir) == []
    page = form.post([], keep=uids, status=400)
    assert errors(page.text) == ["Choose at least one file."]


def test_chinese_validation_messages(form: FormClient) -> None:
    form.open("/upload?_LOCALE_=zh_CN")
    page = form.post([], description="", status=400)
    assert "<h1>上传表单</h1>" in page.text
    # colander's own "Required" and ours, both in Chinese; deform's banner too.
    assert errors(page.text) == ["必需", "请至少选择一个文件。"]
    assert "提交的内容有误" in page.text


def test_chinese_limit_message_names_file_and_limit(make_form) -> None:
    form = make_form(**{"sessup.upload.max_file_size": "1024", "sessup.upload.max_total_size": "100000"})
    form.open("/upload", headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.5"})
    page = form.post([("大文件.bin", b"x" * 2048)], headers={"Accept-Language": "zh-CN"}, status=400)
    assert errors(page.text) == ["大文件.bin 的大小为 2 KiB；每个文件的上限是 1 KiB。"]


def test_the_body_is_never_parsed_by_webob(make_app, upload_dir: Path) -> None:
    app = make_app()
    seen: list[dict] = []

    def spy(environ: dict, start_response):  # records the environ the app saw
        seen.append(environ)
        return app(environ, start_response)

    client = FormClient(webtest.TestApp(spy, extra_environ={"HTTP_HOST": "example.com"}))
    client.open()
    client.post([("a.txt", b"a" * 100_000)], description="", status=400)
    client.post([], keep=[], description="x", status=400)
    posts = [e for e in seen if e["REQUEST_METHOD"] == "POST"]
    assert len(posts) == 2
    # WebOb caches a parsed request.POST in the environ; the pipeline never asks for it.
    assert all("webob._parsed_post_vars" not in e for e in posts)


def test_no_upload_directory_means_no_upload_pages(make_app) -> None:
    client = webtest.TestApp(make_app(**{"sessup.upload.path": ""}), extra_environ={"HTTP_HOST": "example.com"})
    client.get("/upload", status=404)
    client.get("/ajax", status=404)
    home = client.get("/")
    assert 'href="/upload"' not in home.text and 'href="/session/page"' in home.text


def test_accept_attribute_follows_the_allow_lists(make_form) -> None:
    form = make_form(**{"sessup.upload.allowed_extensions": "png pdf", "sessup.upload.allowed_types": "image/*"})
    page = form.open()
    assert 'accept=".png,.pdf,image/*"' in page.text


def test_kept_files_show_their_size(form: FormClient) -> None:
    page = form.post([("a.bin", b"a" * 3000)], description="", status=400)
    assert re.search(r'title="3000">\(2.93 KiB\)', page.text)


# -- refusals people can act on ---------------------------------------------------------

def description_value(html: str) -> str:
    return re.search(r'<input type="text" name="description" value="([^"]*)"', html).group(1)


def test_413_names_the_per_file_limit_and_keeps_the_description_and_the_files_that_fit(
        make_form, upload_dir: Path) -> None:
    form = make_form(**{"sessup.upload.max_file_size": "1024", "sessup.upload.max_total_size": "3072"})
    # big.bin is over the total too, so the pipeline stops at it: 413, not a validation message.
    page = form.post([("fits.txt", b"a" * 500), ("big.bin", b"b" * 4000)], description="holiday", status=413)
    assert form_errors(page.text) == ["big.bin is larger than 1 KiB, the limit per file."]
    assert '<div id="form-errors" class="alert alert-danger" role="alert">' in page.text
    assert description_value(page.text) == "holiday"
    assert re.findall(r'class="kept-name">([^<]+)<', page.text) == ["fits.txt"]
    assert stored_files(upload_dir) == [] and len(temp_files(upload_dir)) == 1
    # Sending again with the kept file (nothing picked again) stores it.
    done = form.post([], description="holiday", keep=kept_uids(page.text), status=303).follow()
    assert [name for _, name in stored_links(done.text)] == ["fits.txt"]
    assert temp_files(upload_dir) == []


def test_413_in_chinese_is_all_chinese(make_form) -> None:
    form = make_form(**{"sessup.upload.max_file_size": "1024", "sessup.upload.max_total_size": "3072"})
    form.open("/upload?_LOCALE_=zh_CN")
    page = form.post([("小.txt", b"a" * 10), ("大.bin", b"b" * 4000)], description="说明", status=413)
    assert form_errors(page.text) == ["大.bin 超过了每个文件 1 KiB 的上限。"]
    assert re.search(r'title="10">\(10 字节\)', page.text)  # the kept file's size, in Chinese too
    assert description_value(page.text) == "说明"


def test_413_for_the_total_keeps_the_files_before_it(make_form, upload_dir: Path) -> None:
    form = make_form(**{"sessup.upload.max_file_size": "1000", "sessup.upload.max_total_size": "1500"})
    page = form.post([("one.bin", b"1" * 1000), ("two.bin", b"2" * 1000)], description="d", status=413)
    assert form_errors(page.text) == ["Together the files are larger than 1.46 KiB, the limit per upload."]
    assert re.findall(r'class="kept-name">([^<]+)<', page.text) == ["one.bin"]


def test_success_redirects_and_a_reload_stores_nothing_again(form: FormClient, upload_dir: Path) -> None:
    posted = form.post([("a.txt", b"a"), ("b.txt", b"bb")], description="twice?", status=303)
    assert posted.location.startswith("/upload/done?r=")  # a path, never built from Host
    first = form.app.get(posted.location)
    again = form.app.get(posted.location)  # what a reload does: a GET
    assert stored_links(first.text) == stored_links(again.text)
    assert [name for _, name in stored_links(again.text)] == ["a.txt", "b.txt"]
    assert len(stored_files(upload_dir)) == 2
    assert re.search(r'<div class="alert alert-success" role="status" id="saved">Saved 2 files.</div>', again.text)
    assert "twice?" in again.text and again.headers["Cache-Control"] == "no-store"


def test_done_page_without_an_upload_goes_to_the_form(form: FormClient) -> None:
    assert form.app.get("/upload/done", status=303).location == "/upload"


def test_done_page_shows_only_its_own_visitors_result(form: FormClient, make_form) -> None:
    """The result rides in the redirect's URL (no session is stored), signed for
    the visitor: a forged or another visitor's link goes to the form."""
    location = form.post([("a.txt", b"a")], description="mine", status=303).location
    assert form.app.cookies.get("sessup") is None  # nothing stored in a session
    assert "mine" in form.app.get(location).text
    payload = location.split("r=")[1].split("&")[0]
    forged = location.replace(payload, payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB"))
    assert form.app.get(forged, status=303).location == "/upload"
    other = make_form()  # make_form opens the form: a visitor of its own
    assert other.app.get(location, status=303).location == "/upload"


@pytest.mark.parametrize("locale, count, text", [
    ("en", 1, "Saved 1 file."), ("en", 3, "Saved 3 files."), ("zh_CN", 1, "已保存 1 个文件。"),
    ("zh_CN", 3, "已保存 3 个文件。")])
def test_saved_message_has_plural_forms(form: FormClient, locale: str, count: int, text: str) -> None:
    form.open(f"/upload?_LOCALE_={locale}")
    page = form.post([(f"{i}.txt", b"x") for i in range(count)], status=303).follow()
    assert re.search(r'id="saved">([^<]*)<', page.text).group(1) == text


@pytest.mark.parametrize("locale, title", [("en", "This form has expired"), ("zh_CN", "此表单已过期")])
def test_a_form_whose_session_was_destroyed_gets_a_page_that_offers_to_reload(
        form: FormClient, upload_dir: Path, locale: str, title: str) -> None:
    form.open(f"/upload?_LOCALE_={locale}")
    stale = form.token
    form.app.post("/session/destroy", headers={"X-CSRF-Token": stale})
    page = form.post([("a.txt", b"a" * 5000)], token=stale, status=403)
    assert page.content_type == "text/html"
    assert f"<h1>{title}</h1>" in page.text
    reload_link = re.search(r'<a class="btn btn-primary" id="reload-form" href="([^"]+)"', page.text).group(1)
    assert reload_link == "/upload"
    assert temp_files(upload_dir) == [] and stored_files(upload_dir) == []
    # The reloaded form works.
    form.open(reload_link)
    assert form.post([("a.txt", b"a")], status=303).location.startswith("/upload/done?r=")


def test_a_script_on_the_form_gets_the_json_error(form: FormClient) -> None:
    res = form.post([("a.txt", b"a")], token="wrong", status=403, headers={"Accept": "application/json"})
    assert res.json["code"] == "csrf_token_invalid"


def test_files_kept_by_a_refused_upload_are_offered_again_by_a_fresh_form(
        make_form, upload_dir: Path) -> None:
    """A refused upload keeps the files that fit; the form opened again (a reload, the
    stale-token page's link, a new tab) offers them, and sending it stores them."""
    form = make_form(**{"sessup.upload.max_file_size": "1024", "sessup.upload.max_total_size": "3072"})
    page = form.post([("fits.txt", b"a" * 500), ("big.bin", b"b" * 4000)], description="d", status=413)
    uids = kept_uids(page.text)
    fresh = form.open()
    assert re.findall(r'class="kept-name">([^<]+)<', fresh.text) == ["fits.txt"]
    assert kept_uids(fresh.text) == uids
    done = form.post([], description="again", keep=kept_uids(fresh.text), status=303).follow()
    assert [name for _, name in stored_links(done.text)] == ["fits.txt"]
    assert temp_files(upload_dir) == []
    assert kept_uids(form.open().text) == []  # stored: no longer offered
