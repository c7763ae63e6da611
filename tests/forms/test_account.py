"""The account pages: sign in, the list of one's sessions, revoke, sign out
everywhere else, sign out; CSRF on every POST; English and Chinese."""
from __future__ import annotations

from typing import Any

import pytest
from pyramid.config import Configurator

from pyramid_sessup.csrf import SessupCSRFStoragePolicy
from pyramid_sessup.demo.account import MAX_USER, relative_time
from pyramid_sessup.demo.devices import describe
from pyramid_sessup.testing import settings_for_tests

from ..accounts import CHROME, FIREFOX, IPHONE, ZH, Device, flash, rows, token_of


@pytest.fixture
def device(app: Any) -> Device:
    return Device(app)


def test_sign_in_page_says_it_demonstrates_sessions_not_passwords(device: Device) -> None:
    page = device.client.get("/account/sign-in")
    assert page.html.select_one("h1").get_text() == "Sign in"
    assert "demonstrates sessions, not passwords" in page.html.select_one("#no-passwords").get_text()
    form = page.forms["sign-in-form"]
    assert form.action == "/account/sign-in" and form.method.upper() == "POST"
    assert set(form.fields) >= {"user", "csrf_token"}
    assert "sessup" not in device.client.cookies  # showing the form stores no session
    zh = device.client.get("/account/sign-in", headers=ZH)
    assert zh.html.select_one("h1").get_text() == "登录"
    assert "演示的是会话，而不是密码" in zh.html.select_one("#no-passwords").get_text()


def test_sign_in_binds_the_session_renews_its_id_and_token(device: Device) -> None:
    # An anonymous session first, so that renewing its ID shows.
    session_page = device.client.get("/session/page")
    device.client.post("/session/page/count", {"csrf_token": token_of(session_page)}, status=303)
    before, old_token = device.cookie(), token_of(device.client.get("/account/sign-in"))
    res = device.sign_in("alice")
    assert res.headers["Location"] == "/account/sessions"
    assert device.cookie() != before
    page = res.follow()
    assert page.html.select_one("h1").get_text() == "Your sessions"
    assert page.html.select_one("#signed-in-as strong").get_text() == "alice"
    assert flash(page) == ["Signed in as alice."]
    assert [(r.device, r.current, r.handle) for r in rows(page)] == [("Firefox 128 on Linux", True, None)]
    assert rows(page)[0].created == rows(page)[0].last_seen == "just now"
    assert token_of(page) != old_token
    # The token from before signing in is dead: a form still open elsewhere is refused.
    device.client.post("/account/sign-out", {"csrf_token": old_token}, status=403)
    assert not device.signed_out()
    # The session's own data survived signing in.
    assert device.client.get("/session").json["views"] >= 1


def test_sign_in_trims_the_name(app: Any) -> None:
    first, second = Device(app), Device(app, CHROME)
    first.sign_in("  alice\t ")
    second.sign_in("alice")
    assert len(rows(first.sessions())) == 2
    inner = Device(app)
    inner.sign_in(" bob \n  smith ")
    assert inner.sessions().html.select_one("#signed-in-as strong").get_text() == "bob smith"


@pytest.mark.parametrize("user, message", [
    ("", "Enter a name to sign in with."),
    (" \t\r\n ", "Enter a name to sign in with."),
    ("x" * (MAX_USER + 1), f"The name is too long: at most {MAX_USER} characters."),
    ("x" * 5_000, f"The name is too long: at most {MAX_USER} characters."),
    ("ali\u202ece", "The name contains invisible or control characters."),
    ("ali\x07ce", "The name contains invisible or control characters."),
    ("a\u200bb", "The name contains invisible or control characters."),
])
def test_invalid_names_are_shown_in_the_form(device: Device, user: str, message: str) -> None:
    res = device.sign_in(user, status=400)
    assert res.html.select_one("#user-error").get_text() == message
    assert res.html.select_one("input#user")["aria-invalid"] == "true"
    assert res.forms["sign-in-form"]["csrf_token"].value  # the form can be sent again as it is
    assert device.signed_out()


def test_a_missing_name_field_is_an_error_not_a_crash(device: Device) -> None:
    token = token_of(device.client.get("/account/sign-in"))
    res = device.client.post("/account/sign-in", {"csrf_token": token}, status=400)
    assert res.html.select_one("#user-error").get_text() == "Enter a name to sign in with."


