"""The shared store goes away: on_store_error = fail answers 503 with
Retry-After (one log line per incident), anonymous serves without a session;
nothing hangs, and service resumes when the store is back."""
from __future__ import annotations

import logging
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

import pytest
import webtest

from ..support import POSTGRES_URL, REDIS_URL, free_port
from . import app as app_module
from .backends import in_thread
from .proxy import Proxy

BACKENDS = [
    pytest.param("redis", marks=pytest.mark.redis, id="redis"),
    pytest.param("postgresql", marks=pytest.mark.postgres, id="postgresql"),
]
FAST = {"sessup.session.connect_timeout": "0.3", "sessup.session.socket_timeout": "0.5"}


def _url(backend: str, port: int | None = None) -> str:
    base = REDIS_URL if backend == "redis" else POSTGRES_URL
    if port is None:
        return base
    parts = urlsplit(base)
    netloc = parts.netloc.rsplit(":", 1)[0] + f":{port}"
    return parts._replace(netloc=netloc).geturl()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def namespace(backend: str, request: pytest.FixtureRequest) -> dict[str, str]:
    if backend == "redis":
        return {"sessup.session.store": "redis", "sessup.session.key_prefix": request.getfixturevalue("redis_namespace")}
    return {"sessup.session.store": "postgresql", "sessup.session.table": request.getfixturevalue("postgres_table")}


@pytest.fixture
def make_client(settings: dict[str, Any], namespace: dict[str, str]) -> Iterator[Callable[..., webtest.TestApp]]:
    apps: list[Any] = []

    def make(url: str, **overrides: str) -> webtest.TestApp:
        app = app_module.main({}, **{**settings, **namespace, **FAST, "sessup.session.url": url, **overrides})
        apps.append(app)
        return webtest.TestApp(app, extra_environ={"HTTP_HOST": "example.com"})

    yield make
    for app in apps:
        app.registry.sessup_store.close()


def session_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "pyramid_sessup.session" and r.levelno >= logging.ERROR]


def test_fail_answers_503_with_retry_after(backend: str, make_client: Callable[..., webtest.TestApp],
                                           caplog: pytest.LogCaptureFixture) -> None:
    up = make_client(_url(backend))
    up.get("/session")
    cookie = up.cookies["sessup"]
    down = make_client(_url(backend, free_port()), **{"sessup.session.on_store_error": "fail"})
    caplog.set_level(logging.INFO)
    # A new visitor (the write fails) and a returning one (the read fails).
    res = in_thread(lambda: down.get("/session", status=503))
    assert res.headers["Retry-After"].isdigit()
    assert "Set-Cookie" not in res.headers
    down.set_cookie("sessup", cookie)
    for _ in range(3):
        res = in_thread(lambda: down.get("/session", status=503))
        assert res.headers["Retry-After"].isdigit()
        assert "Set-Cookie" not in res.headers
    assert "127.0.0.1" not in res.text  # no addresses leak to clients
    errors = session_errors(caplog)
    assert len(errors) == 1, errors  # one line per incident, not per request
    assert "unavailable" in errors[0]


def test_anonymous_serves_without_a_session(backend: str, make_client: Callable[..., webtest.TestApp],
                                            caplog: pytest.LogCaptureFixture) -> None:
    up = make_client(_url(backend))
    up.get("/session")
    cookie = up.cookies["sessup"]
    down = make_client(_url(backend, free_port()), **{"sessup.session.on_store_error": "anonymous"})
    caplog.set_level(logging.INFO)
    res = in_thread(lambda: down.get("/session", status=200))
    assert res.json == {"views": 1}
    assert "Set-Cookie" not in res.headers
    down.set_cookie("sessup", cookie)
    for _ in range(3):
        assert in_thread(lambda: down.get("/session", status=200)).json == {"views": 1}
    errors = session_errors(caplog)
    assert len(errors) == 1 and "without a session" in errors[0]
    # The session itself is untouched and still there when the store answers again.
    up.set_cookie("sessup", cookie)
    assert up.get("/session").json == {"views": 2}


def _wait_for(fn: Callable[[], bool], attempts: int = 40) -> bool:
    import time

    for _ in range(attempts):
        if fn():
            return True
        time.sleep(0.25)
    return False


def test_outage_and_recovery_through_a_cut_connection(backend: str, make_client: Callable[..., webtest.TestApp],
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """Sessions survive an outage; each incident logs one error and one recovery line."""
    upstream = urlsplit(_url(backend)).port or (6379 if backend == "redis" else 5432)
    proxy = Proxy(upstream).start()
    try:
        client = make_client(_url(backend, proxy.port), **{"sessup.session.on_store_error": "fail"})
        caplog.set_level(logging.INFO)
        assert client.get("/session").json == {"views": 1}
        for incident in range(2):
            proxy.stop()
            for _ in range(2):
                res = in_thread(lambda: client.get("/session", expect_errors=True))
                assert res.status_int == 503 and res.headers["Retry-After"]
            proxy.start()
            assert _wait_for(lambda: client.get("/session", expect_errors=True).status_int == 200)
        assert client.get("/session/info").json["views"] >= 3
        errors = session_errors(caplog)
        recovered = [r for r in caplog.records if r.name == "pyramid_sessup.session" and "reachable again" in r.getMessage()]
        assert len(errors) == 2, errors
        assert len(recovered) == 2
    finally:
        proxy.stop()


def test_a_call_finishing_as_the_store_goes_down_is_no_recovery(caplog: pytest.LogCaptureFixture) -> None:
    """One outage, one incident: a store call already under way when the first
    failure is noticed (it finished as the server went down) is not "back"."""
    import time

    from pyramid_sessup.exceptions import StoreUnavailable
    from pyramid_sessup.session import _Incidents

    incidents = _Incidents()
    caplog.set_level(logging.INFO)
    under_way = time.monotonic()
    incidents.failed(StoreUnavailable("down"), "fail")
    incidents.succeeded(under_way)
    incidents.failed(StoreUnavailable("still down"), "fail")
    incidents.succeeded(time.monotonic())
    lines = [r.getMessage() for r in caplog.records if r.name == "pyramid_sessup.session"]
    assert len(lines) == 2 and "unavailable" in lines[0] and "reachable again" in lines[1], lines
