"""express-session's semantics, checked against every store."""
from __future__ import annotations

import json
import threading
import time
from http.cookies import SimpleCookie
from typing import Any

import pytest
import webtest

from pyramid_sessup.signing import Signer

from .conftest import SECRET
from .hostapp import GATES, LOADED


def set_cookies(res: webtest.TestResponse) -> list[str]:
    return res.headers.getall("Set-Cookie")


def cookie_value(res: webtest.TestResponse, name: str = "sessup") -> str | None:
    for header in set_cookies(res):
        jar = SimpleCookie()
        jar.load(header)
        if name in jar:
            return jar[name].value
    return None


def sid_of(cookie: str) -> str:
    return cookie.split(".", 1)[0]


def store_of(app: webtest.TestApp) -> Any:
    return app.app.registry.sessup_store


def fresh_client(app: webtest.TestApp) -> webtest.TestApp:
    return webtest.TestApp(app.app, extra_environ={"HTTP_HOST": "example.com"})


# -- save_uninitialized ------------------------------------------------------------------

def test_read_only_anonymous_requests_store_nothing_and_set_no_cookie(make_host: Any) -> None:
    app = make_host()
    for _ in range(100):
        res = fresh_client(app).get("/read")
        assert set_cookies(res) == []
        assert res.json["new"] is True
    assert store_of(app).count() == 0


def test_save_uninitialized_true_stores_new_empty_sessions(make_host: Any) -> None:
    app = make_host(**{"sessup.session.save_uninitialized": "true"})
    res = app.get("/read")
    cookie = cookie_value(res)
    assert cookie is not None
    assert list(store_of(app).ids()) == [sid_of(cookie)]


def test_first_write_creates_record_and_cookie(make_host: Any) -> None:
    app = make_host()
    res = app.get("/write", {"a": "1"})
    cookie = cookie_value(res)
    assert cookie is not None
    assert store_of(app).load(sid_of(cookie))["a"] == "1"
    assert app.get("/read").json["data"]["a"] == "1"


# -- resave = false: read-only requests touch, never rewrite ----------------------------------

def test_read_only_request_slides_expiry_without_rewriting(make_host: Any) -> None:
    app = make_host(**{"sessup.session.timeout": "2"})
    app.get("/write", {"a": "1"})
    for _ in range(3):  # 3 s in all: past the timeout, but each read slides it
        time.sleep(1.0)
        assert app.get("/read").json["data"] == {"a": "1"}


def test_slow_reader_does_not_undo_a_concurrent_write(make_host: Any) -> None:
    app = make_host()
    app.get("/write", {"a": "old"})
    results: dict[str, Any] = {}

    def slow_read() -> None:
        results["read"] = app.get("/read", {"gate": "slow"}).json

    reader = threading.Thread(target=slow_read)
    reader.start()
    assert LOADED.setdefault("slow", threading.Event()).wait(5)  # the reader has loaded "old"
    app.get("/write", {"a": "new"})  # a writer finishes meanwhile
    GATES.setdefault("slow", threading.Event()).set()
    reader.join(10)
    assert results["read"]["data"]["a"] == "old"
    assert app.get("/read").json["data"]["a"] == "new"


def test_concurrent_writes_to_different_keys_both_persist(make_host: Any) -> None:
    app = make_host()
    app.get("/write", {"start": "1"})

    def write(key: str) -> None:
        app.get("/write", {key: "v", "gate": key})

    threads = [threading.Thread(target=write, args=(k,)) for k in ("a", "b")]
    for t in threads:
        t.start()
    for key in ("a", "b"):  # both requests have loaded the same snapshot
        assert LOADED.setdefault(key, threading.Event()).wait(5)
    for key in ("a", "b"):
        GATES.setdefault(key, threading.Event()).set()
    for t in threads:
        t.join(10)
    data = app.get("/read").json["data"]
    assert data["a"] == "v" and data["b"] == "v" and data["start"] == "1"


def test_nested_mutation_is_saved(make_host: Any) -> None:
    app = make_host()
    app.get("/append", {"item": "x"})
    app.get("/append", {"item": "y"})
    assert app.get("/read").json["data"]["items"] == ["x", "y"]