def test_the_longest_name_signs_in(device: Device) -> None:
    name = "名" * MAX_USER
    device.sign_in(name)
    assert device.sessions().html.select_one("#signed-in-as strong").get_text() == name


def test_invalid_name_in_chinese(device: Device) -> None:
    res = device.sign_in("", status=400, headers=ZH)
    assert res.html.select_one("#user-error").get_text() == "请输入用于登录的名字。"
    res = device.sign_in("x" * (MAX_USER + 1), status=400, headers=ZH)
    assert res.html.select_one("#user-error").get_text() == f"名字太长：最多 {MAX_USER} 个字符。"


def test_a_name_is_text_never_markup(app: Any) -> None:
    device = Device(app)
    device.sign_in("<script>alert(1)</script>")
    page = device.sessions()
    assert "<script>alert(1)</script>" not in page.text
    assert page.html.select_one("#signed-in-as strong").get_text() == "<script>alert(1)</script>"
    assert "&lt;script&gt;" in device.client.get("/account/sign-in").text


def test_every_post_needs_the_csrf_token(app: Any) -> None:
    device, other = Device(app), Device(app, CHROME)
    device.client.post("/account/sign-in", {"user": "alice"}, status=403)
    refused = device.client.post("/account/sign-in", {"user": "alice", "csrf_token": "wrong"}, status=403)
    assert "<h1>This form has expired</h1>" in refused.text
    assert 'id="reload-form" href="/account/sign-in"' in refused.text
    assert device.signed_out()
    device.sign_in("alice")
    other.sign_in("alice")
    handle = rows(device.sessions())[1].handle
    for path, fields in (("/account/sessions/revoke", {"handle": handle}), ("/account/sign-out-everywhere", {}),
                         ("/account/sign-out", {})):
        device.client.post(path, fields, status=403)
        device.client.post(path, {**fields, "csrf_token": "wrong"}, status=403)
        # The other browser's token is no good here either.
        device.client.post(path, {**fields, "csrf_token": token_of(other.sessions())}, status=403)
    assert not device.signed_out() and not other.signed_out()
    assert len(rows(device.sessions())) == 2
    # The buttons only answer POST.
    for path in ("/account/sessions/revoke", "/account/sign-out-everywhere", "/account/sign-out"):
        device.client.get(path, status=404)


def test_csrf_refusal_in_chinese(device: Device) -> None:
    refused = device.client.post("/account/sign-in", {"user": "alice"}, headers=ZH, status=403)
    assert "<h1>此表单已过期</h1>" in refused.text


def test_not_signed_in_is_sent_to_sign_in(device: Device) -> None:
    res = device.client.get("/account/sessions", status=303)
    assert res.headers["Location"] == "/account/sign-in"
    assert "sessup" not in device.client.cookies
    token = token_of(device.client.get("/account/sign-in"))
    for path in ("/account/sessions/revoke", "/account/sign-out-everywhere", "/account/sign-out"):
        res = device.client.post(path, {"csrf_token": token, "handle": "x"}, status=303)
        assert res.headers["Location"] == "/account/sign-in"


def test_two_browsers_see_two_sessions_and_which_is_theirs(app: Any) -> None:
    laptop, phone, stranger = Device(app, FIREFOX), Device(app, IPHONE), Device(app, CHROME)
    laptop.sign_in("alice")
    phone.sign_in("alice")
    stranger.sign_in("bob")  # another user's session is never listed
    # Most recently seen first: each browser's own request makes it the newest.
    mine = rows(laptop.sessions())
    assert [(r.device, r.current) for r in mine] == [("Firefox 128 on Linux", True), ("Safari 17 on iPhone", False)]
    theirs = rows(phone.sessions())
    assert [(r.device, r.current) for r in theirs] == [("Safari 17 on iPhone", True), ("Firefox 128 on Linux", False)]
    assert mine[0].handle is None and mine[1].handle  # no revoke button on one's own row
    assert [(r.device, r.current) for r in rows(stranger.sessions())] == [("Chrome 131 on Windows", True)]


