"""A dead ID stays dead: a request still running on a session that is logged
out, regenerated or expired meanwhile writes nothing and clears its cookie,
whichever way it writes (every store, in process; the real-server races are
``tests/stores/test_resurrection.py``)."""
from __future__ import annotations

import threading
from typing import Any, Callable

import pytest
import webtest

from ..stores.backends import expire_now
from .hostapp import GATES, LOADED
from .test_semantics import cookie_value, set_cookies, sid_of, store_of

#: How the late request writes: (path, params, settings).
LATE = {
    "merge": ("/write", {"b": "2"}, {}),
    "resave": ("/read", {}, {"sessup.session.resave": "true"}),
    "save": ("/op/save", {}, {}),
    "regenerate": ("/op/regenerate", {}, {}),
}


def client_with(app: webtest.TestApp, cookie: str) -> webtest.TestApp:
    client = webtest.TestApp(app.app, extra_environ={"HTTP_HOST": "example.com"})
    client.set_cookie("sessup", cookie)
    return client


def run_late(app: webtest.TestApp, cookie: str, late: str, meanwhile: Callable[[], None]) -> webtest.TestResponse:
    """Start the late request, let it load the session, run ``meanwhile``, let it finish."""
    path, params, _ = LATE[late]
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(client_with(app, cookie).get(path, {**params,
                                                                                               "gate": "late"})))
    thread.start()
    assert LOADED.setdefault("late", threading.Event()).wait(10)
    meanwhile()
    GATES.setdefault("late", threading.Event()).set()
    thread.join(20)
    return result[0]


def assert_cleared(res: webtest.TestResponse) -> None:
    [header] = set_cookies(res)
    assert header.startswith("sessup=;") and "Max-Age=0" in header


@pytest.mark.parametrize("late", list(LATE))
@pytest.mark.parametrize("logout", ["invalidate", "regenerate"])
def test_request_running_across_a_logout_writes_nothing(make_host: Any, logout: str, late: str) -> None:
    app = make_host(**LATE[late][2])
    app.get("/write", {"a": "1"})
    old = app.cookies["sessup"]
    logouts: list[webtest.TestResponse] = []
    res = run_late(app, old, late, lambda: logouts.append(client_with(app, old).get(f"/op/{logout}")))
    assert_cleared(res)
    store = store_of(app)
    assert store.load(sid_of(old)) is None
    assert client_with(app, old).get("/read").json == {"data": {}, "new": True}
    if logout == "invalidate":
        assert store.count() == 0
    else:  # only the session the logout request moved to, untouched by the late request
        new = cookie_value(logouts[0])
        assert new is not None and store.count() == 1
        assert client_with(app, new).get("/read").json == {"data": {"a": "1"}, "new": False}


@pytest.mark.parametrize("late", list(LATE))
def test_request_running_across_expiry_writes_nothing(make_host: Any, late: str) -> None:
    app = make_host(**LATE[late][2])
    app.get("/write", {"a": "1"})
    old = app.cookies["sessup"]
    store = store_of(app)
    res = run_late(app, old, late, lambda: expire_now(store, sid_of(old)))
    assert_cleared(res)
    assert store.load(sid_of(old)) is None
    assert store.count() == 0
    assert client_with(app, old).get("/read").json == {"data": {}, "new": True}

