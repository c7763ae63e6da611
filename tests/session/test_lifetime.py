"""Absolute session lifetime (``sessup.session.max_lifetime``), checked against
every store: past it a session is over however active it was."""
from __future__ import annotations

import time
from typing import Any

import pytest
import webtest

from .test_dead_ids import assert_cleared, client_with
from .test_semantics import cookie_value, sid_of, store_of

#: Three seconds, with an idle timeout as long (a shorter lifetime is refused).
SHORT = {"sessup.session.timeout": "3", "sessup.session.max_lifetime": "3"}


def backdate(app: webtest.TestApp, cookie: str, seconds: float) -> None:
    """Make the session look created ``seconds`` ago."""
    assert store_of(app).update(sid_of(cookie), {"_created": time.time() - seconds}, []) is not None


def assert_dead(app: webtest.TestApp, sid: str) -> None:
    """No live record under ``sid``, and a tombstone that no write or create revives."""
    store = store_of(app)
    assert store.load(sid) is None and sid not in list(store.ids())
    assert store.create(sid, {"revived": True}) is False
    assert store.update(sid, {"revived": True}, []) is None


def poll(app: webtest.TestApp, origin: float, until: float, every: float) -> list[tuple[float, float, int, str]]:
    """``GET /incr`` every ``every`` seconds until ``until`` seconds after ``origin``
    (a ``time.monotonic()``): for each answer, when its request began and ended
    (seconds since ``origin``), the count and the session ID."""
    seen = []
    while (began := time.monotonic() - origin) < until:
        n = app.get("/incr").json["n"]
        seen.append((began, time.monotonic() - origin, n, sid_of(app.cookies["sessup"])))
        time.sleep(max(0.0, began + every - (time.monotonic() - origin)))
    return seen


def test_max_lifetime_ends_a_session_active_every_half_second(make_host: Any) -> None:
    app = make_host(**SHORT)
    seen = poll(app, time.monotonic(), until=5.0, every=0.5)
    first_sid = seen[0][3]
    created_by = seen[0][1]  # the session was created within the first request
    ended = next(i for i, (*_, sid) in enumerate(seen) if sid != first_sid)
    # Every request before the end counted on in the one session, active all along...
    assert [n for _, _, n, _ in seen[:ended]] == list(range(1, ended + 1))
    assert seen[ended - 1][0] >= 3.0 - 0.5 - 0.5, seen  # ...into its last half second,
    # ...and the first request past three seconds found it over (not idle: one came every 0.5 s).
    assert seen[ended][1] >= 3.0, seen
    assert seen[ended][0] <= created_by + 3.0 + 0.5 + 0.5, seen
    assert seen[ended][2] == 1  # a new, empty session
    assert_dead(app, first_sid)


def test_lifetime_counts_from_creation_across_login_and_rotation(make_host: Any) -> None:
    app = make_host(**SHORT, **{"sessup.session.rotate_after": "2", "sessup.session.rotate_grace": "1"})
    origin = time.monotonic()
    app.get("/incr")
    created_by = time.monotonic() - origin
    first_sid = sid_of(app.cookies["sessup"])
    time.sleep(0.2)
    app.get("/op/regenerate")  # a login: a new ID, the same session (the ID due for rotation at ~2.2 s)
    seen = poll(app, origin, until=4.5, every=0.25)
    ended = next(i for i, (_, _, n, _) in enumerate(seen) if n == 1)
    ids = {first_sid} | {sid for *_, sid in seen[:ended]}
    assert len(ids) == 3, "the ID should have changed by login, then by rotation, before the end"
    assert [n for _, _, n, _ in seen[:ended]] == list(range(2, ended + 2))
    assert seen[ended][1] >= 3.0 and seen[ended][0] <= created_by + 3.0 + 0.25 + 0.5, seen
    for sid in ids:
        assert store_of(app).load(sid) is None


def test_read_only_request_past_the_lifetime_clears_the_cookie(make_host: Any) -> None:
    app = make_host(**SHORT)
    app.get("/write", {"a": "1"})
    cookie = app.cookies["sessup"]
    backdate(app, cookie, 3.5)
    res = client_with(app, cookie).get("/read")
    assert res.json == {"data": {}, "new": True}
    assert_cleared(res)
    assert_dead(app, sid_of(cookie))
    assert list(store_of(app).ids()) == []


def test_writing_request_past_the_lifetime_gets_a_new_session(make_host: Any) -> None:
    app = make_host(**SHORT)
    app.get("/write", {"a": "1"})
    cookie = app.cookies["sessup"]
    backdate(app, cookie, 3.5)
    res = client_with(app, cookie).get("/write", {"b": "2"})
    assert res.json["data"] == {"b": "2"}
    new = cookie_value(res)
    assert new is not None and sid_of(new) != sid_of(cookie)  # the new session's cookie, not a clearing
    assert_dead(app, sid_of(cookie))


@pytest.mark.parametrize("lock", ["false", "true"])
def test_session_just_short_of_the_lifetime_lives(make_host: Any, lock: str) -> None:
    app = make_host(**SHORT, **{"sessup.session.lock": lock})
    app.get("/write", {"a": "1"})
    cookie = app.cookies["sessup"]
    backdate(app, cookie, 2.0)
    assert client_with(app, cookie).get("/read").json == {"data": {"a": "1"}, "new": False}


def test_record_without_a_creation_time_counts_as_too_old(make_host: Any) -> None:
    app = make_host(**SHORT)
    app.get("/write", {"a": "1"})
    cookie = app.cookies["sessup"]
    store_of(app).update(sid_of(cookie), {}, ["_created"])
    assert client_with(app, cookie).get("/read").json == {"data": {}, "new": True}
    assert_dead(app, sid_of(cookie))


def test_no_lifetime_by_default(make_host: Any) -> None:
    app = make_host()
    app.get("/write", {"a": "1"})
    cookie = app.cookies["sessup"]
    backdate(app, cookie, 10 * 365 * 86400)
    assert client_with(app, cookie).get("/read").json == {"data": {"a": "1"}, "new": False}


def test_session_info_expiry_is_capped_by_the_lifetime(make_host: Any) -> None:
    app = make_host(**{"sessup.session.timeout": "1800", "sessup.session.max_lifetime": "3600"})
    app.get("/write", {"a": "1"})
    backdate(app, app.cookies["sessup"], 3000)
    info = app.get("/session/info").json
    assert info["expires_at"] == pytest.approx(info["created"] + 3600, abs=1)
    assert info["created"] == pytest.approx(time.time() - 3000, abs=30)