def test_raw_session_ids_never_appear_in_a_page(app: Any) -> None:
    laptop, phone = Device(app), Device(app, CHROME)
    laptop.sign_in("alice")
    phone.sign_in("alice")
    ids = [device.cookie().split(".")[0] for device in (laptop, phone)]
    assert all(len(sid) >= 40 for sid in ids)
    for device in (laptop, phone):
        for res in (device.sessions(), device.sessions(headers=ZH), device.client.get("/account/sign-in"),
                    device.client.get("/")):
            for sid in ids:
                assert sid not in res.text
                assert sid not in str(res.headers.get("Location", ""))
        for row in rows(device.sessions()):
            assert row.handle is None or row.handle not in ids


def test_revoke_one_session(app: Any) -> None:
    laptop, phone, tablet = Device(app), Device(app, IPHONE), Device(app, CHROME)
    for device in (laptop, phone, tablet):
        device.sign_in("alice")
    page = laptop.sessions()
    phone_row = next(r for r in rows(page) if r.device == "Safari 17 on iPhone")
    after = laptop.press("/account/sessions/revoke", page, handle=phone_row.handle)
    assert flash(after) == ["That session was signed out."]
    assert sorted(r.device for r in rows(after)) == ["Chrome 131 on Windows", "Firefox 128 on Linux"]
    assert phone.signed_out() and not tablet.signed_out() and not laptop.signed_out()
    # Again, with the same handle (a second tab, a double click): already gone.
    again = laptop.press("/account/sessions/revoke", page, handle=phone_row.handle)
    assert flash(again) == ["That session had already ended."]
    assert len(rows(again)) == 2


def test_revoking_ones_own_session_by_its_handle_signs_out(app: Any) -> None:
    laptop, phone = Device(app), Device(app, IPHONE)
    laptop.sign_in("alice")
    phone.sign_in("alice")
    # The page offers no button for its own row; the handle is in the other browser's list.
    own_handle = next(r.handle for r in rows(phone.sessions()) if not r.current)
    res = laptop.client.post("/account/sessions/revoke", {"csrf_token": token_of(laptop.sessions()),
                                                          "handle": own_handle}, status=303)
    assert res.headers["Location"] == "/account/sign-in"
    assert flash(res.follow()) == ["You are signed out."]
    assert laptop.signed_out() and not phone.signed_out()


def test_revoke_cannot_reach_another_users_session(app: Any) -> None:
    alice, alice2, bob, bob2 = Device(app), Device(app, CHROME), Device(app, IPHONE), Device(app, CHROME)
    alice.sign_in("alice")
    alice2.sign_in("alice")
    bob.sign_in("bob")
    bob2.sign_in("bob")
    bobs_handle = next(r.handle for r in rows(bob.sessions()) if not r.current)
    page = alice.sessions()
    for handle in (bobs_handle, "", "x" * 10_000, "../../etc", "\u202e"):
        after = alice.press("/account/sessions/revoke", page, handle=handle)
        assert flash(after) == ["That session had already ended."]
    assert not bob.signed_out() and not bob2.signed_out() and not alice2.signed_out()
    assert len(rows(bob.sessions())) == 2 and len(rows(alice.sessions())) == 2


def test_sign_out_everywhere_keeps_this_session(app: Any) -> None:
    laptop, phone, tablet, bob = Device(app), Device(app, IPHONE), Device(app, CHROME), Device(app, CHROME)
    for device in (laptop, phone, tablet):
        device.sign_in("alice")
    bob.sign_in("bob")
    before = laptop.cookie()
    after = laptop.press("/account/sign-out-everywhere", laptop.sessions())
    assert flash(after) == ["Signed out 2 other sessions."]
    assert [(r.device, r.current) for r in rows(after)] == [("Firefox 128 on Linux", True)]
    assert phone.signed_out() and tablet.signed_out()
    assert not laptop.signed_out() and laptop.cookie() == before
    assert not bob.signed_out()  # another user's sessions are left alone
    # Nothing left to sign out.
    assert flash(laptop.press("/account/sign-out-everywhere", laptop.sessions())) == ["Signed out 0 other sessions."]


