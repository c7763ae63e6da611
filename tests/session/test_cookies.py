"""Cookie flags, secret rotation, CSRF, and the demo endpoints, through the real app."""
from __future__ import annotations

from typing import Any

from pyramid_sessup.signing import Signer

from .conftest import SECRET


def test_cookie_flags_default(testapp: Any) -> None:
    [header] = testapp.get("/session").headers.getall("Set-Cookie")
    assert "HttpOnly" in header and "SameSite=Lax" in header and "Path=/" in header
    assert "secure" not in header.lower()  # plain HTTP with secure = auto


def test_secure_auto_on_https(testapp: Any) -> None:
    [header] = testapp.get("/session", extra_environ={"wsgi.url_scheme": "https"}).headers.getall("Set-Cookie")
    assert "; secure" in header.lower()


def test_secure_true_and_options(make_app: Any) -> None:
    import webtest

    app = webtest.TestApp(make_app(**{
        "sessup.session.cookie.secure": "true", "sessup.session.cookie.samesite": "strict",
        "sessup.session.cookie.path": "/app", "sessup.session.cookie.domain": "example.com",
        "sessup.session.cookie.httponly": "false", "sessup.session.name": "sid",
    }), extra_environ={"HTTP_HOST": "example.com"})
    [header] = app.get("/session").headers.getall("Set-Cookie")
    assert header.startswith("sid=")
    assert "secure" in header.lower() and "SameSite=Strict" in header
    assert "Path=/app" in header and "Domain=example.com" in header and "HttpOnly" not in header


def test_old_secret_accepted_and_reissued_with_first(make_app: Any) -> None:
    import webtest

    old_app = webtest.TestApp(make_app(), extra_environ={"HTTP_HOST": "example.com"})
    old_app.get("/session")
    old_cookie = old_app.cookies["sessup"]
    new_secret = "n" * 40
    rotated = webtest.TestApp(make_app(**{"sessup.session.secret": f"{new_secret} {SECRET}"}),
                              extra_environ={"HTTP_HOST": "example.com"})
    # Same in-memory store? No: a new app has its own memory store, so use the file store here.
    assert old_cookie
    sid = old_cookie.split(".")[0]
    store = rotated.app.registry.sessup_store
    store.create(sid, {"views": 5})
    res = rotated.get("/session", headers={"Cookie": f"sessup={old_cookie}"})
    assert res.json == {"views": 6}
    [header] = res.headers.getall("Set-Cookie")
    assert Signer([new_secret]).sign(sid) in header
    # A cookie signed with a secret no longer listed is refused.
    third = webtest.TestApp(make_app(**{"sessup.session.secret": new_secret}), extra_environ={"HTTP_HOST": "example.com"})
    third.app.registry.sessup_store.create(sid, {"views": 5})
    assert third.get("/session", headers={"Cookie": f"sessup={old_cookie}"}).json == {"views": 1}


def test_csrf_required_on_state_changing_requests(testapp: Any) -> None:
    testapp.get("/session")
    refused = testapp.post("/session/regenerate", status=403)
    assert refused.headers["X-Content-Type-Options"] == "nosniff"  # error texts are never sniffed as HTML
    token = testapp.get("/csrf").json["csrf_token"]
    testapp.post("/session/regenerate", headers={"X-CSRF-Token": token}, status=200)
    # regenerate() rotated the token: the pre-login one is dead.
    testapp.post("/session/destroy", {"csrf_token": token}, status=403)
    token = testapp.get("/csrf").json["csrf_token"]
    testapp.post("/session/destroy", {"csrf_token": token}, status=200)


def test_session_json_counts_views(testapp: Any) -> None:
    assert [testapp.get("/session").json["views"] for _ in range(3)] == [1, 2, 3]
    assert testapp.get("/session/info").json["views"] == 3


def test_anonymous_home_page_visits_store_nothing(testapp: Any) -> None:
    store = testapp.app.registry.sessup_store
    for _ in range(20):
        res = testapp.get("/", headers={"Cookie": ""})
        assert res.headers.getall("Set-Cookie") == []
    assert store.count() == 0
