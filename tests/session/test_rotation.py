"""Transparent ID rotation (``sessup.session.rotate_after``/``rotate_grace``),
checked against every store with deterministic interleavings; the concurrency
hammer against a real pserve is ``tests/stores/test_rotation_server.py``."""
from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import webtest

from pyramid_sessup.session import SessupSession
from pyramid_sessup.stores.base import Forward

from .hostapp import GATES, LOADED
from .test_dead_ids import client_with
from .test_semantics import cookie_value, set_cookies, sid_of, store_of

ROTATING = {"sessup.session.rotate_after": "60", "sessup.session.rotate_grace": "5"}


def started(make_host: Any, **overrides: str) -> tuple[webtest.TestApp, str]:
    """A rotating app with a stored session ({"a": "1"}); the session's cookie."""
    app = make_host(**{**ROTATING, **overrides})
    app.get("/write", {"a": "1"})
    return app, app.cookies["sessup"]


def make_due(app: webtest.TestApp, cookie: str) -> None:
    """Make the session's ID older than rotate_after, as if a minute had passed."""
    assert store_of(app).update(sid_of(cookie), {"_issued": time.time() - 3600}, []) is not None


def rotate(app: webtest.TestApp, cookie: str) -> str:
    """Make the session due and let one request rotate it; the new cookie."""
    make_due(app, cookie)
    res = client_with(app, cookie).get("/read")
    new = cookie_value(res)
    assert new is not None and sid_of(new) != sid_of(cookie), set_cookies(res)
    return new


def in_flight(app: webtest.TestApp, cookie: str, path: str, params: dict[str, str], gate: str,
              result: list[Any]) -> threading.Thread:
    """Start a request that loads the session and waits at ``gate``."""
    thread = threading.Thread(target=lambda: result.append(
        client_with(app, cookie).get(path, {**params, "gate": gate}, expect_errors=True)))
    thread.start()
    assert LOADED.setdefault(gate, threading.Event()).wait(10)
    return thread


def release(gate: str, thread: threading.Thread) -> None:
    GATES.setdefault(gate, threading.Event()).set()
    thread.join(20)
    assert not thread.is_alive()


def test_rotation_is_off_by_default(make_host: Any) -> None:
    app = make_host()
    app.get("/write", {"a": "1"})
    cookie = app.cookies["sessup"]
    make_due(app, cookie)
    res = app.get("/read")
    assert set_cookies(res) == [] and list(store_of(app).ids()) == [sid_of(cookie)]


def test_due_id_is_rotated_keeping_data_creation_time_and_csrf_token(make_host: Any) -> None:
    app, old = started(make_host)
    store = store_of(app)
    created = store.load(sid_of(old))["_created"]
    token = app.get("/csrf").json["csrf_token"]
    assert set_cookies(app.get("/read")) == []  # not due yet: nothing happens
    make_due(app, old)
    res = app.get("/read")
    assert res.json == {"data": {"a": "1"}, "new": False}
    new = cookie_value(res)
    assert new is not None and sid_of(new) != sid_of(old)
    assert [h for h in set_cookies(res) if h.startswith("sessup_csrf=")] == []  # not a login
    record = store.load(sid_of(new))
    assert record["_created"] == created and record["a"] == "1"
    assert app.get("/csrf").json["csrf_token"] == token
    app.post("/session/regenerate", headers={"X-CSRF-Token": token})  # the token still verifies


def test_rotation_record_and_forward(make_host: Any) -> None:
    app, old = started(make_host)
    store = store_of(app)
    new = rotate(app, old)
    assert list(store.ids()) == [sid_of(new)]  # one live record, under the new ID
    assert store.lookup(sid_of(old)) == Forward(sid_of(new))
    assert store.load(sid_of(new))["_issued"] == pytest.approx(time.time(), abs=30)
    res = client_with(app, new).get("/read")
    assert set_cookies(res) == [] and res.json["data"] == {"a": "1"}  # not due again