def test_sign_out_everywhere_in_chinese(app: Any) -> None:
    laptop, phone = Device(app), Device(app, IPHONE)
    laptop.sign_in("alice")
    phone.sign_in("alice")
    page = laptop.sessions(headers=ZH)
    assert page.html.select_one("h1").get_text() == "您的会话"
    assert [(r.device, r.current) for r in rows(page)] == [("Linux 上的 Firefox 128", True),
                                                           ("iPhone 上的 Safari 17", False)]
    assert page.html.select_one(".this-one").get_text() == "当前会话"
    assert [r.created for r in rows(page)] == ["刚刚", "刚刚"]
    assert page.html.select_one("#sign-out-everywhere").get_text() == "退出其他所有会话"
    res = laptop.client.post("/account/sign-out-everywhere", {"csrf_token": token_of(page)}, headers=ZH,
                             status=303)
    after = res.follow(headers=ZH)
    assert flash(after) == ["已退出其他 1 个会话。"]
    assert phone.signed_out()


def test_sign_out(app: Any) -> None:
    laptop, phone = Device(app), Device(app, IPHONE)
    laptop.sign_in("alice")
    phone.sign_in("alice")
    old = laptop.cookie()
    res = laptop.client.post("/account/sign-out", {"csrf_token": token_of(laptop.sessions())}, status=303)
    assert res.headers["Location"] == "/account/sign-in"
    page = res.follow()
    assert flash(page) == ["You are signed out."]
    assert page.html.select_one("#signed-in-as") is None
    assert laptop.signed_out()
    # The old cookie is dead: sent again, it is not signed in.
    laptop.client.set_cookie("sessup", old)
    assert laptop.signed_out()
    # The other browser is still signed in, and now alone.
    assert [(r.device, r.current) for r in rows(phone.sessions())] == [("Safari 17 on iPhone", True)]


def test_sign_out_in_chinese(device: Device) -> None:
    device.sign_in("alice")
    page = device.sessions(headers=ZH)
    assert page.html.select_one("#sign-out").get_text() == "退出登录"
    res = device.client.post("/account/sign-out", {"csrf_token": token_of(page)}, headers=ZH, status=303)
    assert flash(res.follow(headers=ZH)) == ["您已退出登录。"]


def test_sign_in_page_when_signed_in_links_the_sessions(device: Device) -> None:
    device.sign_in("alice")
    page = device.client.get("/account/sign-in")
    assert page.html.select_one("#signed-in-as strong").get_text() == "alice"
    assert page.html.select_one("#signed-in-as a")["href"] == "/account/sessions"
    zh = device.client.get("/account/sign-in", headers=ZH)
    assert "您已登录为" in zh.html.select_one("#signed-in-as").get_text()


def test_signing_in_as_someone_else_moves_the_session(app: Any) -> None:
    laptop, phone = Device(app), Device(app, IPHONE)
    laptop.sign_in("alice")
    phone.sign_in("alice")
    laptop.sign_in("bob")
    assert laptop.sessions().html.select_one("#signed-in-as strong").get_text() == "bob"
    assert [(r.device, r.current) for r in rows(laptop.sessions())] == [("Firefox 128 on Linux", True)]
    assert [(r.device, r.current) for r in rows(phone.sessions())] == [("Safari 17 on iPhone", True)]


def test_navigation_and_home_page_link_the_account(device: Device) -> None:
    home = device.client.get("/")
    assert 'href="/account/sessions"' in home.text
    nav = [a.get_text() for a in device.client.get("/session/page").html.select("nav.site-nav a")]
    assert "Your sessions" in nav
    nav = [a.get_text() for a in device.client.get("/session/page", headers=ZH).html.select("nav.site-nav a")]
    assert "您的会话" in nav


def test_account_pages_are_off_with_the_demo_pages(make_app: Any) -> None:
    device = Device(make_app(**{"sessup.demo.pages": "false"}))
    for path in ("/account/sign-in", "/account/sessions"):
        device.client.get(path, status=404)
    for path in ("/account/sign-in", "/account/sessions/revoke", "/account/sign-out-everywhere",
                 "/account/sign-out"):
        device.client.post(path, status=404)


def make_prefixed(tmp_path: Any) -> Any:
    """A host that mounts the demo under ``/demo``."""
    config = Configurator(settings=settings_for_tests(tmp_path))
    config.include("pyramid_sessup")
    config.set_csrf_storage_policy(SessupCSRFStoragePolicy())
    config.include("pyramid_sessup.session_api")
    config.include("pyramid_sessup.demo", route_prefix="/demo")
    return config.make_wsgi_app()