def test_resave_true_rewrites_on_read(make_host: Any) -> None:
    app = make_host(**{"sessup.session.resave": "true"})
    app.get("/write", {"a": "1"})
    cookie = app.cookies["sessup"]
    store = store_of(app)
    store.replace(sid_of(cookie), {"a": "changed-behind-our-back"})
    # A read-only request that loaded "changed..." writes back what it loaded.
    app.get("/read")
    assert store.load(sid_of(cookie))["a"] == "changed-behind-our-back"


# -- rolling -------------------------------------------------------------------------------

def test_rolling_resends_cookie_with_max_age_on_every_response(make_host: Any) -> None:
    app = make_host(**{"sessup.session.rolling": "true", "sessup.session.cookie.max_age": "60"})
    app.get("/write", {"a": "1"})
    for _ in range(2):
        res = app.get("/read")
        [header] = set_cookies(res)
        assert "Max-Age=60" in header and "expires=" in header.lower()


def test_without_rolling_cookie_only_on_create_or_change(make_host: Any) -> None:
    app = make_host(**{"sessup.session.cookie.max_age": "60"})
    assert set_cookies(app.get("/write", {"a": "1"}))
    assert set_cookies(app.get("/read")) == []
    assert set_cookies(app.get("/write", {"a": "2"}))  # changed: fresh expiry
    assert set_cookies(app.get("/read")) == []


def test_browser_session_cookie_without_max_age(make_host: Any) -> None:
    app = make_host()
    [header] = set_cookies(app.get("/write", {"a": "1"}))
    assert "Max-Age" not in header and "expires" not in header.lower()


# -- IDs: unknown, tampered, malformed, oversized ------------------------------------------------

def test_unknown_validly_signed_id_is_never_adopted(make_host: Any) -> None:
    app = make_host()
    forged_sid = "A" * 43
    app.set_cookie("sessup", Signer([SECRET]).sign(forged_sid))
    res = app.get("/write", {"a": "1"})
    new_cookie = cookie_value(res)
    assert new_cookie is not None and sid_of(new_cookie) != forged_sid
    assert store_of(app).load(forged_sid) is None
    assert forged_sid not in list(store_of(app).ids())


BAD_COOKIES = [
    "A" * 43 + "." + "B" * 43,  # bad signature
    "not-a-session",
    "../../etc/passwd",
    "%00" + "A" * 86,
    "A" * 4096,
    "",
]


@pytest.mark.parametrize("bad", BAD_COOKIES)
def test_bad_cookie_counts_as_no_cookie(make_host: Any, bad: str) -> None:
    app = make_host()
    calls: list[str] = []
    store = store_of(app)
    original_load = store.load
    store.load = lambda sid, **kw: (calls.append(sid), original_load(sid, **kw))[1]  # record, then delegate
    res = app.get("/read", headers={"Cookie": f"sessup={bad}"})
    assert res.status_int == 200 and res.json["new"] is True
    assert calls == []  # the store never saw it


def test_cookie_with_nul_and_duplicates_never_500(make_host: Any) -> None:
    app = make_host()
    for header in ["sessup=\x00abc", "sessup=a; sessup=b", "null; sessup=" + "x" * 5000]:
        res = app.get("/read", headers={"Cookie": header})
        assert res.status_int == 200


# -- regenerate, invalidate, touch, save, reload ---------------------------------------------

def test_regenerate_keeps_data_and_kills_old_id(make_host: Any) -> None:
    app = make_host()
    app.get("/write", {"a": "1"})
    old = app.cookies["sessup"]
    res = app.get("/op/regenerate")
    new = cookie_value(res)
    assert new is not None and sid_of(new) != sid_of(old)
    assert res.json["data"]["a"] == "1"
    assert app.get("/read").json["data"]["a"] == "1"
    assert store_of(app).load(sid_of(old)) is None
    replay = fresh_client(app).get("/read", headers={"Cookie": f"sessup={old}"})
    assert replay.json == {"data": {}, "new": True}


def test_invalidate_deletes_record_and_old_cookie_is_empty(make_host: Any) -> None:
    app = make_host()
    app.get("/write", {"a": "1"})
    old = app.cookies["sessup"]
    res = app.get("/op/invalidate")
    assert res.json["new"] is True
    [header] = set_cookies(res)
    assert "Max-Age=0" in header
    assert store_of(app).load(sid_of(old)) is None
    replay = fresh_client(app).get("/read", headers={"Cookie": f"sessup={old}"})
    assert replay.json == {"data": {}, "new": True}