def test_rotation_calls_the_moved_hook(make_host: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    moves: list[tuple[str, str]] = []
    monkeypatch.setattr(SessupSession, "_moved", lambda self, old, new: moves.append((old, new)))
    app, old = started(make_host)
    new = rotate(app, old)
    assert moves == [(sid_of(old), sid_of(new))]


def test_old_cookie_during_the_grace_is_served_the_same_session(make_host: Any) -> None:
    app, old = started(make_host)
    new = rotate(app, old)
    res = client_with(app, old).get("/write", {"b": "2"})
    assert res.json["data"] == {"a": "1", "b": "2"}
    assert cookie_value(res) == new  # the client learns the new ID
    assert list(store_of(app).ids()) == [sid_of(new)]
    assert client_with(app, new).get("/read").json["data"] == {"a": "1", "b": "2"}


def test_old_cookie_after_the_grace_gets_a_new_empty_session(make_host: Any) -> None:
    app, old = started(make_host, **{"sessup.session.rotate_grace": "1"})
    new = rotate(app, old)
    time.sleep(1.3)
    store = store_of(app)
    assert client_with(app, old).get("/read").json == {"data": {}, "new": True}
    # A stolen old cookie revives nothing: its writes start a session of their own.
    res = client_with(app, old).get("/write", {"stolen": "1"})
    assert res.json["data"] == {"stolen": "1"}
    assert sid_of(cookie_value(res) or "") not in (sid_of(old), sid_of(new))
    assert store.lookup(sid_of(old)) is None and store.create(sid_of(old), {}) is False  # a tombstone
    assert client_with(app, new).get("/read").json == {"data": {"a": "1"}, "new": False}


@pytest.mark.parametrize("via", ["old", "new"])
@pytest.mark.parametrize("op", ["invalidate", "regenerate"])
def test_logout_or_login_during_the_grace_kills_both_ids(make_host: Any, op: str, via: str) -> None:
    app, old = started(make_host)
    new = rotate(app, old)
    res = client_with(app, old if via == "old" else new).get(f"/op/{op}")
    for cookie in (old, new):
        assert client_with(app, cookie).get("/read").json == {"data": {}, "new": True}
    store = store_of(app)
    if op == "invalidate":
        assert list(store.ids()) == []
    else:
        newest = cookie_value(res)
        assert newest is not None and list(store.ids()) == [sid_of(newest)]
        assert client_with(app, newest).get("/read").json == {"data": {"a": "1"}, "new": False}


#: A request that loaded the old ID before the rotation, and how it writes.
LATE = {
    "merge": ("/write", {"b": "2"}, {}),
    "resave": ("/write", {"b": "2"}, {"sessup.session.resave": "true"}),
    "save": ("/op/save", {}, {}),
}


@pytest.mark.parametrize("due", [True, False], ids=["loaded-due", "loaded-just-before-due"])
@pytest.mark.parametrize("late", list(LATE))
def test_request_that_loaded_the_old_id_writes_to_the_new_one(make_host: Any, late: str, due: bool) -> None:
    """The late request found the ID due too (it tries to rotate, loses, follows),
    or loaded it a moment before it was due (its write finds the ID dead and
    follows the forward)."""
    path, params, settings = LATE[late]
    app, old = started(make_host, **settings)
    if due:
        make_due(app, old)
    result: list[Any] = []
    thread = in_flight(app, old, path, params, "late", result)
    if not due:
        make_due(app, old)
    # Meanwhile another request rotates (and writes).
    res = client_with(app, old).get("/write", {"c": "3"})
    new = cookie_value(res)
    assert new is not None and sid_of(new) != sid_of(old)
    release("late", thread)
    [late_res] = result
    assert late_res.status_int == 200 and cookie_value(late_res) == new
    store = store_of(app)
    assert list(store.ids()) == [sid_of(new)]
    expected = {"a": "1", "c": "3", **params}
    if late in ("resave", "save"):  # a full write of what it loaded: the last writer wins, under the new ID
        expected = {"a": "1", **params}
    assert client_with(app, new).get("/read").json["data"] == expected
    assert store.load(sid_of(new))["_issued"] == pytest.approx(time.time(), abs=30)  # not due again


def test_login_from_a_request_that_loaded_the_old_id_moves_the_rotated_session(make_host: Any) -> None:
    app, old = started(make_host)
    make_due(app, old)
    result: list[Any] = []
    thread = in_flight(app, old, "/op/regenerate", {}, "late", result)
    new = cookie_value(client_with(app, old).get("/write", {"c": "3"}))
    release("late", thread)
    newest = cookie_value(result[0])
    assert newest is not None and newest not in (old, new)
    store = store_of(app)
    assert list(store.ids()) == [sid_of(newest)]
    for cookie in (old, new or ""):
        assert client_with(app, cookie).get("/read").json["new"] is True
    # regenerate() moves the record as its request loaded it (as it always does).
    assert client_with(app, newest).get("/read").json["data"] == {"a": "1"}


def test_logout_from_a_request_that_loaded_the_old_id_ends_the_rotated_session(make_host: Any) -> None:
    app, old = started(make_host)
    make_due(app, old)
    result: list[Any] = []
    thread = in_flight(app, old, "/op/invalidate", {}, "late", result)
    new = cookie_value(client_with(app, old).get("/write", {"c": "3"}))
    release("late", thread)
    assert new is not None and list(store_of(app).ids()) == []
    for cookie in (old, new):
        assert client_with(app, cookie).get("/read").json == {"data": {}, "new": True}


def test_two_requests_racing_to_rotate_make_one_new_id(make_host: Any) -> None:
    app, old = started(make_host)
    make_due(app, old)
    first: list[Any] = []
    second: list[Any] = []
    a = in_flight(app, old, "/write", {"x": "1"}, "a", first)
    b = in_flight(app, old, "/write", {"y": "2"}, "b", second)  # both loaded the due ID
    release("a", a)
    release("b", b)
    new = cookie_value(first[0])
    assert new is not None and sid_of(new) != sid_of(old)
    assert cookie_value(second[0]) == new  # the loser follows the winner's forward
    store = store_of(app)
    assert list(store.ids()) == [sid_of(new)]
    assert store.lookup(sid_of(old)) == Forward(sid_of(new))
    assert client_with(app, new).get("/read").json["data"] == {"a": "1", "x": "1", "y": "2"}


def test_lock_waiter_on_the_old_id_follows_to_the_new_one(make_host: Any) -> None:
    app, old = started(make_host, **{"sessup.session.lock": "true"})
    make_due(app, old)
    holder: list[Any] = []
    waiter: list[Any] = []
    a = in_flight(app, old, "/write", {"x": "1"}, "a", holder)  # holds the old ID's lock
    b = threading.Thread(target=lambda: waiter.append(client_with(app, old).get("/incr")))
    b.start()
    time.sleep(0.3)  # b is now waiting for the old ID's lock
    assert not waiter
    release("a", a)
    b.join(20)
    new = cookie_value(holder[0])
    assert new is not None and cookie_value(waiter[0]) == new
    assert client_with(app, new).get("/read").json["data"] == {"a": "1", "x": "1", "n": 1}
    assert list(store_of(app).ids()) == [sid_of(new)]


def test_rotation_the_store_postpones_keeps_the_session(make_host: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store may decline to rotate a live record for now (the encrypted store, after
    its record kept changing through every try): the request writes as usual under
    the old ID, and a later request rotates."""
    app, old = started(make_host)
    make_due(app, old)
    store = store_of(app)
    monkeypatch.setattr(store, "rotate", lambda *args, **kw: None)
    res = app.get("/write", {"b": "2"})
    assert res.status_int == 200 and cookie_value(res) == old  # no new ID, and not cleared
    monkeypatch.undo()
    assert store.load(sid_of(old))["b"] == "2"
    new = cookie_value(app.get("/read"))
    assert new is not None and sid_of(new) != sid_of(old)
    assert client_with(app, new).get("/read").json["data"] == {"a": "1", "b": "2"}


def test_failed_request_rotates_nothing(make_host: Any) -> None:
    app, old = started(make_host)
    make_due(app, old)
    res = app.get("/fail", expect_errors=True)
    assert res.status_int == 500 and set_cookies(res) == []
    assert list(store_of(app).ids()) == [sid_of(old)]
