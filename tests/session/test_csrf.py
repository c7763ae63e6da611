"""CSRF tokens without a stored session (pyramid_sessup.csrf): a token costs no
record and its check no store access; login and logout (``regenerate()``,
``invalidate()``) rotate it; secrets rotate without breaking open forms;
answers that depend on the session or carry a token are never cached."""
from __future__ import annotations

from typing import Any

import pytest
import webtest
from pyramid.interfaces import ICSRFStoragePolicy
from pyramid.request import Request
from zope.interface.verify import verifyObject

from pyramid_sessup.csrf import CSRFConfig, SessupCSRFStoragePolicy, check_csrf
from pyramid_sessup.settings import parse_settings

from .conftest import SECRET


def fresh(app: webtest.TestApp) -> webtest.TestApp:
    return webtest.TestApp(app.app, extra_environ={"HTTP_HOST": "example.com"})


def set_cookies(res: webtest.TestResponse) -> dict[str, str]:
    return {h.split("=", 1)[0]: h for h in res.headers.getall("Set-Cookie")}


def count_store_calls(app: webtest.TestApp) -> list[str]:
    """Record every call the application makes to its store from now on."""
    store = app.app.registry.sessup_store
    calls: list[str] = []
    for name in ("load", "create", "update", "replace", "delete", "touch", "acquire_lock"):
        original = getattr(store, name)

        def spy(*args: Any, _name: str = name, _original: Any = original, **kw: Any) -> Any:
            calls.append(_name)
            return _original(*args, **kw)

        setattr(store, name, spy)
    return calls


def test_token_costs_no_record_and_its_check_no_store_access(make_host: Any) -> None:
    app = make_host()
    calls = count_store_calls(app)
    for _ in range(50):
        res = fresh(app).get("/csrf")
        cookies = set_cookies(res)
        assert list(cookies) == ["sessup_csrf"]  # the nonce cookie only: no session cookie
        assert "HttpOnly" in cookies["sessup_csrf"] and "SameSite=Lax" in cookies["sessup_csrf"]
        assert "Path=/" in cookies["sessup_csrf"] and "Max-Age" not in cookies["sessup_csrf"]
    visitor = fresh(app)
    token = visitor.get("/csrf").json["csrf_token"]
    again = visitor.get("/csrf")
    assert again.json["csrf_token"] == token and set_cookies(again) == {}  # stable, cookie not re-sent
    # A refused request stores nothing and sets no cookie.
    refused = fresh(app).post("/session/regenerate", headers={"X-CSRF-Token": token}, status=403)
    assert set_cookies(refused) == {}
    assert calls == [] and app.app.registry.sessup_store.count() == 0


def test_check_reads_nothing_from_the_store(testapp: webtest.TestApp) -> None:
    token = testapp.get("/csrf").json["csrf_token"]
    calls = count_store_calls(testapp)
    res = testapp.post("/upFile", upload_files=[("inputFile", "a.txt", b"x")], headers={"X-CSRF-Token": token})
    assert res.status_int == 200 and set_cookies(res) == {}
    res = testapp.post("/upFile", {"csrf_token": token}, upload_files=[("inputFile", "a.txt", b"x")])
    assert res.status_int == 200
    assert calls == []


def test_regenerate_and_invalidate_rotate_the_token(make_host: Any) -> None:
    app = make_host()
    before_login = app.get("/csrf").json["csrf_token"]
    app.get("/write", {"user": "alice"})
    # Login: regenerate() gives a new session ID and a new token; the old token is dead.
    res = app.post("/session/regenerate", headers={"X-CSRF-Token": before_login})
    assert "sessup_csrf" in set_cookies(res)
    app.post("/session/destroy", headers={"X-CSRF-Token": before_login}, status=403)
    after_login = app.get("/csrf").json["csrf_token"]
    assert after_login != before_login
    # Logout: invalidate() rotates it again.
    app.post("/session/destroy", headers={"X-CSRF-Token": after_login})
    app.post("/session/regenerate", headers={"X-CSRF-Token": after_login}, status=403)
    after_logout = app.get("/csrf").json["csrf_token"]
    assert after_logout not in (before_login, after_login)
    app.post("/session/regenerate", headers={"X-CSRF-Token": after_logout})


def test_new_csrf_token_rotates_and_get_csrf_token_is_stable(make_host: Any) -> None:
    app = make_host()
    first = app.get("/csrf").json["csrf_token"]
    assert app.get("/csrf").json["csrf_token"] == first
    app.get("/op/new_csrf_token")  # session.new_csrf_token(): a new nonce
    app.post("/session/regenerate", headers={"X-CSRF-Token": first}, status=403)
    assert app.get("/csrf").json["csrf_token"] != first


