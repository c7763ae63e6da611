"""The HTML pages: home, /ajax, the session page and its buttons."""
from __future__ import annotations

import json
import re

import webtest


def cookie(testapp: webtest.TestApp, name: str = "sessup") -> str | None:
    return testapp.cookies.get(name)


def views(page: webtest.TestResponse) -> int:
    return int(re.search(r'<dd id="views">(\d+)</dd>', page.text).group(1))


def test_home_links_every_page(testapp: webtest.TestApp) -> None:
    page = testapp.get("/")
    for href in ("/upload", "/ajax", "/session/page", "/session", "/csrf"):
        assert f'href="{href}"' in page.text
    assert page.content_type == "text/html"


def test_static_assets_are_served_locally(testapp: webtest.TestApp) -> None:
    page = testapp.get("/ajax")
    assets = re.findall(r'(?:href|src)="(/(?:static|deform_static)/[^"]+)"', page.text)
    assert {"/static/sessup.css", "/static/sessup-upload.js", "/static/ajax-upload.js",
            "/deform_static/css/bootstrap.min.css"} <= set(assets)
    for asset in assets:
        assert testapp.get(asset).status_int == 200
    assert not re.search(r'(?:href|src)="(?:https?:)?//', page.text)


def test_ajax_page(testapp: webtest.TestApp) -> None:
    page = testapp.get("/ajax")
    token = re.search(r'<meta name="csrf-token" content="([^"]+)">', page.text).group(1)
    assert token == testapp.get("/csrf").json["csrf_token"]
    assert 'data-upload-url="/upFile"' in page.text
    assert re.search(r'<input type="file"[^>]*id="inputFile"[^>]*name="inputFile"[^>]*multiple', page.text)
    assert re.search(r'<progress id="overall"[^>]*aria-labelledby="overall-label"', page.text)
    messages = re.search(r'<script type="application/json" id="sessup-messages">(.*?)</script>', page.text).group(1)
    assert '"done": "All files uploaded."' in messages
    zh = testapp.get("/ajax?_LOCALE_=zh_CN")
    assert "所有文件已上传。" in zh.text and "<h1>Ajax 上传</h1>" in zh.text


def token_of(page: webtest.TestResponse) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)


def count(testapp: webtest.TestApp, page: webtest.TestResponse) -> webtest.TestResponse:
    """Press "Count a view"; the redirect's page."""
    return testapp.post("/session/page/count", {"csrf_token": token_of(page)}, status=303).follow()


def test_session_page_counts_regenerates_and_destroys(testapp: webtest.TestApp) -> None:
    first = testapp.get("/session/page")
    assert views(first) == 0 and cookie(testapp) is None  # viewing stores nothing
    assert views(testapp.get("/session/page")) == 0
    page = count(testapp, first)
    assert views(page) == 1 and cookie(testapp)
    page = count(testapp, count(testapp, page))
    assert views(page) == 3
    assert views(testapp.get("/session/page")) == 3  # a reload only reads
    before = cookie(testapp)
    after = testapp.post("/session/page/regenerate", {"csrf_token": token_of(page)}, status=303).follow()
    assert cookie(testapp) != before
    assert views(after) == 3  # the data (count) survived the new ID
    assert "The session has a new ID" in after.text
    # The pre-regenerate token is dead; the page shows the new one.
    assert token_of(after) != token_of(page)
    testapp.post("/session/page/count", {"csrf_token": token_of(page)}, status=403)
    fresh = testapp.post("/session/page/destroy", {"csrf_token": token_of(after)}, status=303).follow()
    assert views(fresh) == 0
    # Destroying says so, as regenerating does.
    assert re.search(r'<div class="flash" role="status">The session was destroyed; this is a new one.</div>',
                     fresh.text)
    assert views(count(testapp, fresh)) == 1


def test_session_buttons_need_the_csrf_token(testapp: webtest.TestApp) -> None:
    count(testapp, count(testapp, testapp.get("/session/page")))
    testapp.post("/session/page/count", {"csrf_token": "wrong"}, status=403)
    refused = testapp.post("/session/page/regenerate", {"csrf_token": "wrong"}, status=403)
    testapp.post("/session/page/destroy", {}, status=403)
    assert views(testapp.get("/session/page")) == 2
    testapp.get("/session/page/destroy", status=404)
    testapp.get("/session/page/count", status=404)
    # A browser is told what happened and offered the page again.
    assert "<h1>This form has expired</h1>" in refused.text
    assert 'id="reload-form" href="/session/page"' in refused.text


def test_session_button_of_a_dead_session_in_chinese(testapp: webtest.TestApp) -> None:
    page = testapp.get("/session/page?_LOCALE_=zh_CN")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    testapp.post("/session/destroy", headers={"X-CSRF-Token": token})
    refused = testapp.post("/session/page/destroy", {"csrf_token": token}, status=403)
    assert "<h1>此表单已过期</h1>" in refused.text and "重新加载表单" in refused.text


def test_ajax_page_publishes_its_limits_and_messages(make_app) -> None:
    client = webtest.TestApp(make_app(**{"sessup.upload.max_file_size": "1000", "sessup.upload.max_files": "3",
                                         "sessup.upload.allowed_extensions": "png txt"}))
    page = client.get("/ajax?_LOCALE_=zh_CN")
    limits = json.loads(re.search(r'<script type="application/json" id="sessup-limits">(.*?)</script>',
                                  page.text).group(1))
    assert limits == {"max_file_size": 1000, "max_total_size": 20971520, "max_files": 3,
                      "allowed_extensions": ["png", "txt"], "allowed_types": []}
    messages = json.loads(re.search(r'<script type="application/json" id="sessup-messages">(.*?)</script>',
                                    page.text).group(1))
    assert messages["errors"]["file_too_large"] == "${name} 超过了每个文件 ${limit} 的上限。"
    assert messages["bytes_other"] == "${count} 字节"
    assert messages["errors"]["body_too_large"] == "上传的内容超过了服务器可接受的大小。"


def test_script_json_cannot_end_its_block(make_app) -> None:
    from pyramid_sessup.demo.pages import _script_json

    text = _script_json({"x": "</script><!-- <b>"})
    assert "<" not in text and json.loads(text) == {"x": "</script><!-- <b>"}


def test_favicon(testapp: webtest.TestApp) -> None:
    icon = testapp.get("/favicon.ico")
    assert icon.content_type == "image/x-icon" and icon.body[:4] == b"\x00\x00\x01\x00"
    assert 'rel="icon" href="/favicon.ico"' in testapp.get("/").text


def test_demo_pages_can_be_turned_off(make_app) -> None:
    client = webtest.TestApp(make_app(**{"sessup.demo.pages": "false"}))
    for path in ("/", "/upload", "/upload/done", "/ajax", "/session/page", "/tus-demo", "/favicon.ico",
                 "/static/sessup.css"):
        client.get(path, status=404)
    # The add-on's routes stay.
    token = client.get("/csrf").json["csrf_token"]
    res = client.post("/upFile", upload_files=[("inputFile", "a.txt", b"a")], headers={"X-CSRF-Token": token})
    assert client.get(res.text).body == b"a"
    assert client.get("/session").json == {"views": 1}


def test_session_page_in_chinese(testapp: webtest.TestApp) -> None:
    page = testapp.get("/session/page", headers={"Accept-Language": "zh-CN"})
    assert "重新生成会话 ID" in page.text and "销毁会话" in page.text