def test_links_and_redirects_follow_the_route_prefix(tmp_path: Any) -> None:
    app = make_prefixed(tmp_path)
    device, other = Device(app), Device(app, CHROME)
    device.client.get("/account/sign-in", status=404)
    assert device.client.get("/demo/account/sessions", status=303).headers["Location"] == "/demo/account/sign-in"
    form = device.client.get("/demo/account/sign-in")
    assert form.forms["sign-in-form"].action == "/demo/account/sign-in"
    for client in (device, other):
        token = token_of(client.client.get("/demo/account/sign-in"))
        res = client.client.post("/demo/account/sign-in", {"csrf_token": token, "user": "alice"}, status=303)
        assert res.headers["Location"] == "/demo/account/sessions"
    page = device.client.get("/demo/account/sessions")
    actions = {form.action for form in page.forms.values()}
    assert actions == {"/demo/account/sessions/revoke", "/demo/account/sign-out-everywhere", "/demo/account/sign-out"}
    res = device.client.post("/demo/account/sign-out", {"csrf_token": token_of(page)}, status=303)
    assert res.headers["Location"] == "/demo/account/sign-in"


def test_links_and_redirects_follow_script_name(app: Any) -> None:
    device = Device(app, SCRIPT_NAME="/app")
    form = device.client.get("/account/sign-in")
    assert form.forms["sign-in-form"].action == "/app/account/sign-in"
    res = device.client.post("/account/sign-in", {"csrf_token": token_of(form), "user": "alice"}, status=303)
    assert res.headers["Location"] == "/app/account/sessions"
    page = device.client.get("/account/sessions")
    assert 'action="/app/account/sign-out"' in page.text


@pytest.mark.parametrize("user_agent, expected", [
    (FIREFOX, ("Firefox 128", "Linux")),
    (CHROME, ("Chrome 131", "Windows")),
    (IPHONE, ("Safari 17", "iPhone")),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0", ("Edge 131", "macOS")),
    ("Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
     "SamsungBrowser/25.0 Chrome/121.0.0.0 Mobile Safari/537.36", ("Samsung Internet 25", "Android")),
    ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/140.0.0.0 "
     "Safari/537.36", ("Chrome 140", "Linux")),
    ("curl/8.5.0", ("curl 8", None)),
    ("", (None, None)),
    (None, (None, None)),
    ("x" * 10_000 + " Firefox/1", (None, None)),
    ("Firefox/1\x00", (None, None)),
    ("something else", (None, None)),
])
def test_device_names(user_agent: str | None, expected: tuple[str | None, str | None]) -> None:
    device = describe(user_agent)
    assert (device.browser, device.system) == expected


def test_unknown_device_in_the_table(app: Any) -> None:
    odd, curl = Device(app, "something else"), Device(app, "curl/8.5.0")
    odd.sign_in("carol")
    curl.sign_in("carol")
    assert sorted(r.device for r in rows(odd.sessions())) == ["Unknown device", "curl 8"]
    assert sorted(r.device for r in rows(odd.sessions(headers=ZH))) == ["curl 8", "未知设备"]


@pytest.mark.parametrize("age, english, chinese", [
    (0, "just now", "刚刚"),
    (-30, "just now", "刚刚"),  # a clock slightly ahead
    (59, "just now", "刚刚"),
    (60, "1 minute ago", "1 分钟前"),
    (150, "2 minutes ago", "2 分钟前"),
    (3600, "1 hour ago", "1 小时前"),
    (7300, "2 hours ago", "2 小时前"),
    (86400, "1 day ago", "1 天前"),
    (3 * 86400 + 5, "3 days ago", "3 天前"),
])
def test_relative_times(app: Any, age: int, english: str, chinese: str) -> None:
    from pyramid.request import Request
    from pyramid.scripting import prepare

    for headers, expected in (({"Accept-Language": "en"}, english), (ZH, chinese)):
        request = Request.blank("/", headers=headers)
        env = prepare(request=request, registry=app.registry)
        try:
            assert relative_time(1_000_000 - age, 1_000_000, env["request"]) == expected
        finally:
            env["closer"]()