def test_rotated_secrets_keep_open_forms_valid(make_app: Any) -> None:
    old = webtest.TestApp(make_app(), extra_environ={"HTTP_HOST": "example.com"})
    token = old.get("/csrf").json["csrf_token"]
    nonce = old.cookies["sessup_csrf"]
    new_secret = "n" * 40
    rotated = webtest.TestApp(make_app(**{"sessup.session.secret": f"{new_secret} {SECRET}"}),
                              extra_environ={"HTTP_HOST": "example.com"})
    rotated.set_cookie("sessup_csrf", nonce)
    # A token signed with the older secret still verifies; new tokens use the first secret.
    rotated.post("/upFile", upload_files=[("inputFile", "a.txt", b"x")], headers={"X-CSRF-Token": token})
    fresh_token = rotated.get("/csrf").json["csrf_token"]
    assert fresh_token != token
    dropped = webtest.TestApp(make_app(**{"sessup.session.secret": new_secret}),
                              extra_environ={"HTTP_HOST": "example.com"})
    dropped.set_cookie("sessup_csrf", nonce)
    dropped.post("/upFile", upload_files=[("inputFile", "a.txt", b"x")], headers={"X-CSRF-Token": token}, status=403)
    dropped.post("/upFile", upload_files=[("inputFile", "a.txt", b"x")], headers={"X-CSRF-Token": fresh_token})


def make_request(values: dict[str, Any], cookie: str = "") -> Request:
    request = Request.blank("/", headers={"Cookie": cookie} if cookie else {})

    class Registry:
        sessup_settings = values

    request.registry = Registry()  # type: ignore[assignment]
    return request


@pytest.fixture
def values(settings: dict[str, Any]) -> dict[str, Any]:
    return parse_settings(settings)


NONCE, OTHER = "N" * 43, "O" * 43


@pytest.mark.parametrize("supplied", [None, "", 42, b"bytes", " ", "t\u00f6k", "\udcff", "A" * 10_000, "x" * 43])
def test_check_refuses_anything_but_the_token(values: dict[str, Any], supplied: Any) -> None:
    request = make_request(values, f"sessup_csrf={NONCE}")
    assert check_csrf(request, supplied) is False
    token = CSRFConfig.from_values(values).token(NONCE)
    assert check_csrf(request, token) is True
    assert check_csrf(request, token + " ") is False and check_csrf(request, token[:-1]) is False


@pytest.mark.parametrize("cookie, ok", [
    (f"sessup_csrf={NONCE}", True),
    (f"sessup_csrf={NONCE}; sessup_csrf={NONCE}", True),
    (f"sessup_csrf={NONCE}; sessup_csrf={OTHER}", False),  # one planted beside the real one
    (f"sessup_csrf={OTHER}; sessup_csrf={NONCE}", False),
    (f"sessup_csrf={NONCE}x", False),
    (f"sessup_csrf={NONCE[:-1]}=", False),
    ("", False),
])
def test_nonce_cookie_must_be_one_well_formed_value(values: dict[str, Any], cookie: str, ok: bool) -> None:
    token = CSRFConfig.from_values(values).token(NONCE)
    assert check_csrf(make_request(values, cookie), token) is ok


def test_storage_policy_is_pyramids_interface(values: dict[str, Any]) -> None:
    policy = SessupCSRFStoragePolicy()
    assert verifyObject(ICSRFStoragePolicy, policy)
    request = make_request(values)
    token = policy.get_csrf_token(request)
    assert policy.get_csrf_token(request) == token and policy.check_csrf_token(request, token)
    rotated = policy.new_csrf_token(request)
    assert rotated != token and not policy.check_csrf_token(request, token)
    assert policy.check_csrf_token(request, rotated)


def test_nonce_cookie_lives_as_long_as_the_session_cookie(make_host: Any) -> None:
    app = make_host(**{"sessup.session.cookie.max_age": "600", "sessup.session.rolling": "true"})
    first = set_cookies(app.get("/csrf"))["sessup_csrf"]
    assert "Max-Age=600" in first
    res = app.get("/write", {"a": "1"})  # the session cookie goes out: the nonce cookie is refreshed with it
    cookies = set_cookies(res)
    assert "Max-Age=600" in cookies["sessup"] and "Max-Age=600" in cookies["sessup_csrf"]
    assert cookies["sessup_csrf"].split(";")[0] == first.split(";")[0]  # same nonce, longer life
    assert len(res.headers.getall("Set-Cookie")) == 2


# -- answers that depend on the session are never cached ----------------------------------------


@pytest.mark.parametrize("url", ["/csrf", "/session", "/session/info", "/session/page", "/upload", "/ajax", "/"])
def test_session_bearing_answers_are_no_store(testapp: webtest.TestApp, url: str) -> None:
    testapp.get("/session")
    res = testapp.get(url)
    assert res.headers["Cache-Control"] == "no-store"
    assert "Cookie" in res.headers["Vary"]


def test_session_posts_are_no_store(testapp: webtest.TestApp) -> None:
    token = testapp.get("/csrf").json["csrf_token"]
    assert testapp.post("/session/regenerate", headers={"X-CSRF-Token": token}).headers["Cache-Control"] == "no-store"
    token = testapp.get("/csrf").json["csrf_token"]
    assert testapp.post("/session/destroy", headers={"X-CSRF-Token": token}).headers["Cache-Control"] == "no-store"


def test_host_views_that_read_the_session_are_no_store(make_host: Any) -> None:
    app = make_host()
    assert app.get("/read").headers["Cache-Control"] == "no-store"
    assert "Cache-Control" not in app.get("/plain").headers  # never touched the session
