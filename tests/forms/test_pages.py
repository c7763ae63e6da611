"""The HTML pages: home, /ajax, the session page and its buttons."""
from __future__ import annotations

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
    assert views(count(testapp, fresh)) == 1


def test_session_buttons_need_the_csrf_token(testapp: webtest.TestApp) -> None:
    count(testapp, count(testapp, testapp.get("/session/page")))
    testapp.post("/session/page/count", {"csrf_token": "wrong"}, status=403)
    testapp.post("/session/page/regenerate", {"csrf_token": "wrong"}, status=403)
    testapp.post("/session/page/destroy", {}, status=403)
    assert views(testapp.get("/session/page")) == 2
    testapp.get("/session/page/destroy", status=404)
    testapp.get("/session/page/count", status=404)


def test_session_page_in_chinese(testapp: webtest.TestApp) -> None:
    page = testapp.get("/session/page", headers={"Accept-Language": "zh-CN"})
    assert "重新生成会话 ID" in page.text and "销毁会话" in page.text