def test_touch_save_reload(make_host: Any) -> None:
    app = make_host()
    app.get("/write", {"a": "1"})
    sid = sid_of(app.cookies["sessup"])
    assert app.get("/op/touch").json["data"] == {"a": "1"}
    assert app.get("/op/save").json["data"] == {"a": "1"}
    # reload drops the unsaved "scratch" key the view set before reloading.
    assert app.get("/op/reload").json["data"] == {"a": "1"}
    assert "scratch" not in store_of(app).load(sid)


def test_unset_destroy_deletes_emptied_session(make_host: Any) -> None:
    app = make_host(**{"sessup.session.unset": "destroy"})
    app.get("/write", {"a": "1"})
    sid = sid_of(app.cookies["sessup"])
    res = app.get("/clear")
    assert "Max-Age=0" in set_cookies(res)[0]
    assert store_of(app).load(sid) is None


def test_unset_keep_keeps_emptied_session(make_host: Any) -> None:
    app = make_host()
    app.get("/write", {"a": "1"})
    sid = sid_of(app.cookies["sessup"])
    app.get("/clear")
    now = pytest.approx(time.time(), abs=60)
    assert store_of(app).load(sid) == {"_created": now, "_issued": now}  # the layer's own keys only


# -- expiry -----------------------------------------------------------------------------------

def test_session_gone_after_idle_timeout(make_host: Any) -> None:
    app = make_host(**{"sessup.session.timeout": "1"})
    app.get("/write", {"a": "1"})
    sid = sid_of(app.cookies["sessup"])
    time.sleep(2.2)
    res = app.get("/read")
    assert res.json == {"data": {}, "new": True}
    assert store_of(app).load(sid) is None


# -- JSON only ---------------------------------------------------------------------------------

def test_value_json_cannot_hold_fails_naming_the_key(make_host: Any) -> None:
    app = make_host()
    error = app.get("/bad").json["error"]
    assert "'when'" in error and "JSON" in error
    # NUL cannot live in PostgreSQL's jsonb: refused for every store, when set.
    error = app.get("/bad", {"nul": "1"}).json["error"]
    assert "'when'" in error and "NUL" in error
    assert app.get("/write", {"backslash": "\\u0000 is text"}).status_int == 200


def test_records_are_json(make_host: Any, store_name: str, tmp_path: Any) -> None:
    app = make_host()
    app.get("/write", {"a": "ü"})
    sid = sid_of(app.cookies["sessup"])
    if store_name == "file":
        raw = (tmp_path / "sessions" / sid[:2] / f"{sid}.json").read_bytes()
        assert json.loads(raw)["a"] == "ü"
    assert store_of(app).load(sid)["a"] == "ü"


# -- locking (sessup.session.lock) ---------------------------------------------------------------

@pytest.mark.parametrize("lock", ["true", "false"])
def test_concurrent_increments(make_host: Any, lock: str) -> None:
    app = make_host(**{"sessup.session.lock": lock})
    app.get("/incr")
    cookie = app.cookies["sessup"]

    def bump() -> None:
        fresh_client(app).get("/incr", headers={"Cookie": f"sessup={cookie}"})

    threads = [threading.Thread(target=bump) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    final = app.get("/read").json["data"]["n"]
    if lock == "true":
        assert final == 17
    else:
        assert 2 <= final <= 17  # without the lock increments may be lost, never corrupted


# -- headers -------------------------------------------------------------------------------------

def test_vary_cookie_when_session_read_and_not_otherwise(make_host: Any) -> None:
    app = make_host()
    assert "Cookie" in app.get("/read").headers.get("Vary", "")
    app.get("/write", {"a": "1"})
    plain = app.get("/plain")  # never touches request.session: no header, no cookie, no store work
    assert "Vary" not in plain.headers and set_cookies(plain) == []


def test_reserved_keys_are_neither_visible_nor_settable(make_host: Any) -> None:
    """The record's own keys (``_created``...) stay out of ``request.session``; a value the
    application tries to put there is refused, and the stored creation time is unchanged."""
    app = make_host()
    app.get("/write", {"a": "1"})
    sid = sid_of(app.cookies["sessup"])
    created = store_of(app).load(sid)["_created"]
    assert app.get("/read").json["data"] == {"a": "1"}
    res = app.get("/write", {"_created": "0"}, expect_errors=True)
    assert "session key '_created' is reserved" in res.text  # the host's own bug, named
    assert store_of(app).load(sid)["_created"] == created
